"""Absence rules in ``engine run``: events re-arm their groups, a tick fires the quiet ones.

The rules' semantics are rules.absence's; this module keeps them in the absence_groups
table (sql/010_absence.sql) with the engine's wall clock:

- ``note_seen``: inside a batch's transaction, each group a matching event belongs to is
  re-armed (quiet since the batch's clock, due ``for`` later).  So a group is seen
  exactly when its event is evaluated, never twice, never without the cursor.
- ``AbsenceTicker.tick``: called by the daemon between batches, while it leads, once
  the cursor has caught up (an absence judged while events wait unread would be false).
  In ONE transaction it disarms at most ``tick_rows`` due rows and queues their action
  rows; the daemon enqueues the returned ids after the commit, like a
  batch's.  A kill -9 before the commit leaves the rows due for the next leader; after
  it, they are disarmed and their rows queued (the sweep enqueues what was lost).  The
  action rows' event_id names the quiet period (rules.absence.absence_event_id), so
  even a tick run twice could not queue one period twice.

Bounded chunks keep evaluation flowing: a tick that found a full chunk asks for another
after the next batch, never holding the loop for all 10,000 groups at once.  This module
never talks to Redis.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.action_rows import QUOTA_EXCEEDED, PendingActionRows, QueuedActions, insert_queued
from engine.firing_quota import FiringQuota
from engine.json_text import to_json
from rules import Rule
from rules.absence import absence_context, absence_event_id
from sql import query

log = logging.getLogger(__name__)


@dataclass
class TickResult(QueuedActions):
    """What one tick did (and the rows it queued, to enqueue after its commit)."""

    fired: int = 0  # groups that fired
    dropped: int = 0  # rows of rules no longer loaded, whose watch ended
    more: bool = False  # the chunk was full: more rows may be due now


async def note_seen(
    conn: asyncpg.Connection, matches: Sequence[tuple[Mapping[str, Any], Rule, str]], now: float
) -> None:
    """Re-arm the groups of the absence rules among ``matches`` (in the batch's
    transaction), as seen at ``now``."""
    seen: dict[tuple[str, str], tuple[Rule, Mapping[str, Any]]] = {}
    for event, rule, _ in matches:
        if rule.absence is not None:
            seen[(rule.id, rule.group_key(event))] = (rule, event)
    if not seen:
        return
    ordered = sorted(seen)  # one lock order for every writer of these rows
    rules = [seen[k][0] for k in ordered]
    await conn.execute(
        query("absence_seen"),
        [k[0] for k in ordered],
        [k[1] for k in ordered],
        [to_json(rule.group_values(seen[k][1])) for k, rule in zip(ordered, rules, strict=True)],
        [rule.org_id for rule in rules],
        [rule.logic_hash for rule in rules],
        [rule.absence.for_s if rule.absence is not None else 0 for rule in rules],
        now,
    )


class AbsenceTicker:
    """The time-driven half of absence rules, for the leading ``engine run``."""

    def __init__(self, *, tick_rows: int, tick_interval_s: float) -> None:
        self.tick_rows = tick_rows
        self.tick_interval_s = tick_interval_s
        # id -> the rule object whose expected groups are watched: a new object (a reload
        # or an organization's change) is looked at again.
        self._watched: dict[str, Rule] = {}
        self._next_tick = 0.0

    def forget(self) -> None:
        """On taking the lead: another engine may have changed anything."""
        self._watched.clear()
        self._next_tick = 0.0

    def due(self, monotonic_now: float) -> bool:
        """Whether a tick is due (every ``tick_interval_s``, or at once after a full chunk)."""
        return monotonic_now >= self._next_tick

    async def tick(
        self,
        conn: asyncpg.Connection,
        absence_rules: Mapping[str, Rule],
        now: float,
        quota: FiringQuota | None = None,
    ) -> TickResult:
        """Fire the groups due at ``now`` (at most ``tick_rows``) in one transaction."""
        result = TickResult()
        async with conn.transaction():
            watched = await self._watch_new_rules(conn, absence_rules, now)
            rows = await conn.fetch(query("absence_take_due"), now, self.tick_rows)
            pending = PendingActionRows()
            fired: list[tuple[str, str]] = []
            dropped: list[tuple[str, str]] = []
            for row in rows:
                rule = absence_rules.get(row["trigger_id"])
                key = (row["trigger_id"], row["group_key"])
                if rule is None or rule.logic_hash != row["logic_hash"]:
                    dropped.append(key)
                    continue
                fired.append(key)
                self._queue(rule, row, now, pending, quota)
            if dropped:
                await conn.execute(
                    query("absence_drop"), [k[0] for k in dropped], [k[1] for k in dropped]
                )
            await insert_queued(conn, pending, result)
            await self._add_rule_stats(conn, fired, absence_rules)
        # Only once the transaction has committed does a watch count as started.
        for rule in watched:
            self._watched[rule.id] = rule
        for rule_id in [i for i in self._watched if i not in absence_rules]:
            del self._watched[rule_id]
        result.fired, result.dropped = len(fired), len(dropped)
        result.more = len(rows) >= self.tick_rows
        self._next_tick = 0.0 if result.more else time.monotonic() + self.tick_interval_s
        if fired:
            log.info("absence rules fired", extra={"groups": len(fired)})
        return result

    async def _watch_new_rules(
        self, conn: asyncpg.Connection, absence_rules: Mapping[str, Rule], now: float
    ) -> list[Rule]:
        """Start watching the expected groups of the rules loaded since the last tick (a
        group already watched keeps its time), and forget the groups of old logic; the
        rules it looked at."""
        new = [r for i, r in absence_rules.items() if self._watched.get(i) is not r]
        if not new:
            return new
        await conn.execute(
            query("absence_forget_old_logic"), [r.id for r in new], [r.logic_hash for r in new]
        )
        rows = [
            (rule, rule.group_key(group), to_json(rule.group_values(group)))
            for rule in new
            if rule.absence is not None
            for group in rule.absence.expected_groups()
        ]
        if rows:
            await conn.execute(
                query("absence_watch"),
                [rule.id for rule, _, _ in rows],
                [key for _, key, _ in rows],
                [values for _, _, values in rows],
                [rule.org_id for rule, _, _ in rows],
                [rule.logic_hash for rule, _, _ in rows],
                [rule.absence.for_s if rule.absence else 0 for rule, _, _ in rows],
                now,
            )
        return new

    @staticmethod
    def _queue(
        rule: Rule,
        row: asyncpg.Record,
        now: float,
        pending: PendingActionRows,
        quota: FiringQuota | None,
    ) -> None:
        event_id = absence_event_id(row["group_key"], row["quiet_since"])
        group = json.loads(row["group_values"])
        context = absence_context(rule, group, event_id, row["last_seen_at"], now)
        status = "queued"
        if rule.org_id is not None and quota is not None and not quota.allow(rule.org_id, now):
            status = QUOTA_EXCEEDED
        context_json = to_json(context)
        for action in rule.actions:
            pending.add(rule, action, event_id, context_json, status)

    @staticmethod
    async def _add_rule_stats(
        conn: asyncpg.Connection, fired: list[tuple[str, str]], rules: Mapping[str, Rule]
    ) -> None:
        """Count the firings in each rule's hourly counters (rule_stats), as a batch does."""
        if not fired:
            return
        counts: dict[str, int] = {}
        for rule_id, _ in fired:
            counts[rule_id] = counts.get(rule_id, 0) + 1
        ids = sorted(counts)
        zeros = [0] * len(ids)
        await conn.execute(
            query("add_rule_stats"),
            ids,
            [rules[i].org_id for i in ids],
            zeros,
            [counts[i] for i in ids],
            zeros,
            zeros,
        )

"""Digests: the firings of rules with `group`, kept until their group is due, then sent
as one action row per action of the rule.

Two halves, each one transaction:

- in the batch's transaction (``DigestBatch``), a firing is stored in ``digest_firings``
  instead of becoming an action row, and its group in ``digest_groups`` gets a due time
  (`wait` after its first pending firing, and not sooner than `interval` after the
  group's previous digest);
- between batches, while leading (``flush_due_digests``), each due group's firings are
  deleted and the digest's action rows written in ONE transaction: a firing is either
  still stored or in exactly one digest, whenever a process dies.

This module never talks to Redis: the daemon enqueues the returned ids after the commit.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.action_rows import PendingActionRows, QueuedActions, insert_queued
from engine.json_text import to_json
from rules import Rule, RuleIndex, Step, build_context
from rules.grouping import DEFAULT_MAX_FIRINGS, digest_context
from rules.templates import rule_context
from sql import query

log = logging.getLogger(__name__)

#: Groups sent per flush at most; the rest are sent by the next flush, moments later.
FLUSH_GROUPS = 200
#: A due group whose rule is not loaded (removed, or its file broken) is looked at again
#: this much later: its firings are kept for the rule's return.
ORPHAN_RETRY_S = 60.0


@dataclass
class TickResult(QueuedActions):
    """What a time-driven flush queued: the daemon enqueues ``action_ids`` after commit."""

    sent: int = 0  # digests (or resolved notices) queued
    firings: int = 0  # firings the digests held


def digest_event_id(group_key: str, first_firing_id: int) -> str:
    """The action rows' event_id of a digest: unique, as firing ids are never reused."""
    return f"digest:{group_key}:{first_firing_id}"


class DigestBatch:
    """The grouped firings of one batch, written in its transaction by ``save``."""

    def __init__(self) -> None:
        self.firings: list[tuple[str, str, int | None, str | None, str]] = []
        # (rule id, group key) -> (org, group values, wait until, interval_s)
        self.opened: dict[tuple[str, str], tuple[int | None, str, float, float]] = {}

    def add(
        self, rule: Rule, event: Mapping[str, Any], step: Step, fired_at: str, now: float
    ) -> None:
        """Keep one firing of ``rule`` (which has `group`) for its group's digest."""
        spec = rule.grouping
        assert spec is not None
        key = spec.key(event)
        context = build_context(rule, event, {}, step.template_state, fired_at)
        stored = {"event": context["event"], "state": context["state"], "fired_at": fired_at}
        event_id = event.get("id")
        self.firings.append(
            (
                rule.id,
                key,
                rule.org_id,
                None if event_id is None else str(event_id),
                to_json(stored),
            )
        )
        if (rule.id, key) not in self.opened:
            values = to_json(spec.values(event))
            self.opened[(rule.id, key)] = (rule.org_id, values, now + spec.wait_s, spec.interval_s)

    def __len__(self) -> int:
        return len(self.firings)

    async def save(self, conn: asyncpg.Connection) -> None:
        """Store the firings and give their groups a due time (in the batch's transaction)."""
        if not self.firings:
            return
        await conn.execute(query("digest_add_firings"), *map(list, zip(*self.firings, strict=True)))
        keys = list(self.opened)
        await conn.execute(
            query("digest_open_groups"),
            [k[0] for k in keys],
            [k[1] for k in keys],
            *map(list, zip(*(self.opened[k] for k in keys), strict=True)),
        )


async def postpone_orphan(
    conn: asyncpg.Connection, query_name: str, row: asyncpg.Record, now: float, what: str
) -> None:
    """A due row (digest group, open alert) whose rule is not loaded, or lost its key:
    tried again ORPHAN_RETRY_S later, never dropped (the rule may be on its way back)."""
    await conn.execute(query(query_name), row["trigger_id"], row["group_key"], now + ORPHAN_RETRY_S)
    log.warning(
        f"{what} waits for its rule",
        extra={"trigger_id": row["trigger_id"], "group_key": row["group_key"]},
    )


async def flush_due_digests(
    conn: asyncpg.Connection, index: RuleIndex, now: float, *, limit: int = FLUSH_GROUPS
) -> TickResult:
    """Send every group due at ``now`` (``limit`` at most) as one digest, in ONE
    transaction with the removal of the firings each holds."""
    result = TickResult()
    async with conn.transaction():
        due = await conn.fetch(query("digest_due_groups"), now, limit)
        if not due:
            return result
        pending = PendingActionRows()
        sent_keys: tuple[list[str], list[str]] = ([], [])
        intervals: dict[str, float] = {}
        for group in due:
            rule = index.get(group["trigger_id"])
            if rule is None:
                await postpone_orphan(conn, "digest_postpone", group, now, "digest")
                continue
            spec = rule.grouping
            listed = DEFAULT_MAX_FIRINGS if spec is None else spec.max_firings
            taken = await conn.fetchrow(
                query("digest_take_firings"), rule.id, group["group_key"], listed
            )
            sent_keys[0].append(rule.id)
            sent_keys[1].append(group["group_key"])
            if spec is not None:
                intervals[rule.id] = spec.interval_s
            if not taken["count"]:
                continue  # nothing pending after all: the group only goes idle
            context = digest_context(
                rule_context(rule),
                json.loads(group["group_values"]),
                json.loads(taken["firings"]),
                taken["count"],
                _iso(now),
            )
            event_id = digest_event_id(group["group_key"], taken["first_id"])
            context_json = to_json(context)
            for action in rule.actions:
                pending.add(rule, action, event_id, context_json)
            result.sent += 1
            result.firings += taken["count"]
        if sent_keys[0]:
            await conn.execute(query("digest_sent"), *sent_keys, now)
        if intervals:
            await conn.execute(
                query("digest_forget_idle"), list(intervals), list(intervals.values()), now
            )
        if len(pending):
            await insert_queued(conn, pending, result)
    return result


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")

"""Resolved notices: the open alerts of rules with `resolve`, and their resolve actions.

A group of such a rule that fires has an open alert (``open_alerts``: when it first and
last fired, how often).  Its next event that does not meet `when` (neither fired nor
throttled) resolves it: in the batch's transaction (``AlertBatch``) the alert's row goes
and the resolve actions are queued, so they are queued once.  With `after`, an alert
whose group has not fired for that long is resolved between batches, while leading
(``resolve_quiet_alerts``), again deleting the row and queuing the actions in ONE
transaction.  This module never talks to Redis.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.action_rows import PendingActionRows, insert_queued
from engine.digests import TickResult, postpone_orphan
from engine.json_text import to_json
from rules import Rule, RuleIndex, Step, build_context
from rules.grouping import resolve_context
from rules.templates import rule_context
from sql import query

log = logging.getLogger(__name__)

#: Alerts resolved by `after` per pass at most; the rest go at the next pass.
RESOLVE_ALERTS = 200

AlertKey = tuple[str, str]  # (rule id, group key)


@dataclass
class OpenAlert:
    org_id: int | None
    group_values: dict[str, Any]
    fired_at: float
    last_fired_at: float
    firings: int
    last_event: dict[str, Any]
    resolve_at: float | None


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")


def resolve_after_event_id(last_event: Mapping[str, Any]) -> str:
    """The resolve rows' event_id when `after` resolved the alert: its last firing's event
    fires a rule once, so the id names this alert alone."""
    return f"resolve-after:{last_event.get('id')}"


class AlertBatch:
    """The open alerts of one batch's groups of rules with `resolve`, stepped in memory."""

    def __init__(self, alerts: dict[AlertKey, OpenAlert]) -> None:
        self.alerts = alerts
        self.changed: set[AlertKey] = set()
        self.resolved = 0

    @classmethod
    async def load(cls, conn: asyncpg.Connection, keys: Iterable[AlertKey]) -> AlertBatch:
        wanted = sorted(set(keys))
        if not wanted:
            return cls({})
        rows = await conn.fetch(
            query("open_alerts_load"), [k[0] for k in wanted], [k[1] for k in wanted]
        )
        return cls({(r["trigger_id"], r["group_key"]): _alert(r) for r in rows})

    def note(
        self,
        rule: Rule,
        key: str,
        event: Mapping[str, Any],
        step: Step,
        now: float,
        pending: PendingActionRows,
    ) -> None:
        """Open or extend the group's alert when ``step`` fired; resolve it (queue the
        resolve actions into ``pending``) when the event did not meet `when`.  Nothing
        for a rule without `resolve`."""
        resolve = rule.resolve
        if resolve is None:
            return
        k = (rule.id, key)
        alert = self.alerts.get(k)
        if step.fired:
            row = build_context(rule, event, {}, {}, "")["event"]
            if alert is None:
                alert = OpenAlert(rule.org_id, rule.group_values(event), now, now, 0, row, None)
                self.alerts[k] = alert
            alert.firings += 1
            alert.last_fired_at = now
            alert.last_event = row
            alert.resolve_at = None if resolve.after_s is None else now + resolve.after_s
            self.changed.add(k)
        elif not step.suppressed and alert is not None:
            del self.alerts[k]
            self.changed.add(k)
            self.resolved += 1
            row = build_context(rule, event, {}, {}, "")["event"]
            context = to_json(_context(rule, alert, row, now))
            for action in resolve.actions:
                pending.add(rule, action, event.get("id"), context)

    async def save(self, conn: asyncpg.Connection) -> None:
        """Write the changed alerts, drop the resolved ones (the batch's transaction)."""
        if not self.changed:
            return
        kept = [k for k in sorted(self.changed) if k in self.alerts]
        gone = [k for k in sorted(self.changed) if k not in self.alerts]
        if gone:
            await conn.execute(
                query("open_alerts_delete"), [k[0] for k in gone], [k[1] for k in gone]
            )
        if kept:
            alerts = [self.alerts[k] for k in kept]
            await conn.execute(
                query("open_alerts_save"),
                [k[0] for k in kept],
                [k[1] for k in kept],
                [a.org_id for a in alerts],
                [to_json(a.group_values) for a in alerts],
                [a.fired_at for a in alerts],
                [a.last_fired_at for a in alerts],
                [a.firings for a in alerts],
                [to_json(a.last_event) for a in alerts],
                [a.resolve_at for a in alerts],
            )


async def resolve_quiet_alerts(
    conn: asyncpg.Connection, index: RuleIndex, now: float, *, limit: int = RESOLVE_ALERTS
) -> TickResult:
    """Resolve the alerts whose `after` has passed at ``now`` without a firing: each row
    deleted and its resolve actions queued in ONE transaction."""
    result = TickResult()
    async with conn.transaction():
        due = await conn.fetch(query("open_alerts_due"), now, limit)
        if not due:
            return result
        pending = PendingActionRows()
        gone: tuple[list[str], list[str]] = ([], [])
        for row in due:
            rule = index.get(row["trigger_id"])
            if rule is None or rule.resolve is None:
                await postpone_orphan(conn, "open_alerts_postpone", row, now, "resolve")
                continue
            alert = _alert(row)
            gone[0].append(rule.id)
            gone[1].append(row["group_key"])
            context = to_json(_context(rule, alert, alert.last_event, now))
            event_id = resolve_after_event_id(alert.last_event)
            for action in rule.resolve.actions:
                pending.add(rule, action, event_id, context)
            result.sent += 1
        if gone[0]:
            await conn.execute(query("open_alerts_delete"), *gone)
        if len(pending):
            await insert_queued(conn, pending, result)
    return result


def _context(rule: Rule, alert: OpenAlert, event: Mapping[str, Any], now: float) -> Any:
    return resolve_context(
        rule_context(rule),
        alert.group_values,
        event,
        {
            "fired_at": iso(alert.fired_at),
            "last_fired_at": iso(alert.last_fired_at),
            "firings": alert.firings,
        },
        iso(now),
    )


def _alert(row: asyncpg.Record) -> OpenAlert:
    return OpenAlert(
        org_id=row["org_id"],
        group_values=json.loads(row["group_values"]),
        fired_at=row["fired_at"],
        last_fired_at=row["last_fired_at"],
        firings=row["firings"],
        last_event=json.loads(row["last_event"]),
        resolve_at=row["resolve_at"],
    )

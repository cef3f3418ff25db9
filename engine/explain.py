"""``engine rules explain EVENT_ID``: why each rule did (not) fire on one stored event.

Facts first, simulation second.  The facts: whether the cursor has passed the event (the
engine evaluated it) and the action rows it produced, by rule (its own, and the digests
listing its firing).  The simulation: the rule's steps run on the event with the group's
CURRENT stored state (rules.explain), each verdict with the values it saw.  For an event
already evaluated that state already holds it: the simulation says what the event would
do now, the facts say what it did.

Read-only by construction: it reads events, trigger_state, action_results and the
digest tables, never writes, never enqueues, never sends.  The same code serves the
operator's CLI (every rule) and the tenants' API (one organization's rules, read as that
organization under row-level security).

The steps of one rule, in the engine's order, are a list of functions (``PRE_CHECKS``,
the pure steps, ``POST_CHECKS``); each returns its verdicts.  The checks of runtime
switches (a disable, a silence) are in engine.explain_controls.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from engine.backtest import StoredClock
from engine.event_rows import events_from_rows
from engine.explain_controls import runtime_disable_check, silence_check
from engine.tenant_rules import StoredRule, compile_stored
from rules import Rule
from rules.errors import EngineError
from rules.explain import (
    BLOCK,
    INFO,
    Simulation,
    Verdict,
    explain_grouping,
    explain_on,
    simulate,
)
from rules.fields import suggest
from sql import query

#: The rule's `where` as evaluated (``${VAR}`` expanded for file rules).
WhereOf = Callable[[Rule], Any]
#: A rule's id as the reader names it (the operator: the engine's; a tenant: its own).
IdOf = Callable[[Rule], str]


class ExplainError(EngineError):
    """An event or rule that cannot be explained: unknown id, or no such rule."""


@dataclass(frozen=True)
class RuleCase:
    """What every check of one rule sees: the rule, the event, its group, the simulation."""

    rule: Rule
    event: Mapping[str, Any]
    group_key: str
    simulation: Simulation
    # Shared by the checks of every rule of one explanation: what they read once for all
    # (the active silences, say), so many rules do not mean as many reads.
    memo: dict[str, Any] = field(default_factory=dict)


#: A check that reads the database for one rule and returns its verdicts.
Check = Callable[[asyncpg.Connection, RuleCase], Awaitable[list[Verdict]]]


@dataclass
class RuleExplanation:
    """One rule's answer: the facts (action rows) and the verdicts of its steps."""

    rule: Rule
    shown_id: str
    verdicts: list[Verdict]
    would_fire: bool
    actions: list[dict[str, Any]] = field(default_factory=list)
    state_updated_at: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.shown_id,
            "source": None if self.rule.org_id is not None else self.rule.source_file,
            "fired": bool(self.actions),
            "actions": self.actions,
            "would_fire_now": self.would_fire,
            "state_updated_at": self.state_updated_at,
            "verdicts": [v.as_json() for v in self.verdicts],
        }


@dataclass
class EventExplanation:
    """The event, whether it was evaluated, and one explanation per rule."""

    event: dict[str, Any]
    evaluated: bool | None  # None: no engine has run with this cursor yet
    cursor: str
    rules: list[RuleExplanation]

    def as_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "evaluated": self.evaluated,
            "cursor": self.cursor,
            "rules": [r.as_json() for r in self.rules],
        }


async def disabled_check(conn: asyncpg.Connection, case: RuleCase) -> list[Verdict]:
    """The file's (or API document's) `enabled: false`: the engine never evaluates it."""
    if case.rule.enabled:
        return []
    return [Verdict("disabled", BLOCK, "disabled by the rule's `enabled: false`", {})]


async def digest_check(conn: asyncpg.Connection, case: RuleCase) -> list[Verdict]:
    """A `group` rule: its firing is held for its group's digest (which group, whether
    this event's firing is still pending, when the group is due)."""
    spec = case.rule.grouping
    if spec is None or not case.simulation.passed:
        return []
    key = spec.key(case.event)
    row = await conn.fetchrow(
        query("explain_digest_group"), case.rule.id, key, str(case.event.get("id"))
    )
    values: dict[str, Any] = {
        "group": spec.values(case.event),
        "wait_s": spec.wait_s,
        "interval_s": spec.interval_s,
        "pending_firings": row["pending"],
        "this_event_held": bool(row["held"]),
        "due_at": _iso(row["due_at"]),
        "last_sent_at": _iso(row["last_sent_at"]),
        "digests_sent": row["digests"],
    }
    group = ", ".join(f"{k}={json.dumps(v)}" for k, v in values["group"].items()) or "(one)"
    if not row["held"]:
        grouped = explain_grouping(case.rule, case.event)
        return [] if grouped is None else [Verdict("digest", INFO, grouped.summary, values)]
    text = f"held in group {group}: {row['pending']} firing(s) pending, due {values['due_at']}"
    return [Verdict("digest", INFO, text, values)]


#: Checks before the pure steps, and after them (silences come before the digest: a
#: silenced firing is recorded, not collected).
PRE_CHECKS: list[Check] = [disabled_check, runtime_disable_check]
# A silenced firing is recorded as such, not collected into a digest: silence first.
POST_CHECKS: list[Check] = [silence_check, digest_check]


async def load_event(conn: asyncpg.Connection, event_id: str) -> tuple[dict[str, Any], str, int]:
    """The stored event as rules see it, and its cursor position; ExplainError if none."""
    row = await conn.fetchrow(query("explain_event"), event_id)
    if row is None:
        raise ExplainError(
            f"no event with id {event_id!r} in the events table (ids look like"
            " <chain_id>-<block_number>-<log_index>; `engine status` and GET /v1/events"
            " show recent ones, and retention may have removed old ones)"
        )
    return events_from_rows([row])[0], row["_txid"], row["_seq"]


def choose_rules(
    rules: Sequence[Rule], event: Mapping[str, Any], only: str | None, id_of: IdOf
) -> list[Rule]:
    """The rules to explain: ``only`` (by ``id_of``), else those whose `on` matches."""
    if only is None:
        return [r for r in rules if not explain_on(r, event).blocks]
    chosen = [r for r in rules if id_of(r) == only]
    if not chosen:
        known = [id_of(r) for r in rules]
        raise ExplainError(
            f"no rule {only!r}{suggest(only, known)}: name a rule the engine has loaded"
            f" ({len(known)} known)"
        )
    return chosen


def engine_id(rule: Rule) -> str:
    """The id the engine keys state and action rows by (an organization's: ``org/id``)."""
    return rule.id


def shown_id(rule: Rule) -> str:
    """A rule's id as its author wrote it (an organization's rule without its org prefix)."""
    return rule.id.partition("/")[2] if rule.org_id is not None else rule.id


async def explain_event(
    conn: asyncpg.Connection,
    event_id: str,
    rules: Sequence[Rule],
    *,
    only: str | None = None,
    cursor: str = "main",
    skew_s: int = 0,
    where_of: WhereOf | None = None,
    id_of: IdOf | None = None,
) -> EventExplanation:
    """Explain ``event_id`` against ``rules`` (all of them, or the one named ``only``).

    ``skew_s`` is engine.max_event_future_skew_s: the event's time is trusted as far as
    it was when it was stored (engine.backtest.StoredClock).
    """
    event, txid, seq = await load_event(conn, event_id)
    name = id_of or engine_id
    chosen = choose_rules(rules, event, only, name)
    passed = await conn.fetchrow(query("explain_cursor"), cursor, txid, seq, event.get("chain_id"))
    trusted_until = StoredClock(skew_s, time.time()).trusted_until(event)
    keys = [(r.id, r.group_key(event)) for r in chosen]
    stored = await conn.fetch(query("explain_states"), [k[0] for k in keys], [k[1] for k in keys])
    states = {(s["trigger_id"], s["group_key"]): s for s in stored}
    rows = await conn.fetch(query("explain_action_rows"), str(event["id"]), [r.id for r in chosen])
    actions: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        actions.setdefault(row["trigger_id"], []).append(_action(row))
    where = where_of or _where_as_written
    explained = []
    memo: dict[str, Any] = {}
    for rule, key in zip(chosen, keys, strict=True):
        state_row = states.get(key)
        state = None if state_row is None else json.loads(state_row["state"])
        simulation = simulate(rule, event, state, trusted_until, where(rule))
        case = RuleCase(rule, event, key[1], simulation, memo)
        verdicts = [v for check in PRE_CHECKS for v in await check(conn, case)]
        verdicts += simulation.verdicts
        verdicts += [v for check in POST_CHECKS for v in await check(conn, case)]
        would_fire = simulation.passed and not any(v.blocks for v in verdicts)
        explained.append(
            RuleExplanation(
                rule,
                name(rule),
                verdicts,
                would_fire,
                actions.get(rule.id, []),
                None if state_row is None else _iso_datetime(state_row["updated_at"]),
            )
        )
    return EventExplanation(
        _event_summary(event), None if passed is None else bool(passed["passed"]), cursor, explained
    )


async def organizations_rules(conn: asyncpg.Connection) -> list[Rule]:
    """Every organization's stored rule, compiled as the daemon compiles it."""
    rows = [
        StoredRule(r["id"], r["org_id"], r["document"], r["content_hash"], r["logic_hash"])
        for r in await conn.fetch(query("tenant_rules_all"))
    ]
    return [rule for rule in compile_stored(rows).values() if rule is not None]


def _where_as_written(rule: Rule) -> Any:
    return rule.document.get("where")


def _action(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "event_id": row["event_id"],
        "action_index": row["action_index"],
        "action_type": row["action_type"],
        "action_name": row["action_name"],
        "status": row["status"],
        "attempts": row["attempts"],
        "error_message": row["error_message"],
        "created_at": _iso_datetime(row["created_at"]),
        "executed_at": _iso_datetime(row["executed_at"]),
    }


def _event_summary(event: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if v is not None}


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


def _iso_datetime(value: Any) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")

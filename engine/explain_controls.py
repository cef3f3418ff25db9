"""Explain's steps for what operators and tenants switch at runtime: a rule disabled by
`engine rules disable` (or the API), and a silence that would hold the firing back.

Read-only, like the rest of explain; in the API they run in the tenant's transaction, so
row-level security shows an organization its own disables and silences only.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import asyncpg

from engine.noise_controls import NoiseControls
from rules.explain import BLOCK, Verdict
from sql import query

if TYPE_CHECKING:
    from engine.explain import RuleCase


async def runtime_disable_check(conn: asyncpg.Connection, case: RuleCase) -> list[Verdict]:
    """A rule disabled at runtime is not evaluated at all: who, why, until when."""
    row = await conn.fetchrow(query("explain_rule_disable"), case.rule.id)
    if row is None:
        return []
    until = "until enabled again" if row["until"] is None else f"until {_iso(row['until'])}"
    values = {
        "disabled_by": row["disabled_by"],
        "comment": row["comment"],
        "disabled_at": _iso(row["disabled_at"]),
        "until": _iso(row["until"]),
    }
    summary = f"disabled at runtime by {row['disabled_by']} {until}"
    if row["comment"]:
        summary += f" ({row['comment']})"
    return [Verdict("disabled", BLOCK, summary, values)]


async def silence_check(conn: asyncpg.Connection, case: RuleCase) -> list[Verdict]:
    """Would a firing be held back by an active silence now (recorded, never sent)?"""
    if not case.simulation.passed:
        return []
    controls = case.memo.get("noise")
    if controls is None:  # read once per explanation, whatever the number of rules
        controls = case.memo["noise"] = NoiseControls(refresh_s=0.0)
        await controls.refresh_if_due(conn)
    silence_id = controls.silence_of(case.rule, case.event, time.time())
    if silence_id is None:
        return []
    row = await conn.fetchrow(query("explain_silence"), silence_id)
    values: dict[str, Any] = {"silence_id": silence_id}
    if row is not None:
        values |= {
            "rule_glob": row["rule_glob"],
            "matchers": row["matchers"],
            "ends_at": _iso(row["ends_at"]),
            "created_by": row["created_by"],
            "comment": row["comment"],
        }
    ends = f" until {values['ends_at']}" if "ends_at" in values else ""
    summary = f"silenced by silence {silence_id}{ends}: the firing is recorded, not sent"
    return [Verdict("silence", BLOCK, summary, values)]


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")

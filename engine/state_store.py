"""trigger_state: what each stateful rule remembers per group, between events.

A batch loads the states its matches need, steps them in memory, and saves the ones
that changed inside the batch's own transaction, so a state never moves on without
the cursor (and never twice for one event).  This module never commits.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

import asyncpg

from engine.json_text import to_json
from sql import query

#: (trigger id, group key): one rule's state for one group of events.
StateKey = tuple[str, str]
States = dict[StateKey, dict[str, Any]]


async def load_states(conn: asyncpg.Connection, keys: Collection[StateKey]) -> States:
    """The stored states of ``keys``; a key without one is left out (a fresh state)."""
    if not keys:
        return {}
    ids, groups = zip(*keys, strict=True)
    rows = await conn.fetch(query("load_states"), list(ids), list(groups))
    return {(r["trigger_id"], r["group_key"]): json.loads(r["state"]) for r in rows}


async def save_states(
    conn: asyncpg.Connection,
    states: States,
    changed: set[StateKey],
    org_ids: Mapping[str, int | None] | None = None,
) -> None:
    """Write the states of ``changed`` (each replaces the stored one); ``org_ids`` gives
    each trigger's organization (absent: the operator's)."""
    if not changed:
        return
    ordered = sorted(changed)
    orgs = org_ids or {}
    await conn.execute(
        query("save_states"),
        [k[0] for k in ordered],
        [k[1] for k in ordered],
        [to_json(states[k]) for k in ordered],
        [orgs.get(k[0]) for k in ordered],
    )

"""Silences and runtime disables as the evaluator applies them: read now and then, never
per event.

The leader re-reads every active silence and every disabled rule (one small query, see
noise_controls_active) at most every ``engine.silences_refresh_s``, between batches, so a
silence or a disable made by any process (the CLI, the API, another host) applies within
about that long, and a batch costs nothing more than a set lookup per match and, while a
silence is active, one match per firing.  A silence's end is compared with the batch's
clock, so an expired silence stops holding at once.  This module never commits: the
silence of each silenced firing is recorded in the batch's transaction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import asyncpg

from rules import Rule
from rules.silence_match import SilenceSet
from sql import query

log = logging.getLogger(__name__)

#: The action status of a silenced firing: written, never enqueued nor sent.
SILENCED = "silenced"


class NoiseControls:
    """The silences and disabled rule ids the evaluator knows of."""

    def __init__(self, refresh_s: float = 1.0) -> None:
        self.refresh_s = refresh_s
        self.silences = SilenceSet()
        self.disabled: frozenset[str] = frozenset()
        self._next_refresh = 0.0
        # (rule id, event id, silence id) of the batch's silenced firings
        self.silenced: list[tuple[str, str, int]] = []

    async def refresh_if_due(self, conn: asyncpg.Connection) -> None:
        """Re-read the silences and disables when ``refresh_s`` has passed (outside a
        batch's transaction: a failure here is the batch's, retried like it)."""
        if time.monotonic() < self._next_refresh:
            return
        row = await conn.fetchrow(query("noise_controls_active"))
        self.silences = SilenceSet.from_json(row["silences"])
        disabled = frozenset(json.loads(row["disabled"]))
        if disabled != self.disabled:
            log.info("disabled rules changed", extra={"disabled_rules": len(disabled)})
        self.disabled = disabled
        self._next_refresh = time.monotonic() + self.refresh_s

    def silence_of(self, rule: Rule, event: Mapping[str, Any], now: float) -> int | None:
        """The silence holding back this firing (noted for ``record``), or None."""
        group = rule.group_values(event) if rule.per else {}
        silence_id = self.silences.holding(rule.id, rule.org_id, rule.labels, group, now)
        if silence_id is not None:
            self.silenced.append((rule.id, str(event.get("id")), silence_id))
        return silence_id

    async def record(self, conn: asyncpg.Connection) -> None:
        """Write the silence of each silenced firing of the batch (in its transaction)."""
        noted, self.silenced = self.silenced, []
        if noted:
            await conn.execute(
                query("record_silenced_firings"),
                [n[0] for n in noted],
                [n[1] for n in noted],
                [n[2] for n in noted],
            )

"""The worker's check, before each attempt, that no silence holds the action back.

A silence made while firings wait in the queue (or between retries) applies to them too,
as Alertmanager's silences apply when a notification is sent: the worker ends such a row
'silenced', with the silence's id, instead of sending it.  The active silences are read
at most every ``refresh_s`` (one small query, shared by every action of the process), so
a worker sees a new silence within about that long; a silence's end is compared with the
clock of each attempt.  The firing is matched as the evaluator matched it
(rules.silence_match), from what its row stored: the rule id, ``rule.labels`` and
``group`` of its context.  This module never spells SQL beyond the names of its queries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from actions.claims import ClaimedAction
from rules.silence_match import SilenceSet

log = logging.getLogger(__name__)

#: ActionClaims.fetch_one: a named query's first row.
FetchOne = Callable[..., Awaitable[tuple[Any, ...] | None]]


class SilenceGate:
    """Finds the silence, if any, that holds back a claimed action."""

    def __init__(self, fetch_one: FetchOne, refresh_s: float = 1.0) -> None:
        self.fetch_one = fetch_one
        self.refresh_s = refresh_s
        self.silences = SilenceSet()
        self._read_at: float | None = None
        self._reading = asyncio.Lock()  # concurrent actions wait for one read, not each

    async def _current(self) -> SilenceSet:
        async with self._reading:
            if self._read_at is None or time.monotonic() - self._read_at >= self.refresh_s:
                row = await self.fetch_one("noise_controls_active")
                self.silences = SilenceSet.from_json(row[0] if row else "[]")
                self._read_at = time.monotonic()
        return self.silences

    async def silence_of(self, claimed: ClaimedAction) -> int | None:
        """The id of a silence holding back ``claimed`` now, or None."""
        silences = await self._current()
        if not silences:
            return None
        rule = _mapping(claimed.context.get("rule"))
        labels, group = _mapping(rule.get("labels")), _mapping(claimed.context.get("group"))
        return silences.holding(claimed.trigger_id, claimed.org_id, labels, group, time.time())

    async def hold_back(self, claimed: ClaimedAction, silence_id: int) -> bool:
        """End the claimed row as silenced; False when it was taken over meanwhile."""
        row = await self.fetch_one(
            "silence_claimed_action", claimed.id, claimed.attempt, silence_id
        )
        log.info(
            "action silenced",
            extra={
                "action_id": claimed.id,
                "trigger_id": claimed.trigger_id,
                "silence_id": silence_id,
            },
        )
        return row is not None


def _mapping(value: Any) -> dict[str, Any]:
    """A part of a stored context, or nothing when a row older than it lacks it."""
    return value if isinstance(value, dict) else {}

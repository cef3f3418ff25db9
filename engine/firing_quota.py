"""Each organization's ``max_firings_per_minute``, counted where firings happen: the evaluator.

A firing over the quota is not dropped: the evaluator writes its action rows with the
status ``quota_exceeded`` and never enqueues them, so the tenant sees what was held back
(``GET /v1/actions?status=quota_exceeded``, ``engine status``).  The operator's file
rules have no quota.

The count is a sliding minute, estimated from the current and the previous calendar
minute (the previous one weighted by how much of it is still inside the last 60 s): no
burst of twice the quota across a minute's edge, and two integers per organization.
It lives in the leader's memory: a new leader starts counting afresh, which can let
through at most one more minute's quota.  This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MINUTE_S = 60.0


@dataclass
class _Window:
    minute: int = -1
    current: int = 0
    previous: int = 0


@dataclass
class FiringQuota:
    """Firings allowed per organization and sliding minute."""

    default_per_minute: int = 600
    # organization id -> its own max_firings_per_minute (an organization not here, or
    # None: the default).
    limits: Mapping[int, int | None] = field(default_factory=dict)
    _windows: dict[int, _Window] = field(default_factory=dict)

    def limit_of(self, org_id: int) -> int:
        own = self.limits.get(org_id)
        return self.default_per_minute if own is None else own

    def allow(self, org_id: int, now: float) -> bool:
        """Count one firing of ``org_id`` at ``now`` (unix seconds) if the quota allows it;
        whether it did.  A firing refused is not counted."""
        minute = int(now // MINUTE_S)
        window = self._windows.get(org_id)
        if window is None:
            window = self._windows[org_id] = _Window(minute=minute)
        if window.minute != minute:
            window.previous = window.current if window.minute == minute - 1 else 0
            window.current = 0
            window.minute = minute
        elapsed = (now % MINUTE_S) / MINUTE_S
        used = window.current + window.previous * (1.0 - elapsed)
        if used + 1 > self.limit_of(org_id):
            return False
        window.current += 1
        return True

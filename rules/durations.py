"""Durations in rule files: a positive integer followed by s, m, h or d."""

from __future__ import annotations

import re
from typing import Any

from rules.errors import EngineError

_DURATION = re.compile(r"^\s*(-?\d+)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Ten years: longer windows are surely a typo and would keep state forever.
MAX_DURATION_S = 10 * 365 * 86400


class DurationError(EngineError, ValueError):
    """The text is not a valid duration; the message is advice for the author."""


def parse_duration(value: Any) -> int:
    """Seconds in ``value`` (``30s``, ``15m``, ``2h``, ``7d``); raises DurationError."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise DurationError(f"must be a duration like 30s, 15m, 2h or 7d (got {value!r})")
    match = _DURATION.match(value)
    if match is None:
        raise DurationError(f"must be a duration like 30s, 15m, 2h or 7d (got {value!r})")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds <= 0:
        raise DurationError(f"must be a positive duration (got {value!r})")
    if seconds > MAX_DURATION_S:
        raise DurationError(f"must be at most 3650d (got {value!r})")
    return seconds

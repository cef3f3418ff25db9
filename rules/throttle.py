"""`throttle`: per-group cooldown and max-firings-per-window, in event time.

A suppressed firing leaves the throttle state as it was (it does not extend a cooldown),
while the `when` conditions have already updated.  An event without a usable or trusted
timestamp (rules.stateful) cannot be placed in time, so a throttled rule suppresses it
rather than risk a flood.  `max` counts the firings in (now − within, now]; firings later
than this event (an out-of-order stream) are kept for the events to come.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.conditions.base import int_list, state_dict
from rules.reporting import Problems, shown
from rules.shapes import check_keys, duration, positive_int
from rules.yaml_source import Path

MAX_FIRINGS_PER_WINDOW = 10_000


@dataclass(frozen=True)
class Throttle:
    """A compiled throttle: ``cooldown_s`` and/or ``max_firings`` per ``within_s``."""

    cooldown_s: int | None
    max_firings: int | None
    within_s: int | None

    def admit(
        self, state: Any, now: int | None, latest: int | None = None
    ) -> tuple[bool, dict[str, Any]]:
        """Whether a firing at ``now`` is allowed, and the throttle state afterwards.

        ``latest`` is the trust ceiling: a stored firing time after it cannot have been
        recorded under the current clock, so it is forgotten rather than let it silence
        the rule until that time.
        """
        old = state_dict(state)
        last = old.get("last") if type(old.get("last")) is int else None
        fired = int_list(old.get("fired"))
        if latest is not None:
            if last is not None and last > latest:
                last = None
            fired = [t for t in fired if t <= latest]
        in_window = fired
        if self.max_firings is not None and self.within_s is not None and now is not None:
            horizon = now - self.within_s
            fired = [t for t in fired if t > horizon]
            in_window = [t for t in fired if t <= now]
        kept = {"last": last, "fired": fired}
        if now is None:
            return False, kept
        if self.cooldown_s is not None and last is not None and now - last < self.cooldown_s:
            return False, kept
        if self.max_firings is not None and len(in_window) >= self.max_firings:
            return False, kept
        if self.max_firings is not None:
            fired = [*fired, now]
        return True, {"last": now, "fired": fired}


def compile_throttle(spec: Any, sink: Problems, path: Path = ("throttle",)) -> Throttle | None:
    """Validate and compile `throttle` (None when absent or wrong)."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        sink.at(path, f"must be a mapping with cooldown and/or max + within (got {shown(spec)})")
        return None
    before = sink.count
    check_keys(spec, ("cooldown", "max", "within"), sink, path)
    cooldown = duration(spec, "cooldown", sink, path) if "cooldown" in spec else None
    max_firings = positive_int(spec, "max", sink, path, maximum=MAX_FIRINGS_PER_WINDOW)
    within = duration(spec, "within", sink, path) if "within" in spec else None
    if ("max" in spec) != ("within" in spec):
        sink.at(path, "max and within go together: `max: 5, within: 1h`")
    if not any(key in spec for key in ("cooldown", "max", "within")):
        sink.at(path, "needs cooldown and/or max + within")
    if sink.count != before:
        return None
    return Throttle(cooldown, max_firings, within)

"""`count`: how many of the group's events fall within a time window, this one included.

The window is (now − within, now] in event time; older entries are pruned on every event
(times are kept sorted, so an event that arrives out of order is placed by its time, and
the entries later than it are kept for the events to come but not counted for it).
At most MAX_WINDOW_ENTRIES event times are kept per group: past that the oldest are
dropped, so the count saturates there (thresholds above the cap are refused at load).
An event without a usable or trusted `timestamp` (rules.stateful) is not counted and the
condition does not hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.conditions.base import (
    MAX_WINDOW_ENTRIES,
    Outcome,
    Threshold,
    slide_window,
    stored_list,
)
from rules.reporting import Problems, shown
from rules.shapes import check_keys, duration, one_of
from rules.yaml_source import Path

COMPARISONS = ("at_least", "more_than", "at_most", "exactly")
KEYS = ("within", *COMPARISONS, "reset_on_fire")
_AS_THRESHOLD = {"at_least": "at_least", "at_most": "at_most", "more_than": "above"}


@dataclass(frozen=True)
class Count:
    """A compiled `count` condition."""

    within_s: int
    comparison: str
    limit: int
    reset_on_fire: bool
    key: str = "count"

    def holds(self, count: int) -> bool:
        """Whether ``count`` satisfies the configured comparison."""
        if self.comparison == "exactly":
            return count == self.limit
        return Threshold(_AS_THRESHOLD[self.comparison], self.limit).holds(count)

    def update(
        self, event: Mapping[str, Any], state: Any, now: int | None, latest: int | None = None
    ) -> Outcome:
        """Add this event's time, prune the ones that left the window, compare."""
        times = stored_list(state, "times")
        if now is None:
            return Outcome(False, {"times": list(times)}, len(times))
        try:
            times, _, counted = slide_window(times, None, now, now - self.within_s, None, latest)
        except TypeError:  # a corrupted stored window: start a fresh one
            times, counted = [now], 1
        return Outcome(self.holds(counted), {"times": times}, counted)

    def after_fire(self, state: dict[str, Any]) -> dict[str, Any]:
        """With reset_on_fire the window starts empty after a firing."""
        return {"times": []} if self.reset_on_fire else state


def compile_count(spec: Mapping[str, Any], sink: Problems, path: Path) -> Count | None:
    """Validate and compile a `count` mapping."""
    before = sink.count
    check_keys(spec, KEYS, sink, path, required=("within",))
    within = duration(spec, "within", sink, path) if "within" in spec else None
    comparison = one_of(spec, COMPARISONS, sink, path)
    limit = spec.get(comparison) if comparison else None
    if comparison is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            sink.at((*path, comparison), f"must be a non-negative integer (got {shown(limit)})")
        elif limit > MAX_WINDOW_ENTRIES:
            sink.at(
                (*path, comparison),
                f"must be at most {MAX_WINDOW_ENTRIES}: windows keep at most "
                f"{MAX_WINDOW_ENTRIES} events per group (got {limit})",
            )
    reset = spec.get("reset_on_fire", False)
    if not isinstance(reset, bool):
        sink.at((*path, "reset_on_fire"), f"must be true or false (got {shown(reset)})")
    if sink.count != before or within is None or comparison is None:
        return None
    assert isinstance(limit, int)
    return Count(within, comparison, limit, bool(reset))

"""`avg`, `sum`, `min`, `max`: an aggregate of a numeric field over a time window.

The window is (now − within, now] in event time, this event included (samples later than
it, from an out-of-order stream, are kept but not aggregated); the state holds two
parallel lists, sorted by time, so the aggregate runs in C (fsum, min, max).  At most
MAX_WINDOW_ENTRIES samples are kept per group; past that the oldest are dropped, so the
aggregate covers the newest samples only.  An event whose field is null or not a number,
or that has no usable or trusted `timestamp` (rules.stateful), adds no sample and the
condition does not hold for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.conditions.base import (
    Outcome,
    Threshold,
    compile_threshold,
    numeric_value,
    slide_window,
    stored_list,
)
from rules.reporting import Problems
from rules.shapes import check_keys, duration, event_field
from rules.yaml_source import Path

AGGREGATES = ("avg", "sum", "min", "max")
KEYS = ("of", "within", "below", "above", "at_most", "at_least")


def aggregate(name: str, values: list[float | int]) -> float | int | None:
    """The named aggregate of ``values`` (None for an empty window)."""
    if not values:
        return None
    if name == "sum":
        return math.fsum(values)
    if name == "avg":
        return math.fsum(values) / len(values)
    return min(values) if name == "min" else max(values)


def _current(name: str, values: list[Any]) -> float | int | None:
    try:
        return aggregate(name, values)
    except (TypeError, ValueError):  # a corrupted stored window
        return None


@dataclass(frozen=True)
class WindowAggregate:
    """A compiled avg/sum/min/max condition; ``key`` is the aggregate's name."""

    key: str
    of: str
    within_s: int
    threshold: Threshold

    def update(
        self, event: Mapping[str, Any], state: Any, now: int | None, latest: int | None = None
    ) -> Outcome:
        """Add this event's sample, prune the window, compare the aggregate."""
        times, values = stored_list(state, "times"), stored_list(state, "values")
        value = numeric_value(event, self.of)
        if now is None or value is None:
            kept = {"times": list(times), "values": list(values)}
            return Outcome(False, kept, _current(self.key, values))
        try:
            if len(times) != len(values):
                raise TypeError("times and values differ in length")
            new_times, new_values, counted = slide_window(
                times, values, now, now - self.within_s, value, latest
            )
            assert new_values is not None
            current = aggregate(self.key, new_values[:counted])
            holds = self.threshold.holds(current)
        except TypeError:  # a corrupted stored window: start a fresh one
            new_times, new_values = [now], [value]
            current = value
            holds = self.threshold.holds(current)
        return Outcome(holds, {"times": new_times, "values": new_values}, current)

    def after_fire(self, state: dict[str, Any]) -> dict[str, Any]:
        """Firing does not change the samples."""
        return state


def compile_window(
    name: str, spec: Mapping[str, Any], sink: Problems, path: Path
) -> WindowAggregate | None:
    """Validate and compile an avg/sum/min/max mapping."""
    before = sink.count
    check_keys(spec, KEYS, sink, path, required=("of", "within"))
    of = event_field(spec, "of", sink, path, numeric=True) if "of" in spec else None
    within = duration(spec, "within", sink, path) if "within" in spec else None
    threshold = compile_threshold(spec, sink, path)
    if sink.count != before or of is None or within is None or threshold is None:
        return None
    return WindowAggregate(name, of, within, threshold)

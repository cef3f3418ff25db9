"""`avg`, `sum`, `min`, `max`: an aggregate of a numeric field over a time window.

The window is (now − within, now] in event time, this event included.  At most
MAX_WINDOW_ENTRIES samples are kept per group; past that the oldest are dropped, so the
aggregate covers the newest samples only.  An event whose field is null or not a number,
or that has no usable `timestamp`, adds no sample and the condition does not hold for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.conditions.base import (
    MAX_WINDOW_ENTRIES,
    Outcome,
    Threshold,
    compile_threshold,
    numeric_value,
    state_dict,
)
from rules.fields import is_number
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


def _samples(state: Any) -> list[list[Any]]:
    stored = state_dict(state).get("samples")
    if not isinstance(stored, list):
        return []
    return [
        [s[0], s[1]]
        for s in stored
        if isinstance(s, list) and len(s) == 2 and type(s[0]) is int and is_number(s[1])
    ]


@dataclass(frozen=True)
class WindowAggregate:
    """A compiled avg/sum/min/max condition; ``key`` is the aggregate's name."""

    key: str
    of: str
    within_s: int
    threshold: Threshold

    def update(self, event: Mapping[str, Any], state: Any, now: int | None) -> Outcome:
        """Add this event's sample, prune the window, compare the aggregate."""
        samples = _samples(state)
        value = numeric_value(event, self.of)
        if now is None or value is None:
            current = aggregate(self.key, [s[1] for s in samples])
            return Outcome(False, {"samples": samples}, current)
        horizon = now - self.within_s
        samples = [s for s in samples if s[0] > horizon]
        samples.append([now, value])
        if len(samples) > MAX_WINDOW_ENTRIES:
            del samples[: len(samples) - MAX_WINDOW_ENTRIES]
        current = aggregate(self.key, [s[1] for s in samples])
        return Outcome(self.threshold.holds(current), {"samples": samples}, current)

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

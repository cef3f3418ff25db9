"""`new`: the field's value was never seen before in the group.

Remembers at most `max_remembered` values (default 10,000) per group; past that the oldest
are forgotten first, so a value seen long ago can count as new again.  A null value is
neither new nor remembered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.conditions.base import Outcome, scalar_value, stored_list, value_key
from rules.reporting import Problems
from rules.shapes import check_keys, event_field, positive_int
from rules.yaml_source import Path

DEFAULT_REMEMBERED = 10_000
MAX_REMEMBERED = 100_000


@dataclass(frozen=True)
class New:
    """A compiled `new` condition; template value {value, remembered}."""

    of: str
    max_remembered: int
    key: str = "new"

    def update(
        self, event: Mapping[str, Any], state: Any, now: int | None, latest: int | None = None
    ) -> Outcome:
        """Hold when the value is not remembered, and remember it (oldest out first)."""
        stored = stored_list(state, "seen")
        current = scalar_value(event, self.of)
        if current is None:
            return Outcome(
                False, {"seen": list(stored)}, {"value": None, "remembered": len(stored)}
            )
        key = value_key(current)
        # A list scan runs in C; building a set from the stored list each event would not.
        holds = key not in stored
        seen = [*stored, key] if holds else list(stored)
        if len(seen) > self.max_remembered:
            del seen[: len(seen) - self.max_remembered]
        return Outcome(holds, {"seen": seen}, {"value": current, "remembered": len(seen)})

    def after_fire(self, state: dict[str, Any]) -> dict[str, Any]:
        """Firing does not change what was seen."""
        return state


def compile_new(spec: Mapping[str, Any], sink: Problems, path: Path) -> New | None:
    """Validate and compile a `new` mapping."""
    before = sink.count
    check_keys(spec, ("of", "max_remembered"), sink, path, required=("of",))
    of = event_field(spec, "of", sink, path) if "of" in spec else None
    cap = positive_int(
        spec, "max_remembered", sink, path, default=DEFAULT_REMEMBERED, maximum=MAX_REMEMBERED
    )
    if sink.count != before or of is None or cap is None:
        return None
    return New(of, cap)

"""`change`: the field's value differs from the group's previous value.

The first sighting does not hold.  A null or non-scalar value is not a sighting: it
neither updates the remembered value nor holds (so null → 5 → null → 5 is no change).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.conditions.base import Outcome, scalar_value, state_dict
from rules.reporting import Problems
from rules.shapes import check_keys, event_field
from rules.yaml_source import Path


@dataclass(frozen=True)
class Change:
    """A compiled `change` condition; template value {previous, current}."""

    of: str
    key: str = "change"

    def update(
        self, event: Mapping[str, Any], state: Any, now: int | None, latest: int | None = None
    ) -> Outcome:
        """Compare the event's value with the remembered one, then remember it."""
        old = state_dict(state)
        seen = "last" in old
        previous = old.get("last")
        current = scalar_value(event, self.of)
        value = {"previous": previous, "current": current}
        if current is None:
            return Outcome(False, old, value)
        holds = seen and (previous != current or type(previous) is not type(current))
        return Outcome(holds, {"last": current}, value)

    def after_fire(self, state: dict[str, Any]) -> dict[str, Any]:
        """Firing does not change what was seen."""
        return state


def compile_change(spec: Mapping[str, Any], sink: Problems, path: Path) -> Change | None:
    """Validate and compile a `change` mapping."""
    before = sink.count
    check_keys(spec, ("of",), sink, path, required=("of",))
    of = event_field(spec, "of", sink, path) if "of" in spec else None
    return None if sink.count != before or of is None else Change(of)

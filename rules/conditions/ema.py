"""`ema`: the exponential moving average of a numeric field, compared with a threshold.

First sample sets ema = value; then ema = alpha·value + (1 − alpha)·ema, alpha = 2/(N+1)
for `window: N`.  An event whose field is null or not a number leaves the EMA as it was and
the condition does not hold for it.  An EMA counts samples, not time: an event's
`timestamp`, trusted or not, does not enter it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.conditions.base import Outcome, Threshold, compile_threshold, numeric_value, state_dict
from rules.fields import is_number
from rules.reporting import Problems, shown
from rules.shapes import check_keys, event_field, one_of, positive_int
from rules.yaml_source import Path

KEYS = ("of", "window", "alpha", "below", "above", "at_most", "at_least", "min_samples")


@dataclass(frozen=True)
class Ema:
    """A compiled `ema` condition."""

    of: str
    alpha: float
    threshold: Threshold
    min_samples: int
    key: str = "ema"

    def update(
        self, event: Mapping[str, Any], state: Any, now: int | None, latest: int | None = None
    ) -> Outcome:
        """Fold the event's value into the EMA."""
        old = state_dict(state)
        ema, samples = old.get("ema"), old.get("samples")
        if not is_number(ema) or type(samples) is not int:
            ema, samples = None, 0
        value = numeric_value(event, self.of)
        if value is None:
            return Outcome(False, old, ema)
        ema = float(value) if ema is None else self.alpha * value + (1 - self.alpha) * ema
        samples += 1
        holds = samples >= self.min_samples and self.threshold.holds(ema)
        return Outcome(holds, {"ema": ema, "samples": samples}, ema)

    def after_fire(self, state: dict[str, Any]) -> dict[str, Any]:
        """Firing does not change an EMA."""
        return state


def compile_ema(spec: Mapping[str, Any], sink: Problems, path: Path) -> Ema | None:
    """Validate and compile an `ema` mapping."""
    before = sink.count
    check_keys(spec, KEYS, sink, path, required=("of",))
    of = event_field(spec, "of", sink, path, numeric=True) if "of" in spec else None
    threshold = compile_threshold(spec, sink, path)
    min_samples = positive_int(spec, "min_samples", sink, path, default=1, maximum=1_000_000)
    alpha: float | None = None
    which = one_of(spec, ("window", "alpha"), sink, path)
    if which == "window":
        window = positive_int(spec, "window", sink, path, maximum=1_000_000)
        alpha = None if window is None else 2.0 / (window + 1)
    elif which == "alpha":
        raw = spec["alpha"]
        if not is_number(raw) or not 0 < raw <= 1:
            sink.at((*path, "alpha"), f"must be a number in (0, 1] (got {shown(raw)})")
        else:
            alpha = float(raw)
    if sink.count != before or of is None or threshold is None or alpha is None:
        return None
    assert min_samples is not None  # validated above; the assert documents it for mypy
    return Ema(of, alpha, threshold, min_samples)

"""Figures and their printing: each figure beside the baseline measured in the same run."""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


@dataclass(frozen=True)
class Figure:
    """One printed line: ``key`` is stable (the test looks for it)."""

    key: str
    label: str
    value: float
    unit: str
    baseline_label: str
    baseline: float
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float:
        if not self.baseline or self.baseline != self.baseline:
            return float("nan")
        return self.value / self.baseline


def _fmt(value: float, unit: str) -> str:
    if value != value:
        return f"n/a {unit}"
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.2f} {unit}"


def print_figure(figure: Figure, out: TextIO = sys.stdout) -> None:
    line = (
        f"[{figure.key}] {figure.label}: {_fmt(figure.value, figure.unit)}"
        f" | baseline {figure.baseline_label}: {_fmt(figure.baseline, figure.unit)}"
        f" | ratio {figure.ratio:.2f}"
    )
    if figure.unit == "ms":  # a ratio to a near-zero baseline says little: the excess too
        line += f" | excess {figure.value - figure.baseline:+.2f} ms"
    if figure.note:
        line += f" ({figure.note})"
    print(line, file=out, flush=True)


def print_section(title: str, out: TextIO = sys.stdout) -> None:
    print(f"\n== {title}", file=out, flush=True)

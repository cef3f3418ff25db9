"""Evaluate a stream of events against an index: shared by rule tests and backtests.

Pure: the caller owns ``states`` (a dict in memory for tests and backtests; the engine
keeps its own in PostgreSQL and does the same steps inside its transaction).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rules.conditions.base import event_time
from rules.index import RuleIndex
from rules.model import Rule, Step
from rules.templates import build_context


@dataclass(frozen=True)
class Firing:
    """A rule that fired (or was suppressed by its throttle) on one event."""

    rule: Rule
    event: Mapping[str, Any]
    event_index: int
    group_key: str
    group: dict[str, Any]
    step: Step
    context: dict[str, Any]


def event_time_iso(event: Mapping[str, Any]) -> str:
    """The event's block time as ISO 8601 UTC (the default `fired_at` offline)."""
    seconds = event_time(event)
    if seconds is None:
        return ""
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return ""


def evaluate_stream(
    index: RuleIndex,
    events: Iterable[Mapping[str, Any]],
    states: MutableMapping[tuple[str, str], dict[str, Any]],
    *,
    fired_at: Callable[[Mapping[str, Any]], str] | None = None,
    trusted_until: Callable[[Mapping[str, Any]], int | None] | None = None,
) -> Iterator[Firing]:
    """Yield a Firing for each (event, rule) that fired or was suppressed, in order.

    ``states`` maps (rule id, group key) to the rule's state and is updated in place.
    ``fired_at`` gives the firing time shown to templates (default: the event's time, so
    offline results are reproducible).  ``trusted_until`` gives, per event, the latest
    event time to trust (see Rule.step; default: every time is trusted).
    """
    clock = fired_at or event_time_iso
    for position, event in enumerate(events):
        if not isinstance(event, Mapping):  # a rule test's advance step: no event
            continue
        ceiling = None if trusted_until is None else trusted_until(event)
        for rule in index.matching(event):
            key = rule.group_key(event)
            step = rule.step(event, states.get((rule.id, key)), trusted_until=ceiling)
            if step.state is not None:
                states[(rule.id, key)] = step.state
            if not (step.fired or step.suppressed):
                continue
            group = rule.group_values(event)
            context = build_context(rule, event, group, step.template_state, clock(event))
            yield Firing(rule, event, position, key, group, step, context)

"""The hook the rule tests give to features driven by time passing, not by events.

A rule test's `events:` list may hold `{advance: DURATION}` steps.  The test's notion of
now is the last event's timestamp plus the advances since it (rules.testcase_specs works
it out).  rules.testing runs every TimeDriven in ``TIME_DRIVEN`` (rules.testing) over the
test, in step order:

- ``on_start(rule, states, now)`` once, at the time of the test's first step (the
  rule's load: e.g. absence's `expect:` groups are watched from then);
- ``on_event(rule, event, states, now)`` after the rule has stepped each matching event
  (``now`` is the event's timestamp);
- ``on_advance(rule, states, now)`` at each advance step, with the new now; the firings
  it returns count as firings of that step (its index in `fires:`, the next firing
  index in `renders:`).

``states`` is the test's dict of (rule id, group key) → state, the one the rule's own
`when` state lives in; a feature keeps its entries under keys no event group can have,
or (absence) on rules that have no `when` state of their own.  Hooks are pure: no
clock, no I/O.  The engine drives the same features from its own modules (e.g.
engine.absence), with the wall clock.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rules.model import Rule

#: The rule tests' states: (rule id, group key) → state.
TestStates = MutableMapping[tuple[str, str], dict[str, Any]]


@dataclass(frozen=True)
class TimedFiring:
    """A firing made by time passing: its group and its template context."""

    rule: Rule
    group_key: str
    group: dict[str, Any]
    context: dict[str, Any]


class TimeDriven(Protocol):
    """A feature that fires on time passing (absence; later digests and resolve.after)."""

    def on_start(self, rule: Rule, states: TestStates, now: float) -> None:
        """The test begins at ``now`` (the rule loads)."""

    def on_event(
        self, rule: Rule, event: Mapping[str, Any], states: TestStates, now: float
    ) -> None:
        """``event`` matched ``rule`` (after its `when` stepped) at ``now``."""

    def on_advance(self, rule: Rule, states: TestStates, now: float) -> list[TimedFiring]:
        """Time moved on to ``now``: the firings that brings, in order."""

"""Features driven by time passing, not by events, outside ``engine run``: the hook.

A rule test's `events:` list may hold `{advance: DURATION}` steps.  The test's notion of
now is the last event's timestamp plus the advances since it (rules.testcase_specs works
it out); a backtest's is each stored event's `created_at`, then its `until`.  Both drive
every TimeDriven of ``time_driven_features()`` through a TimeSteps, in stream order:

- ``on_start(rule, states, now)`` once, when the stream begins (the rule loads: e.g.
  absence's `expect:` groups are watched from then);
- ``on_event(rule, event, states, now)`` after each event the rule matches has been
  stepped;
- ``on_advance(rule, states, now)`` when time moves on to ``now`` (a test's advance step;
  in a backtest, before each event and at the end); the firings it returns are that
  moment's (in a rule test they count at the advance step's index in `fires:`).

``drives(rule)`` says which rules a feature looks at, so a stream of many rules pays only
for the few it drives.  ``states`` is the stream's dict of (rule id, group key) → state,
the one `when` states live in; a feature keeps its entries on rules that have no `when`
state of their own (absence) or under keys no event group can have.  Hooks are pure: no
clock, no I/O.  ``engine run`` drives the same features from its own modules (e.g.
engine.absence) with the wall clock.

Digests and resolved notices (`group`, `resolve.after`) also fall due as time passes, but
they are not firings: they are made of the rule's firings and non-firings, and time moves
for them at events as well as at advances.  rules.notice_replay replays them for rule
tests beside this hook.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rules.model import Rule

#: A stream's states: (rule id, group key) → state.
TestStates = MutableMapping[tuple[str, str], dict[str, Any]]


@dataclass(frozen=True)
class TimedFiring:
    """A firing made by time passing: its group and its template context."""

    rule: Rule
    group_key: str
    group: dict[str, Any]
    context: dict[str, Any]


class TimeDriven(Protocol):
    """A feature that fires on time passing (absence)."""

    def drives(self, rule: Rule) -> bool:
        """Whether ``rule`` uses the feature."""

    def on_start(self, rule: Rule, states: TestStates, now: float) -> None:
        """The stream begins at ``now`` (the rule loads)."""

    def on_event(
        self, rule: Rule, event: Mapping[str, Any], states: TestStates, now: float
    ) -> None:
        """``event`` matched ``rule`` (after its `when` stepped) at ``now``."""

    def on_advance(self, rule: Rule, states: TestStates, now: float) -> list[TimedFiring]:
        """Time moved on to ``now``: the firings that brings, in order."""


def time_driven_features() -> tuple[TimeDriven, ...]:
    """Every feature driven by time (a new one adds itself here)."""
    from rules.absence import AbsenceSteps  # absence imports this module's types

    return (AbsenceSteps(),)


class TimeSteps:
    """The time-driven features of ``rules`` over one stream, from fresh ``states``."""

    def __init__(
        self,
        rules: Iterable[Rule],
        states: TestStates,
        features: tuple[TimeDriven, ...] | None = None,
    ) -> None:
        every = time_driven_features() if features is None else features
        self.driven = [(f, r) for r in rules for f in every if f.drives(r)]
        self.states = states

    def __bool__(self) -> bool:
        return bool(self.driven)

    def start(self, now: float) -> None:
        for feature, rule in self.driven:
            feature.on_start(rule, self.states, now)

    def event(self, event: Mapping[str, Any], now: float) -> None:
        """After ``event`` was stepped: tell the features of the rules it matches."""
        for feature, rule in self.driven:
            if rule.matches(event):
                feature.on_event(rule, event, self.states, now)

    def advance(self, now: float) -> list[TimedFiring]:
        return [
            f for feature, rule in self.driven for f in feature.on_advance(rule, self.states, now)
        ]

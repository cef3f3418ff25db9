"""A hostile event `timestamp` cannot poison a rule's state (pure rule API, no services).

An event stamped past the caller's trust ceiling is evaluated, but advances no time-based
state: the other events' outcomes are those of the same stream without it.  Windows count
(now − within, now] only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from rules import Rule, RuleIndex, evaluate_stream
from tests.unit.rules.rule_helpers import ACTION, one_rule

FAR_FUTURE = 9_223_372_036_854_775_807  # the largest BIGINT: what a broken indexer may write
WALL = 1_800_000_000  # the evaluating engine's clock in these tests
SKEW_S = 300
CEILING = WALL + SKEW_S


def rule(body: str) -> Rule:
    return one_rule(
        f"id: r\non: {{registry: reputation, event_type: NewFeedback}}\n{body}\n{ACTION}"
    )


def event(ts: int, **fields: Any) -> dict[str, Any]:
    return {"registry": "reputation", "event_type": "NewFeedback", "timestamp": ts, **fields}


def outcomes(
    r: Rule, events: Sequence[Mapping[str, Any]], *, trusted_until: int | None = CEILING
) -> list[tuple[bool, bool]]:
    """(fired, suppressed) per event, the state passed through JSON as the engine stores it."""
    state: Any = None
    seen = []
    for e in events:
        step = r.step(e, state, trusted_until=trusted_until)
        state = json.loads(json.dumps(step.state))
        seen.append((step.fired, step.suppressed))
    return seen


def without(seen: list[tuple[bool, bool]], position: int) -> list[tuple[bool, bool]]:
    return seen[:position] + seen[position + 1 :]


NORMAL = [WALL - 3000, WALL - 2000, WALL - 1000, WALL - 100, WALL]


@pytest.mark.parametrize(
    "body",
    [
        "throttle: {cooldown: 10m}",
        "throttle: {max: 2, within: 1h}",
        "when: {count: {within: 1h, at_least: 2}}",
        "when: {count: {within: 1h, at_least: 2}}\nthrottle: {cooldown: 10m}",
        "when: {sum: {of: score, within: 1h, at_least: 100}}",
    ],
    ids=["cooldown", "max-within", "count", "count-and-cooldown", "sum"],
)
@pytest.mark.parametrize("at", [0, 2, 4], ids=["first", "middle", "last"])
def test_a_far_future_event_changes_no_other_events_outcome(body: str, at: int) -> None:
    r = rule(body)
    clean = [event(ts, score=60) for ts in NORMAL]
    poisoned = [*clean[:at], event(FAR_FUTURE, score=60), *clean[at:]]
    assert without(outcomes(r, poisoned), at) == outcomes(r, clean)


def test_without_a_ceiling_the_far_future_event_does_silence_the_rule() -> None:
    """The reproduction of the issue, kept to show what the ceiling prevents."""
    r = rule("throttle: {cooldown: 10m}")
    stream = [event(WALL - 3000), event(FAR_FUTURE), event(WALL - 1000), event(WALL)]
    assert outcomes(r, stream, trusted_until=None) == [
        (True, False),
        (True, False),
        (False, True),
        (False, True),
    ]
    assert outcomes(r, stream) == [(True, False), (False, True), (True, False), (True, False)]


def test_one_future_event_and_one_normal_event_do_not_make_a_count_of_two() -> None:
    r = rule("when: {count: {within: 1h, at_least: 2}}")
    assert outcomes(r, [event(FAR_FUTURE), event(WALL)]) == [(False, False), (False, False)]


def test_an_event_just_inside_the_skew_is_trusted_and_one_just_past_it_is_not() -> None:
    r = rule("when: {count: {within: 1h, at_least: 1}}")
    assert r.step(event(CEILING), None, trusted_until=CEILING).fired
    past = r.step(event(CEILING + 1), None, trusted_until=CEILING)
    assert not past.fired
    assert past.state == {"when": {"count": {"times": []}}}


def test_a_stateless_rule_still_fires_on_a_far_future_event() -> None:
    r = rule("where: {score: {ge: 0}}")
    assert r.step(event(FAR_FUTURE, score=1), None, trusted_until=CEILING).fired


def test_conditions_without_time_still_see_the_far_future_event() -> None:
    """`change`, `new` and `ema` are not time-based: the event's value counts as any other."""
    r = rule("per: agent_id\nwhen: {new: {of: agent_id}}")
    assert outcomes(r, [event(FAR_FUTURE, agent_id=7), event(WALL, agent_id=7)]) == [
        (True, False),
        (False, False),
    ]


def test_a_throttle_already_poisoned_in_storage_is_forgotten() -> None:
    """State written before times were bounded: a `last` past the ceiling cannot be real."""
    r = rule("throttle: {cooldown: 10m, max: 1, within: 1h}")
    stored = {"when": {}, "throttle": {"last": FAR_FUTURE, "fired": [FAR_FUTURE]}}
    step = r.step(event(WALL), stored, trusted_until=CEILING)
    assert (step.fired, step.state) == (
        True,
        {"when": {}, "throttle": {"last": WALL, "fired": [WALL]}},
    )


def test_a_count_window_already_poisoned_in_storage_is_forgotten() -> None:
    r = rule("when: {count: {within: 1h, at_least: 2}}")
    stored = {"when": {"count": {"times": [WALL - 10, FAR_FUTURE]}}}
    step = r.step(event(WALL), stored, trusted_until=CEILING)
    assert step.fired  # WALL - 10 and WALL
    assert step.state == {"when": {"count": {"times": [WALL - 10, WALL]}}}


# The window is (now − within, now]: this event's time and the `within` before it.


def test_a_count_does_not_include_entries_later_than_the_current_event() -> None:
    r = rule("when: {count: {within: 1h, at_least: 2}}")
    first = r.step(event(WALL), None)
    earlier = r.step(event(WALL - 60), first.state)
    assert (earlier.fired, earlier.template_state["count"]) == (False, 1)
    # ... but keeps them for the events still to come
    later = r.step(event(WALL + 1), earlier.state)
    assert (later.fired, later.template_state["count"]) == (True, 3)


def test_a_count_window_excludes_its_start_and_includes_its_end() -> None:
    r = rule("when: {count: {within: 60s, at_least: 2}}")
    first = r.step(event(WALL), None)
    assert r.step(event(WALL + 59), first.state).template_state["count"] == 2
    assert r.step(event(WALL + 60), first.state).template_state["count"] == 1


def test_an_aggregate_does_not_include_samples_later_than_the_current_event() -> None:
    r = rule("when: {sum: {of: score, within: 1h, at_least: 100}}")
    first = r.step(event(WALL, score=90), None)
    earlier = r.step(event(WALL - 60, score=20), first.state)
    assert (earlier.fired, earlier.template_state["sum"]) == (False, 20)


def test_throttle_max_does_not_count_firings_later_than_the_current_event() -> None:
    r = rule("throttle: {max: 1, within: 1h}")
    first = r.step(event(WALL), None)
    assert r.step(event(WALL - 60), first.state).fired
    assert not r.step(event(WALL + 60), first.state).fired


def test_evaluate_stream_takes_a_ceiling_per_event() -> None:
    """The backtest's path: each event judged against the clock of its own moment."""
    r = rule("throttle: {cooldown: 10m}")
    events = [event(WALL - 3000), event(FAR_FUTURE), event(WALL - 1000)]
    firings = evaluate_stream(RuleIndex([r]), events, {}, trusted_until=lambda e: CEILING)
    assert [(f.event_index, f.step.fired) for f in firings] == [(0, True), (1, False), (2, True)]

"""Stateful conditions and throttle: reference vectors, windows, purity, JSON round trips."""

from __future__ import annotations

import copy
import json

import pytest

from rules.conditions.base import MAX_WINDOW_ENTRIES
from tests.unit.rules.rule_helpers import ACTION, one_rule


def stateful(when: str, *, throttle: str | None = None, per: str | None = None):
    lines = ["id: t", f"when: {when}"]
    if throttle:
        lines.append(f"throttle: {throttle}")
    if per:
        lines.append(f"per: {per}")
    return one_rule("\n".join([*lines, ACTION]))


def run(rule, events, state=None):
    """Step through events (one group), returning fired flags, the last step and states."""
    fired, steps = [], []
    for event in events:
        step = rule.step(event, state)
        state = step.state
        fired.append(step.fired)
        steps.append(step)
    return fired, steps


def ev(t, **fields):
    return {"timestamp": t, **fields}


def test_ema_reference_vector_prior_state():
    rule = stateful("{ema: {of: score, window: 10, below: 78}}")
    step = rule.step(ev(1, score=90), {"when": {"ema": {"ema": 75.0, "samples": 5}}})
    assert step.template_state["ema"] == pytest.approx(77.72727272727, abs=1e-9)
    assert step.state == {"when": {"ema": {"ema": pytest.approx(77.7272727), "samples": 6}}}
    assert step.fired


def test_ema_reference_series_window_10():
    rule = stateful("{ema: {of: score, window: 10, below: 0}}")
    _, steps = run(rule, [ev(i, score=s) for i, s in enumerate([85, 70, 60, 50, 40])])
    emas = [s.template_state["ema"] for s in steps]
    assert emas == pytest.approx([85, 82.2727, 78.2231, 73.0917, 67.075], abs=1e-4)


def test_ema_alpha_min_samples_and_null_values():
    rule = stateful("{ema: {of: score, alpha: 0.5, at_most: 50, min_samples: 3}}")
    fired, steps = run(
        rule,
        [ev(1, score=10), ev(2, score=None), ev(3, score="x"), ev(4, score=20), ev(5, score=30)],
    )
    assert fired == [False, False, False, False, True]
    assert [s.template_state["ema"] for s in steps] == [10.0, 10.0, 10.0, 15.0, 22.5]
    assert steps[-1].state["when"]["ema"]["samples"] == 3


def test_count_prunes_old_events_and_includes_this_one():
    rule = stateful("{count: {within: 10m, at_least: 3}}")
    fired, steps = run(rule, [ev(0), ev(300), ev(600), ev(601), ev(1400)])
    # The window is (now - 10m, now]: at 600 the event at 0 has just left it.
    assert [s.template_state["count"] for s in steps] == [1, 2, 2, 3, 1]
    assert fired == [False, False, False, True, False]
    assert steps[-1].state["when"]["count"] == {"times": [1400]}


def test_count_reset_on_fire_empties_the_window():
    rule = stateful("{count: {within: 1h, at_least: 2, reset_on_fire: true}}")
    fired, steps = run(rule, [ev(1), ev(2), ev(3), ev(4), ev(5)])
    assert fired == [False, True, False, True, False]
    assert steps[1].template_state["count"] == 2
    assert steps[1].state["when"]["count"] == {"times": []}


def test_count_no_reset_when_throttle_suppresses():
    rule = stateful(
        "{count: {within: 1h, at_least: 1, reset_on_fire: true}}", throttle="{cooldown: 1h}"
    )
    fired, steps = run(rule, [ev(1), ev(2), ev(3)])
    assert fired == [True, False, False]
    assert steps[2].suppressed and steps[2].template_state["count"] == 2


def test_count_comparisons():
    for spec, expected in [
        ("more_than: 2", [False, False, True]),
        ("at_most: 1", [True, False, False]),
        ("exactly: 2", [False, True, False]),
    ]:
        fired, _ = run(stateful(f"{{count: {{within: 1h, {spec}}}}}"), [ev(1), ev(2), ev(3)])
        assert fired == expected, spec


def test_count_window_is_capped():
    rule = stateful("{count: {within: 7d, at_least: 10000}}")
    state = {"when": {"count": {"times": list(range(MAX_WINDOW_ENTRIES))}}}
    step = rule.step(ev(MAX_WINDOW_ENTRIES), state)
    assert len(step.state["when"]["count"]["times"]) == MAX_WINDOW_ENTRIES
    assert step.state["when"]["count"]["times"][0] == 1
    assert step.fired


def test_count_without_timestamp_does_not_count():
    rule = stateful("{count: {within: 1h, at_least: 1}}")
    step = rule.step({"timestamp": None}, None)
    assert not step.fired and step.state == {"when": {"count": {"times": []}}}


def test_change_first_sighting_does_not_hold_and_nulls_are_ignored():
    rule = stateful("{change: {of: owner}}")
    fired, steps = run(
        rule,
        [
            ev(1, owner="0xAA"),
            ev(2, owner="0xaa"),
            ev(3, owner=None),
            ev(4, owner="0xBB"),
            ev(5, owner="0xbb"),
        ],
    )
    assert fired == [False, False, False, True, False]
    assert steps[3].template_state["change"] == {"previous": "0xaa", "current": "0xbb"}


def test_new_remembers_and_forgets_the_oldest_past_the_cap():
    rule = stateful("{new: {of: tag1, max_remembered: 2}}")
    fired, steps = run(
        rule,
        [
            ev(1, tag1="a"),
            ev(2, tag1="b"),
            ev(3, tag1="a"),
            ev(4, tag1="c"),
            ev(5, tag1="a"),
            ev(6, tag1=None),
        ],
    )
    assert fired == [True, True, False, True, True, False]
    assert steps[4].template_state["new"] == {"value": "a", "remembered": 2}


def test_new_distinguishes_types():
    rule = stateful("{new: {of: agent_id}}")
    fired, _ = run(rule, [ev(1, agent_id=1), ev(2, agent_id=1.5), ev(3, agent_id=1)])
    assert fired == [True, True, False]


@pytest.mark.parametrize(
    ("name", "threshold", "expected_values", "expected_fired"),
    [
        ("avg", "below: 50", [80, 60, 40, 40], [False, False, True, True]),
        ("sum", "above: 100", [80, 120, 80, 80], [False, True, False, False]),
        ("min", "at_most: 40", [80, 40, 40, 40], [False, True, True, True]),
        ("max", "at_least: 80", [80, 80, 40, 40], [True, True, False, False]),
    ],
)
def test_window_aggregates(name, threshold, expected_values, expected_fired):
    rule = stateful(f"{{{name}: {{of: score, within: 1h, {threshold}}}}}")
    # scores 80 @0, 40 @10, 40 @3605 (80 leaves), 40 @3606 with a null score (no sample)
    events = [ev(0, score=80), ev(10, score=40), ev(3605, score=40), ev(3606, score=None)]
    fired, steps = run(rule, events)
    values = [s.template_state[name] for s in steps]
    if name == "avg":
        expected_values = [80, 60, 40, 40]
    assert values == pytest.approx(expected_values)
    assert fired == [*expected_fired[:3], False]


def test_throttle_cooldown_and_max_within():
    rule = stateful("{count: {within: 1d, at_least: 1}}", throttle="{cooldown: 10m}")
    fired, steps = run(rule, [ev(0), ev(599), ev(600), ev(601)])
    assert fired == [True, False, True, False]
    assert [s.suppressed for s in steps] == [False, True, False, True]
    assert steps[1].state["when"]["count"]["times"] == [0, 599]  # state still updated

    rule = stateful("{count: {within: 1d, at_least: 1}}", throttle="{max: 2, within: 1h}")
    fired, _ = run(rule, [ev(0), ev(1), ev(2), ev(3600), ev(3601), ev(3602)])
    assert fired == [True, True, False, True, True, False]


def test_throttle_only_rule_and_missing_timestamp():
    rule = one_rule(f"id: t\nthrottle: {{cooldown: 1m}}\n{ACTION}")
    assert rule.stateful
    fired, _ = run(rule, [ev(0), ev(30), ev(60)])
    assert fired == [True, False, True]
    step = rule.step({}, None)
    assert step.suppressed and not step.fired


def test_stateless_rule_always_fires_without_state():
    rule = one_rule(f"id: t\n{ACTION}")
    assert not rule.stateful
    step = rule.step({}, None)
    assert step.fired and step.state is None and step.template_state == {}


def test_step_is_pure_and_state_round_trips_through_json():
    rule = stateful(
        "{ema: {of: score, window: 3, below: 100}, count: {within: 1h, at_least: 1, "
        "reset_on_fire: true}, change: {of: tag1}, new: {of: tag2}, "
        "avg: {of: value, within: 1h, above: 0}}",
        throttle="{cooldown: 5s, max: 3, within: 1h}",
    )
    events = [
        ev(i, score=i * 7 % 100, tag1="ab"[i % 2], tag2=str(i % 3), value=i / 3) for i in range(40)
    ]
    state_a = state_b = None
    for event in events:
        frozen = copy.deepcopy(state_a)
        step_a = rule.step(event, state_a)
        assert state_a == frozen  # input untouched
        step_b = rule.step(event, state_b)
        assert (step_a.fired, step_a.suppressed) == (step_b.fired, step_b.suppressed)
        state_a = step_a.state
        state_b = json.loads(json.dumps(step_b.state))  # what the engine's jsonb does
        assert state_a == state_b


def test_corrupted_state_starts_afresh_instead_of_raising():
    rule = stateful(
        "{ema: {of: score, window: 3, below: 100}, count: {within: 1h, at_least: 1}, "
        "new: {of: tag2}, min: {of: score, within: 1h, below: 1000}}",
        throttle="{max: 3, within: 1h}",
    )
    for garbage in [
        {"when": 5},
        {
            "when": {
                "ema": {"ema": "x"},
                "count": {"times": "no"},
                "new": {"seen": [1, None]},
                "min": {"samples": [[1]]},
            },
            "throttle": {"last": "x", "fired": [None]},
        },
        [],
        "x",
    ]:
        step = rule.step(ev(10, score=5, tag2="a"), garbage)
        assert step.fired


def test_hostile_event_values_never_raise():
    rule = stateful(
        "{ema: {of: score, window: 3, below: 100}, change: {of: tag1}, "
        "sum: {of: value, within: 1h, above: 0}}",
        throttle="{cooldown: 1m}",
    )
    for value in [None, "x", [1], {"a": 1}, float("nan"), float("inf"), True, object()]:
        step = rule.step({"timestamp": value, "score": value, "tag1": value, "value": value}, None)
        assert not step.fired
        json.dumps(step.state)

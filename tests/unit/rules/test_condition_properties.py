"""Property tests: each stateful condition against a naive reference over random streams,
with the state saved to JSON and restored at random points (what a restart does)."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.rules.rule_helpers import ACTION, one_rule

WITHIN = 600
values = st.one_of(st.none(), st.integers(0, 100), st.floats(0, 100, allow_nan=False))
streams = st.lists(
    st.tuples(st.integers(0, 400), values, st.booleans()),  # (time step, value, restart here)
    max_size=60,
)


def rule_for(when: str, throttle: str | None = None):
    extra = f"\nthrottle: {throttle}" if throttle else ""
    return one_rule(f"id: p\nwhen: {when}{extra}\n{ACTION}")


def run_engine(rule, stream, field="score"):
    """Fire flags from Rule.step, restoring state through JSON where the stream says so."""
    state, fired, now = None, [], 1_000
    for step_s, value, restart in stream:
        now += step_s
        if restart and state is not None:
            state = json.loads(json.dumps(state))
        step = rule.step({"timestamp": now, field: value}, state)
        state = step.state
        fired.append(step.fired)
    return fired


def times_and_values(stream):
    now, out = 1_000, []
    for step_s, value, _ in stream:
        now += step_s
        out.append((now, value))
    return out


@settings(max_examples=150, deadline=None)
@given(streams, st.integers(1, 20), st.integers(0, 100))
def test_ema_matches_reference(stream, window, below):
    alpha = 2 / (window + 1)
    ema, samples, expected = None, 0, []
    for _, value in times_and_values(stream):
        if value is None:
            expected.append(False)
            continue
        ema = value if ema is None else alpha * value + (1 - alpha) * ema
        samples += 1
        expected.append(samples >= 2 and ema < below)
    when = f"{{ema: {{of: score, window: {window}, below: {below}, min_samples: 2}}}}"
    assert run_engine(rule_for(when), stream) == expected


@settings(max_examples=150, deadline=None)
@given(streams, st.integers(1, 5), st.booleans())
def test_count_matches_reference(stream, at_least, reset):
    expected, last_reset = [], -1
    events = times_and_values(stream)
    for i, (now, _) in enumerate(events):
        window = [
            t for j, (t, _) in enumerate(events[: i + 1]) if j > last_reset and t > now - WITHIN
        ]
        holds = len(window) >= at_least
        expected.append(holds)
        if holds and reset:
            last_reset = i
    flag = "true" if reset else "false"
    when = f"{{count: {{within: {WITHIN}s, at_least: {at_least}, reset_on_fire: {flag}}}}}"
    assert run_engine(rule_for(when), stream) == expected


@settings(max_examples=150, deadline=None)
@given(streams)
def test_change_matches_reference(stream):
    seen = [v for _, v in times_and_values(stream)]
    expected = []
    for i, value in enumerate(seen):
        earlier = [v for v in seen[:i] if v is not None]
        expected.append(
            value is not None
            and bool(earlier)
            and (earlier[-1] != value or type(earlier[-1]) is not type(value))
        )
    assert run_engine(rule_for("{change: {of: score}}"), stream) == expected


@settings(max_examples=150, deadline=None)
@given(streams, st.integers(1, 4))
def test_new_matches_reference(stream, cap):
    remembered: list = []
    expected = []
    for _, value in times_and_values(stream):
        key = None if value is None else json.dumps(value)
        is_new = key is not None and key not in remembered
        expected.append(is_new)
        if is_new:
            remembered = [*remembered, key][-cap:]
    when = f"{{new: {{of: score, max_remembered: {cap}}}}}"
    assert run_engine(rule_for(when), stream) == expected


AGGREGATES = {
    "avg": lambda xs: math.fsum(xs) / len(xs),
    "sum": math.fsum,
    "min": min,
    "max": max,
}


@settings(max_examples=100, deadline=None)
@given(streams, st.sampled_from(sorted(AGGREGATES)), st.integers(0, 200))
def test_window_aggregates_match_reference(stream, name, at_least):
    events = times_and_values(stream)
    expected = []
    for i, (now, value) in enumerate(events):
        if value is None:
            expected.append(False)
            continue
        window = [v for t, v in events[: i + 1] if v is not None and t > now - WITHIN]
        expected.append(AGGREGATES[name](window) >= at_least)
    when = f"{{{name}: {{of: score, within: {WITHIN}s, at_least: {at_least}}}}}"
    assert run_engine(rule_for(when), stream) == expected


@settings(max_examples=100, deadline=None)
@given(streams, st.integers(1, 900), st.integers(1, 3))
def test_throttle_matches_reference(stream, cooldown, max_firings):
    events = times_and_values(stream)
    expected, fired_at = [], []
    for now, value in events:
        holds = value is not None and value >= 50
        allowed = (
            holds
            and (not fired_at or now - fired_at[-1] >= cooldown)
            and len([t for t in fired_at if t > now - 3600]) < max_firings
        )
        if allowed:
            fired_at.append(now)
        expected.append(allowed)
    rule = rule_for(
        "{ema: {of: score, alpha: 1, at_least: 50}}",  # holds iff this score >= 50
        f"{{cooldown: {cooldown}s, max: {max_firings}, within: 1h}}",
    )
    assert run_engine(rule, stream) == expected

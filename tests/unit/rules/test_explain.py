"""rules.explain: each step's verdict names what it saw, and agrees with Rule.step."""

from __future__ import annotations

from typing import Any

from rules.explain import BLOCK, INFO, PASS, compact_state, explain_grouping, simulate
from tests.unit.rules.rule_helpers import ACTION, one_rule

T = 1_764_000_000


def feedback(**fields: Any) -> dict[str, Any]:
    return {"registry": "reputation", "event_type": "NewFeedback", "timestamp": T, **fields}


def steps(rule: Any, event: dict[str, Any], state: Any = None, ceiling: Any = None) -> dict:
    simulation = simulate(rule, event, state, ceiling, rule.document.get("where"))
    return {v.step: v for v in simulation.verdicts}


def test_where_names_every_failing_matcher_with_its_values() -> None:
    rule = one_rule(
        f"""
        id: r
        on: {{registry: reputation}}
        where: {{score: {{ge: 10, lt: 50}}, tag1: {{in: [a, b]}}, agent_id: 7}}
        {ACTION}
        """
    )
    where = steps(rule, feedback(score=70, tag1="a", agent_id=8))["where"]
    assert where.outcome == BLOCK
    assert where.values["failed"] == [
        {
            "path": "where.score.lt",
            "field": "score",
            "operator": "lt",
            "expected": 50,
            "actual": 70,
        },
        {
            "path": "where.agent_id",
            "field": "agent_id",
            "operator": "eq",
            "expected": 7,
            "actual": 8,
        },
    ]
    assert where.summary == (
        "fails: where.score.lt: score is 70, expected lt 50;"
        " where.agent_id: agent_id is 8, expected eq 7"
    )
    assert steps(rule, feedback(score=20, tag1="b", agent_id=7))["where"].outcome == PASS


def test_where_combinators_say_which_branch_failed() -> None:
    rule = one_rule(
        f"""
        id: r
        where:
          any: [{{score: {{lt: 10}}}}, {{tag1: urgent}}]
          not: {{agent_id: 3}}
        {ACTION}
        """
    )
    failed = steps(rule, feedback(score=50, tag1="calm", agent_id=3))["where"].values["failed"]
    assert [f["path"] for f in failed] == ["where.any", "where.not"]
    assert failed[0]["message"] == "none of its 2 alternatives holds"
    assert [a[0]["actual"] for a in failed[0]["alternatives"]] == [50, "calm"]
    assert failed[1]["fields"] == {"agent_id": 3}


def test_on_mismatch_stops_before_where() -> None:
    rule = one_rule(f"id: r\non: {{registry: identity}}\nwhere: {{agent_id: 1}}\n{ACTION}")
    found = steps(rule, feedback(agent_id=2))
    assert list(found) == ["on"]
    assert (
        found["on"].summary == "does not match: registry is 'reputation', the rule wants 'identity'"
    )


def test_count_shows_the_count_in_window_and_what_it_needs() -> None:
    rule = one_rule(f"id: r\nper: agent_id\nwhen: {{count: {{within: 1h, at_least: 3}}}}\n{ACTION}")
    state = {"when": {"count": {"times": [T - 7200, T - 60]}}}
    count = steps(rule, feedback(agent_id=1), state)["when.count"]
    assert count.outcome == BLOCK
    assert count.values["value"] == 2  # the old entry left the window
    assert count.values["settings"] == {"within_s": 3600, "at_least": 3, "reset_on_fire": False}
    assert count.values["state_after"] == {"times": [T - 60, T]}
    assert "needs at_least 3" in count.summary


def test_throttle_verdicts_agree_with_the_step() -> None:
    rule = one_rule(f"id: r\nthrottle: {{max: 2, within: 1h}}\n{ACTION}")
    full = {"throttle": {"last": T - 10, "fired": [T - 20, T - 10]}}
    simulation = simulate(rule, feedback(), full, None, None)
    throttle = {v.step: v for v in simulation.verdicts}["throttle"]
    assert simulation.step is not None and simulation.step.suppressed
    assert throttle.outcome == BLOCK
    assert throttle.summary == "suppressed: 2 firing(s) within 3600s; max 2"
    assert throttle.values["firings_in_window"] == 2
    free = simulate(rule, feedback(), {"throttle": {"fired": [T - 7200]}}, None, None)
    assert free.passed and free.step is not None and free.step.fired


def test_an_untrusted_timestamp_is_said_to_advance_nothing() -> None:
    rule = one_rule(
        f"id: r\nthrottle: {{cooldown: 1m}}\nwhen: {{count: {{within: 1h, at_least: 1}}}}\n{ACTION}"
    )
    found = steps(rule, feedback(), None, T - 100)
    assert "no time advanced" in found["when.count"].summary
    assert found["when.count"].outcome == BLOCK


def test_long_stored_lists_are_shown_by_their_length_and_ends() -> None:
    times = list(range(100))
    assert compact_state({"times": times}) == {"times": {"entries": 100, "first": 0, "last": 99}}
    assert compact_state({"ema": 1.23456789}) == {"ema": 1.234568}


def test_a_grouped_rule_names_its_digest_group() -> None:
    rule = one_rule(f"id: r\ngroup: {{by: [agent_id], wait: 1m}}\n{ACTION}")
    verdict = explain_grouping(rule, feedback(agent_id=9))
    assert verdict is not None and verdict.outcome == INFO
    assert verdict.values["group"] == {"agent_id": 9}
    assert "group agent_id=9" in verdict.summary

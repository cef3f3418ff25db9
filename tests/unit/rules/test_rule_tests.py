"""The `tests:` runner: defaults, timestamps, pass/fail, renders, and the report text."""

from __future__ import annotations

from rules import evaluate_stream, format_rule_test_report, run_rule_tests
from rules.index import RuleIndex
from rules.testcase_specs import TEST_START_S
from tests.unit.rules.rule_helpers import errors_of, load

RULE = """\
rules:
  - id: low-score
    on: {chain_id: [84532, 1], registry: reputation, event_type: NewFeedback}
    where: {score: {lt: 50}}
    per: agent_id
    throttle: {cooldown: 1m}
    actions:
      - name: hook
        rest: {url: 'http://127.0.0.1:9/hook', body: {score: "{{ event.score }}"}}
      - telegram: {chat_id: 1, text: "agent {{ event.agent_id }} at {{ fired_at }}"}
    tests:
      - name: good
        events:
          - {agent_id: 1, score: 10}
          - {agent_id: 1, score: 20}
          - {agent_id: 1, score: 30, timestamp: "+60"}
          - {agent_id: 1, score: 90}
        fires: [0, 2]
        renders:
          - {firing: 1, action: hook, contains: '"score": 30'}
          - {firing: 0, action: 1, contains: ["agent 1", "2026-01-01T00:00:00+00:00"]}
      - name: wrong
        events:
          - {agent_id: 1, score: 10}
          - {agent_id: 2, score: 10}
          - {agent_id: 3, score: 99, chain_id: 5}
        fires: [0, 2]
        renders:
          - {firing: 0, contains: "nope"}
          - {firing: 5, contains: "x"}
"""


def test_events_get_defaults_and_timestamps():
    (rule,) = load(RULE).rules
    good = rule.tests[0]
    assert [e["timestamp"] for e in good.events] == [
        TEST_START_S,
        TEST_START_S + 1,
        TEST_START_S + 61,
        TEST_START_S + 62,
    ]
    assert good.events[0]["chain_id"] == 84532
    assert good.events[0]["registry"] == "reputation"
    assert good.events[0]["event_type"] == "NewFeedback"
    assert rule.tests[1].events[2]["chain_id"] == 5


def test_pass_fail_and_report():
    (rule,) = load(RULE).rules
    results = run_rule_tests([rule])
    assert [(r.name, r.passed, r.actual_fires) for r in results] == [
        ("good", True, [0, 2]),
        ("wrong", False, [0, 1]),
    ]
    assert format_rule_test_report(results) == "\n".join(
        [
            "PASS rules/test.yaml:12 rule 'low-score': good",
            "FAIL rules/test.yaml:22 rule 'low-score': wrong",
            "    expected fires: [0, 2]",
            "    actual fires:   [0, 1]",
            "    - did not fire on: [2]",
            "    + fired unexpectedly on: [1]",
            "    renders: firing 0, action 0: output does not contain 'nope'; it was "
            "'{\"score\": 10}'",
            "    renders: firing 5, action 0: the rule fired only 2 time(s)",
            "1 passed, 1 failed",
        ]
    )


def test_renders_with_unset_variable_is_a_message():
    text = RULE.replace("'http://127.0.0.1:9/hook'", "'${HOOK:-http://x}'")
    (rule,) = load(text).rules
    assert run_rule_tests([rule])[0].passed


def test_bad_tests_blocks_are_load_errors():
    text = """\
rules:
  - id: t
    actions: [{rest: {url: 'http://x'}}]
    tests:
      - name: a
        events: [{scroe: 1}, {timestamp: "-5"}]
        fires: [0, 7]
        renders: [{action: 3, contains: x}]
      - {events: [], fires: []}
"""
    assert errors_of(text) == [
        "rules/test.yaml:6 rule 't': tests[0].events[0].scroe is not an event field "
        "(did you mean 'score'?)",
        "rules/test.yaml:6 rule 't': tests[0].events[1].timestamp must be unix seconds or '+N' "
        "seconds after the previous event (got '-5')",
        "rules/test.yaml:7 rule 't': tests[0].fires index 7 is past the last event (1)",
        "rules/test.yaml:8 rule 't': tests[0].renders[0].action must be an action index (0..0) "
        "or name (got 3)",
        "rules/test.yaml:9 rule 't': tests[1] needs 'name'",
    ]


def test_evaluate_stream_yields_suppressed_firings_and_keeps_state():
    (rule,) = load(RULE).rules
    states: dict = {}
    events = [dict(e) for e in rule.tests[0].events]
    firings = list(evaluate_stream(RuleIndex([rule]), events, states, fired_at=lambda e: "now"))
    assert [(f.event_index, f.step.fired, f.step.suppressed) for f in firings] == [
        (0, True, False),
        (1, False, True),
        (2, True, False),
    ]
    assert firings[0].group == {"agent_id": 1} and firings[0].group_key == "[1]"
    assert firings[0].context["fired_at"] == "now"
    assert states == {
        ("low-score", "[1]"): {"when": {}, "throttle": {"last": TEST_START_S + 61, "fired": []}}
    }

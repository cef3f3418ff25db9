"""`when.absent` compiled and run in rule tests, and the `{advance: DURATION}` step."""

from __future__ import annotations

from rules import RuleIndex, evaluate_stream, run_rule_tests
from rules.absence import absence_event_id
from rules.model import Advance
from rules.testcase_specs import TEST_START_S
from rules.testing import run_test_steps
from tests.unit.rules.rule_helpers import errors_of, load, one_rule

QUIET = """
id: quiet
on: {registry: reputation, event_type: NewFeedback}
per: agent_id
when: {absent: {for: 10m}}
actions:
  - telegram:
      chat_id: 1
      text: "{{ group.agent_id }} quiet {{ absent.for }} since {{ absent.last_seen_at }}"
"""


def test_an_absence_rule_never_fires_on_an_event():
    rule = one_rule(QUIET)
    assert rule.absence is not None and rule.absence.for_s == 600
    assert not rule.stateful
    events = [{"id": "e", "registry": "reputation", "event_type": "NewFeedback", "agent_id": 1}]
    assert list(evaluate_stream(RuleIndex([rule]), events, {})) == []


def steps(*items):
    """Events and advances: an int is an agent's event (timestamp in the test's clock is
    the previous + 1), a string an advance."""
    clock, out = TEST_START_S - 1, []
    for item in items:
        if isinstance(item, str):
            seconds = int(item)
            clock = max(clock, TEST_START_S) + seconds if not out else clock + seconds
            out.append(Advance(seconds, clock))
        else:
            clock += 1
            out.append(
                {
                    "id": f"e{len(out)}",
                    "registry": "reputation",
                    "event_type": "NewFeedback",
                    "agent_id": item,
                    "timestamp": clock,
                }
            )
    return out


def fired(rule, *items):
    return [position for position, _ in run_test_steps(rule, steps(*items))]


def test_fires_once_per_quiet_period_and_again_only_after_being_seen_again():
    rule = one_rule(QUIET)
    assert fired(rule, 1, "599") == []
    assert fired(rule, 1, "600") == [1]
    assert fired(rule, 1, "600", "6000") == [1]
    assert fired(rule, 1, "600", 1, "300", "300") == [1, 4]
    # Each group on its own clock.
    assert fired(rule, 1, "300", 2, "300", "300") == [3, 4]


def test_context_names_the_group_the_period_and_the_last_event():
    rule = one_rule(QUIET)
    [(_, context)] = run_test_steps(rule, steps(5, "600"))
    assert context["group"] == {"agent_id": 5}
    assert context["event"]["agent_id"] == 5
    assert context["absent"] == {"for": "10m", "last_seen_at": "2026-01-01T00:00:00.000+00:00"}
    assert context["fired_at"] == "2026-01-01T00:10:00.000+00:00"
    assert context["event"]["id"] == absence_event_id("[5]", TEST_START_S)


def test_expected_groups_are_watched_from_the_start():
    rule = one_rule(QUIET.replace("{for: 10m}", "{for: 10m, expect: [{agent_id: 9}]}"))
    [(position, context)] = run_test_steps(rule, steps("600"))
    assert position == 0
    assert context["group"] == {"agent_id": 9}
    assert context["absent"]["last_seen_at"] is None
    # Seen: its own period from then on.
    assert fired(rule, 9, "599") == []


def test_advance_steps_in_a_rules_tests_block():
    result = load(
        """
        rules:
          - id: quiet
            on: {registry: reputation, event_type: NewFeedback}
            per: agent_id
            when: {absent: {for: 1h}}
            actions: [{telegram: {chat_id: 1, text: "{{ absent.last_seen_at }}"}}]
            tests:
              - name: t
                events: [{agent_id: 1}, {advance: 2h}, {agent_id: 1}, {advance: 1h}]
                fires: [1, 3]
                renders: [{firing: 1, contains: "2026-01-01T02:00:01"}]
        """
    )
    assert result.errors == []
    [test] = result.rules[0].tests
    assert test.events[1] == Advance(7200, TEST_START_S + 7200)
    assert test.events[2]["timestamp"] == TEST_START_S + 7201  # the clock moved on
    [outcome] = run_rule_tests(result.rules)
    assert outcome.passed, outcome.messages


def test_advance_moves_no_clock_for_a_plain_rule():
    result = load(
        """
        rules:
          - id: plain
            on: {registry: reputation, event_type: NewFeedback}
            actions: [{telegram: {chat_id: 1, text: hi}}]
            tests:
              - name: t
                events: [{advance: 1h}, {agent_id: 1}]
                fires: [1]
        """
    )
    assert result.errors == []
    [outcome] = run_rule_tests(result.rules)
    assert outcome.passed
    assert result.rules[0].tests[0].events[1]["timestamp"] == TEST_START_S + 3601


def test_mistakes_read_like_advice():
    errors = errors_of(
        """
        rules:
          - id: a
            on: {registry: reputation}
            per: agent_id
            when: {absent: {for: 0s, expect: [{agent_idd: 1}, {agent_id: [1]}, 3]}}
            throttle: {cooldown: 1m}
            actions: [{telegram: {chat_id: 1, text: "{{ absent.since }}"}}]
          - id: b
            on: {registry: reputation}
            when: {absent: {for: 1h}, count: {within: 1h, at_least: 2}}
            actions: [{telegram: {chat_id: 1, text: x}}]
          - id: c
            on: {registry: reputation}
            when: {absent: {for: 1h, expect: [{agent_id: 1}]}}
            actions: [{telegram: {chat_id: 1, text: "{{ absent.for }}"}}]
          - id: d
            on: {registry: reputation}
            actions: [{telegram: {chat_id: 1, text: "{{ absent.for }}"}}]
            tests:
              - {name: t, events: [{advance: soon}, {advance: 1h, agent_id: 1}], fires: []}
        """
    )
    text = "\n".join(errors)
    assert "rule 'a': throttle cannot be used with when.absent" in text
    assert "rule 'a': when.absent.for must be a positive duration (got '0s')" in text
    assert (
        "when.absent.expect[0] must give exactly the per fields (agent_id); got agent_idd" in text
    )
    assert "when.absent.expect[1].agent_id must be a number or a string (got [1])" in text
    assert "when.absent.expect[2] must be a mapping of the per fields (got 3)" in text
    assert "template uses 'absent.since', which does not exist" in text
    assert "rule 'b': when absent cannot be combined with other conditions (got count)" in text
    assert "rule 'c': when.absent.expect needs per" in text
    assert "rule 'd': actions[0].telegram.text template uses 'absent', which is not in" in text
    assert "rule 'd': tests[0].events[0].advance must be a duration like 30s" in text
    assert "tests[0].events[1] an advance step has no event fields (got agent_id)" in text
    assert all(e.startswith("rules/test.yaml:") for e in errors)

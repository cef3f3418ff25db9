"""Rule tests of digests and resolved notices over time: `advance`, `digests`, `resolves`,
and `renders` of the digest holding a firing or of a resolved notice."""

from __future__ import annotations

import jsonschema

from rules import format_rule_test_report, rule_file_schema, run_rule_tests
from rules.testcase_specs import TEST_START_S
from rules.testing import replay_test_steps
from rules.yaml_source import parse_yaml
from tests.unit.rules.rule_helpers import errors_of, load

DIGEST = """\
rules:
  - id: low
    on: {registry: reputation, event_type: NewFeedback}
    where: {score: {lt: 30}}
    group: {by: [agent_id], wait: 30s, interval: 5m, max: 2}
    actions:
      - telegram:
          chat_id: 1
          text: >-
            {{ count }} for {{ group.agent_id }} at {{ fired_at }}:
            {% for f in firings %}{{ f.event.score }} {% endfor %}+{{ more }}
    tests:
      - name: two bursts ten minutes apart are two digests
        events:
          - {agent_id: 7, score: 1}
          - {agent_id: 7, score: 2}
          - {agent_id: 7, score: 3}
          - {advance: 10m}
          - {agent_id: 7, score: 4}
        fires: [0, 1, 2, 4]
        digests: 2
        renders:
          - {firing: 1, contains: "3 for 7 at 2026-01-01T00:00:30.000+00:00: 1 2 +1"}
          - {firing: 3, contains: "1 for 7 at 2026-01-01T00:10:33.000+00:00: 4 +0"}
"""


def _rule(text: str):
    result = load(text)
    assert [str(e) for e in result.errors] == []
    (rule,) = result.rules
    return rule


def test_bursts_separated_by_an_advance_render_as_their_own_digests():
    rule = _rule(DIGEST)
    [result] = run_rule_tests([rule])
    assert result.passed, format_rule_test_report([result])


def test_a_digest_waits_for_interval_and_takes_what_came_meanwhile():
    rule = _rule(DIGEST)
    steps = [
        {**rule.tests[0].events[0], "timestamp": TEST_START_S},
        {**rule.tests[0].events[0], "id": "b", "timestamp": TEST_START_S + 40},
        {**rule.tests[0].events[0], "id": "c", "timestamp": TEST_START_S + 200},
        {**rule.tests[0].events[0], "id": "d", "timestamp": TEST_START_S + 331},
    ]
    digests = replay_test_steps(rule, steps).notices.digests
    # Sent at 30 s (wait); the next not before 30 s + 5 m: firings 1 and 2 wait for it,
    # and firing 3 comes after it was sent, so it starts a third digest, sent at the end.
    assert [(d.firings, d.sent_at - TEST_START_S, d.position) for d in digests] == [
        ((0,), 30, 1),
        ((1, 2), 330, 3),
        ((3,), 630, None),
    ]


def test_what_is_pending_at_the_end_is_sent_and_digests_are_counted():
    text = DIGEST.replace("digests: 2", "digests: 3").replace("{advance: 10m}", "{agent_id: 8}")
    [result] = run_rule_tests([_rule(text)])
    assert not result.passed
    assert result.messages[0] == (
        "digests: expected 3 digest(s), 1 were sent (firings [0, 1, 2, 3])"
    )


RESOLVE = """\
rules:
  - id: low-min
    on: {registry: reputation, event_type: NewFeedback}
    per: agent_id
    when:
      min: {of: score, within: 1h, below: 20}
    throttle: {cooldown: 30m}
    actions:
      - rest: {url: 'http://127.0.0.1:9/hook', body: {status: firing}}
    resolve:
      after: 2h
      actions:
        - name: back
          rest:
            url: 'http://127.0.0.1:9/hook'
            body: >-
              {{ group.agent_id }} fired {{ alert.firings }} from {{ alert.fired_at }}
              to {{ alert.resolved_at }} by {{ event.id }}
    tests:
      - name: resolved by the next event not meeting when, not by a throttled one
        events:
          - {agent_id: 4, score: 5}
          - {agent_id: 4, score: 6}
          - {agent_id: 5, score: 90, timestamp: "+4000"}
          - {agent_id: 4, score: 90}
          - {agent_id: 4, score: 95}
        fires: [0]
        resolves: [3]
        renders:
          - resolve: 0
            action: back
            contains: "4 fired 1 from 2026-01-01T00:00:00.000+00:00 to 2026-01-01T01:06:42.000"
      - name: resolved when after passes without a firing
        events:
          - {agent_id: 4, score: 5}
          - {advance: 1h}
          - {advance: 59m}
          - {advance: 1m}
          - {advance: 5h}
        fires: [0]
        resolves: [3]
        renders:
          - {resolve: 0, contains: "to 2026-01-01T02:00:00.000+00:00 by test-0"}
      - name: after passes before an event; the event then opens a new alert
        events:
          - {agent_id: 4, score: 5}
          - {agent_id: 4, score: 3, timestamp: "+7201"}
          - {agent_id: 4, score: 90, timestamp: "+3601"}
        fires: [0, 1]
        resolves: [1, 2]
"""


def test_resolves_on_events_and_on_time_passing():
    results = run_rule_tests([_rule(RESOLVE)])
    assert all(r.passed for r in results), format_rule_test_report(results)


def test_wrong_resolves_are_reported_with_where_they_were_sent():
    text = RESOLVE.replace("resolves: [3]", "resolves: [2]", 1).replace(
        "resolve: 0", "resolve: 1", 1
    )
    result = run_rule_tests([_rule(text)])[0]
    assert result.messages == [
        "resolves: expected resolved notices at steps [2], they were sent at [3]",
        "renders: resolve 1, action 0: only 1 resolved notice(s) were sent",
    ]


def test_mistaken_resolves_digests_and_renders_are_load_errors():
    text = """\
rules:
  - id: t
    on: {registry: reputation}
    actions: [{rest: {url: 'http://x'}}]
    tests:
      - name: a
        events: [{score: 1}, {advance: 1h}]
        fires: [0]
        resolves: [1]
        digests: 1
        renders:
          - {resolve: 0, contains: x}
"""
    assert errors_of(text) == [
        "rules/test.yaml:9 rule 't': tests[0].resolves needs the rule to have `resolve:` "
        "(there is nothing to resolve)",
        "rules/test.yaml:10 rule 't': tests[0].digests needs the rule to have `group:` "
        "(its firings are not digested)",
        "rules/test.yaml:12 rule 't': tests[0].renders[0].resolve needs the rule to have "
        "`resolve:` (there is nothing to resolve)",
    ]
    resolving = RESOLVE.replace("resolves: [3]\n", "resolves: [9, -1]\n        digests: 1\n", 1)
    resolving = resolving.replace("action: back", "firing: 0")
    resolving = resolving.replace("{resolve: 0, contains", "{resolve: 0, action: 1, contains")
    assert errors_of(resolving) == [
        "rules/test.yaml:28 rule 'low-min': tests[0].resolves must be a list of 0-based step "
        "indexes (got [9, -1])",
        "rules/test.yaml:29 rule 'low-min': tests[0].digests needs the rule to have `group:` "
        "(its firings are not digested)",
        "rules/test.yaml:31 rule 'low-min': tests[0].renders[0] renders either a firing or a "
        "resolved notice: give firing or resolve",
        "rules/test.yaml:44 rule 'low-min': tests[1].renders[0].action must be a resolve "
        "action index (0..0) or name (got 1)",
    ]
    past = RESOLVE.replace("resolves: [3]\n", "resolves: [5]\n", 1)
    assert errors_of(past) == [
        "rules/test.yaml:28 rule 'low-min': tests[0].resolves index 5 is past the last step (4)"
    ]
    counted = DIGEST.replace("digests: 2", "digests: two")
    assert errors_of(counted) == [
        "rules/test.yaml:21 rule 'low': tests[0].digests must be the number of digests the "
        "test sends (got 'two')"
    ]


def test_the_schema_knows_resolves_digests_and_rendering_a_resolve():
    validator = jsonschema.Draft7Validator(rule_file_schema())
    assert list(validator.iter_errors(parse_yaml(RESOLVE).data)) == []
    assert list(validator.iter_errors(parse_yaml(DIGEST).data)) == []
    both = RESOLVE.replace("action: back", "firing: 0")
    negative = DIGEST.replace("digests: 2", "digests: -1")
    assert list(validator.iter_errors(parse_yaml(both).data))
    assert list(validator.iter_errors(parse_yaml(negative).data))

"""The shipped JSON Schema: valid draft-07, and refuses what the loader refuses structurally."""

from __future__ import annotations

import jsonschema
import pytest

from rules import load_rules_text, rule_file_schema
from rules.yaml_source import parse_yaml

FULL_RULE = """
rules:
  - id: full
    description: d
    enabled: false
    owner: ops
    on: {chain_id: [1, 8453], registry: reputation, event_type: NewFeedback}
    where: [{agent_id: 42, score: {lt: 60}}, {any: [{tag1: a}, {not: {tag2: b}}]}]
    per: [agent_id, client_address]
    when:
      - ema: {of: score, window: 10, below: 60}
      - count: {within: 1h, at_least: 2, reset_on_fire: true}
    throttle: {cooldown: 30m, max: 5, within: 1d}
    actions:
      - name: t
        retry: {attempts: 3, backoff: 2s, max_backoff: 10m}
        telegram: {chat_id: "-100", text: "{{ event.score }}", parse_mode: MarkdownV2}
      - rest: {url: "http://x", method: PUT, headers: {A: b}, body: {a: [1]}, timeout: 5s,
               secret: s, expect_status: [200, 202]}
      - mcp: {agent: "{{ event.agent_id }}", tool: t, arguments: {a: 1}, verify_file_hash: true}
    tests:
      - name: n
        events: [{score: 1, timestamp: "+5"}]
        fires: [0]
        renders: [{firing: 0, action: t, contains: ["1"]}]
"""


def test_schema_is_valid_draft_07():
    schema = rule_file_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert (
        "10,000"
        in schema["definitions"]["rule"]["properties"]["when"]["oneOf"][0]["properties"]["count"][
            "description"
        ]
    )


@pytest.mark.parametrize(
    "rule",
    [
        "{id: a, actions: [{rest: {url: x}}], wehre: {}}",
        "{id: A, actions: [{rest: {url: x}}]}",
        "{id: a, actions: []}",
        "{id: a, actions: [{rest: {url: x}, telegram: {chat_id: 1, text: t}}]}",
        "{id: a, actions: [{rest: {url: x}}], when: {ema: {of: score, window: 3}}}",
        "{id: a, actions: [{rest: {url: x}}], throttle: {cooldown: 0s}}",
        "{id: a, actions: [{rest: {url: x}}], throttle: {max: 3}}",
        "{id: a, actions: [{rest: {url: x}}], where: {agnet_id: 1}}",
        "{id: a, actions: [{rest: {url: x}}], where: {score: {lte: 1}}}",
        "{id: a, actions: [{rest: {url: x}}], on: {registry: nope}}",
        "{id: a, actions: [{telegram: {chat_id: 1, text: t, parse_mode: html}}]}",
    ],
)
def test_schema_refuses_structural_mistakes(rule):
    data = parse_yaml(f"rules: [{rule}]").data
    assert list(jsonschema.Draft7Validator(rule_file_schema()).iter_errors(data))


def test_schema_accepts_a_full_rule():
    data = parse_yaml(FULL_RULE).data
    assert list(jsonschema.Draft7Validator(rule_file_schema()).iter_errors(data)) == []


def test_the_loader_accepts_the_full_rule_too():
    result = load_rules_text(FULL_RULE, "full.yaml", environ={})
    assert [str(e) for e in result.errors] == []
    (rule,) = result.rules
    assert not rule.enabled and rule.per == ("agent_id", "client_address")
    assert [a.kind for a in rule.actions] == ["telegram", "rest", "mcp"]
    assert rule.actions[0].retry.attempts == 3 and rule.actions[0].retry.max_backoff_s == 600

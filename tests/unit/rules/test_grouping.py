"""`group` and `resolve`: compiled specs, defaults, advice-like errors, template names."""

from __future__ import annotations

from rules import build_context, render_action
from rules.grouping import digest_context, resolve_context
from tests.unit.rules.rule_helpers import errors_of, one_rule

HEAD = """\
rules:
  - id: digest-me
    on: {registry: reputation}
    per: agent_id
"""
REST = "    actions: [{rest: {url: 'http://127.0.0.1:9/hook'}}]\n"


def test_group_defaults_to_the_rules_per_and_documented_times():
    rule = one_rule(
        """
        id: d
        per: agent_id
        group: {}
        actions: [{rest: {url: 'http://127.0.0.1:9/hook'}}]
        """
    )
    assert rule.grouping is not None
    assert rule.grouping.by == ("agent_id",)
    assert (rule.grouping.wait_s, rule.grouping.interval_s, rule.grouping.max_firings) == (
        30,
        300,
        50,
    )
    assert rule.context_fields is None  # firings keep whole rows for `firings[i].event`


def test_group_key_folds_hex_and_due_time_respects_the_interval():
    rule = one_rule(
        """
        id: d
        group: {by: [client_address], wait: 10s, interval: 1m}
        actions: [{rest: {url: 'http://127.0.0.1:9/hook'}}]
        """
    )
    spec = rule.grouping
    assert spec is not None
    assert spec.key({"client_address": "0xAB"}) == spec.key({"client_address": "0xab"})
    assert spec.due_at(1000.0, None) == 1010.0
    assert spec.due_at(1000.0, 980.0) == 1040.0  # 60 s after the last digest
    assert spec.due_at(1000.0, 900.0) == 1010.0  # interval long past: `wait` again


def test_group_mistakes_name_the_file_line_rule_and_what_was_expected():
    errors = errors_of(HEAD + "    group: {by: [agnet_id], wait: 0s, max: 0, every: 1m}\n" + REST)
    assert len(errors) == 4, errors
    assert all(e.startswith("rules/test.yaml:5 rule 'digest-me': group.") for e in errors)
    text = "\n".join(errors)
    assert "group.by[0] must name an event field (got 'agnet_id')" in text
    assert "did you mean 'agent_id'" in text
    assert "group.wait must be a positive duration" in text
    assert "group.max must be a positive integer (got 0)" in text
    assert "group.every is not a known key" in text


def test_resolve_needs_when_and_actions():
    [error] = errors_of(
        HEAD + "    resolve: {actions: " + REST.split(": ", 1)[1].strip() + "}\n" + REST
    )
    assert error.startswith("rules/test.yaml:5 rule 'digest-me': resolve needs the rule to have")
    errors = errors_of(
        HEAD + "    when: {count: {within: 1h, at_least: 2}}\n    resolve: {after: 1h}\n" + REST
    )
    assert any("resolve needs 'actions'" in e for e in errors), errors


def test_template_names_are_checked_per_context():
    url = "'http://h/{{ alert.x }}'"
    body = HEAD + "    group: {by: agent_id}\n    actions: [{rest: {url: " + url + "}}]\n"
    [error] = errors_of(body)
    assert "template uses 'alert'" in error and "firings, count, more" in error
    body = (
        HEAD
        + "    when: {count: {within: 1h, at_least: 2}}\n"
        + "    resolve: {actions: [{rest: {url: 'http://h/{{ alert.fired }}/{{ count }}'}}]}\n"
        + REST
    )
    errors = errors_of(body)
    assert any("'alert.fired', which does not exist" in e for e in errors), errors
    assert any("template uses 'count'" in e for e in errors), errors


def test_digest_and_resolve_contexts_render():
    rule = one_rule(
        """
        id: d
        per: agent_id
        when: {count: {within: 1h, at_least: 1}}
        group: {by: [agent_id], max: 2}
        actions:
          - telegram:
              chat_id: "1"
              text: "{{ count }}: {% for f in firings %}{{ f.event.score }} {% endfor %}+{{ more }}"
        resolve:
          actions:
            - telegram: {chat_id: "1", text: "ok {{ group.agent_id }} after {{ alert.firings }}"}
        """
    )
    firings = [
        {
            k: v
            for k, v in build_context(rule, {"agent_id": 4, "score": s}, {}, {}, "t").items()
            if k in ("event", "state", "fired_at")
        }
        for s in (7, 8)
    ]
    context = digest_context({"id": "d"}, {"agent_id": 4}, firings, 5, "now")
    rendered = render_action("telegram", rule.actions[0].raw, context)
    assert rendered["text"] == "5: 7 8 +3"
    context = resolve_context({"id": "d"}, {"agent_id": 4}, {}, {"firings": 3}, "now")
    assert rule.resolve is not None
    rendered = render_action("telegram", rule.resolve.actions[0].raw, context)
    assert rendered["text"] == "ok 4 after 3"

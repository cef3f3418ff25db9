"""The rule key `on_retract: {actions: [...]}`: checked like `actions`, with `retracted_at`
in its templates, and rendered from the original firing's stored context."""

from __future__ import annotations

from rules import build_context, render_action
from rules.fields import EVENT_FIELDS
from tests.unit.rules.rule_helpers import errors_of, one_rule

ROW = {name: f"v-{name}" for name in EVENT_FIELDS} | {"chain_id": 8453, "timestamp": 1}

RULE = """
id: r
on: {registry: reputation}
actions: [{rest: {url: 'http://127.0.0.1:9/a', body: {score: '{{ event.score }}'}}}]
on_retract:
  actions:
    - rest:
        url: 'http://127.0.0.1:9/r'
        body: {uri: '{{ event.file_uri }}', at: '{{ retracted_at }}', was: '{{ fired_at }}'}
    - telegram: {chat_id: '1', text: 'gone: {{ event.id }}'}
"""


def test_on_retract_actions_compile_with_their_own_negative_indexes() -> None:
    rule = one_rule(RULE)
    assert [a.index for a in rule.actions] == [0]
    assert [(a.index, a.kind) for a in rule.on_retract] == [(-1, "rest"), (-2, "telegram")]


def test_the_stored_context_keeps_what_on_retract_reads_and_it_renders() -> None:
    rule = one_rule(RULE)
    # file_uri is read only by on_retract: a firing's context must still keep it.
    assert rule.context_fields is not None and "file_uri" in rule.context_fields
    context = build_context(rule, ROW, {}, {}, "2026-11-30T10:00:00.000+00:00")
    context["retracted_at"] = "2026-11-30T10:05:00.000+00:00"
    rendered = render_action("rest", rule.on_retract[0].raw, context)
    assert rendered["body"] == {
        "uri": "v-file_uri",
        "at": "2026-11-30T10:05:00.000+00:00",
        "was": "2026-11-30T10:00:00.000+00:00",
    }


def test_a_rule_without_on_retract_has_none() -> None:
    assert one_rule("id: r\nactions: [{rest: {url: 'http://127.0.0.1:9/a'}}]").on_retract == ()


def test_retracted_at_belongs_to_on_retract_only() -> None:
    errors = errors_of(
        """
        rules:
          - id: r
            actions: [{rest: {url: 'http://127.0.0.1:9/a', body: {at: '{{ retracted_at }}'}}}]
        """
    )
    assert len(errors) == 1
    assert "rules/test.yaml:4 rule 'r': actions[0].rest.body.at" in errors[0]
    assert "'retracted_at', which is not in the template context" in errors[0]


def test_mistakes_name_the_on_retract_path_and_line() -> None:
    errors = errors_of(
        """
        rules:
          - id: r
            actions: [{rest: {url: 'http://127.0.0.1:9/a'}}]
            on_retract:
              action: []
          - id: s
            actions: [{rest: {url: 'http://127.0.0.1:9/a'}}]
            on_retract:
              actions:
                - rest: {url: 'http://127.0.0.1:9/r', body: {x: '{{ evnt.id }}'}}
          - id: t
            actions: [{rest: {url: 'http://127.0.0.1:9/a'}}]
            on_retract: [{rest: {url: 'http://127.0.0.1:9/r'}}]
        """
    )
    assert any(
        "rule 'r': on_retract.action is not a known key" in e and "actions" in e for e in errors
    ), errors
    assert "rules/test.yaml:5 rule 'r': on_retract needs 'actions'" in errors
    assert any(
        "rules/test.yaml:11 rule 's': on_retract.actions[0].rest.body.x" in e
        and "(did you mean 'event'?)" in e
        and "retracted_at" in e
        for e in errors
    ), errors
    assert any("rule 't': on_retract must be a mapping with `actions`" in e for e in errors), errors


def test_on_retract_is_content_not_logic() -> None:
    """Editing on_retract must not reset the rule's state (the logic hash keys it)."""
    plain = one_rule("id: r\nactions: [{rest: {url: 'http://127.0.0.1:9/a'}}]")
    with_retract = one_rule(RULE.replace("on: {registry: reputation}\n", ""))
    assert plain.logic_hash == with_retract.logic_hash
    assert plain.content_hash != with_retract.content_hash

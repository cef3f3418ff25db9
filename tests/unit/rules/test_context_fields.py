"""A firing's stored context keeps only the event columns its actions read.

The context is written to action_results for every firing, so a 31-column row in each
one was most of the firing path's cost.  What matters to a user: every template renders
exactly as it would with the whole row, and an operator still sees which event it was.
"""

from __future__ import annotations

import pytest

from rules import build_context, render_action
from rules.fields import EVENT_FIELDS
from rules.template_check import CONTEXT_CORE_FIELDS
from tests.unit.rules.rule_helpers import one_rule

ROW = {name: f"v-{name}" for name in EVENT_FIELDS} | {
    "chain_id": 8453,
    "agent_id": 42,
    "score": 87,
    "value": 1.25,
    "timestamp": 1795600800,
}


def rule_with(kind: str, spec: str, extra: str = ""):
    return one_rule(f"id: r\n{extra}actions: [{{{kind}: {spec}}}]")


def context_of(rule, row=ROW):
    return build_context(rule, row, rule.group_values(row), {}, "T")


def test_only_the_columns_the_templates_look_up_are_kept():
    rule = rule_with(
        "telegram",
        "{chat_id: 1, text: \"{{ event.tag1 }} scored {{ event['score'] }}\"}",
    )
    event = context_of(rule)["event"]
    assert set(event) == {*CONTEXT_CORE_FIELDS, "tag1", "score"}
    assert event["tag1"] == "v-tag1" and event["score"] == 87
    assert event["id"] == "v-id" and event["chain_id"] == 8453  # the event is identifiable
    assert list(event) == [name for name in EVENT_FIELDS if name in event]  # stable order


def test_headers_urls_and_body_leaves_count_as_templates():
    rule = rule_with(
        "rest",
        "{url: 'http://x/{{ event.owner }}', headers: {X-T: '{{ event.tag2 }}'},"
        " body: {a: [1, '{{ event.file_uri }}']}}",
    )
    assert set(context_of(rule)["event"]) == {*CONTEXT_CORE_FIELDS, "owner", "tag2", "file_uri"}


def test_mcp_file_check_keeps_what_the_executor_reads():
    rule = rule_with("mcp", "{agent: '{{ event.agent_id }}', tool: t, verify_file_hash: true}")
    assert {"file_uri", "file_hash"} <= set(context_of(rule)["event"])


@pytest.mark.parametrize(
    "template",
    [
        "{{ event }}",
        "{{ event | tojson }}",
        "{{ event.get('tag1') }}",
        "{% for k, v in event.items() %}{{ k }}{% endfor %}",
        "{% set name = 'tag1' %}{{ event[name] }}",
        "{% set e = event %}{{ e.tag1 }}",
        "{{ [event] | length }}",
    ],
)
def test_any_other_use_of_event_keeps_the_whole_row(template):
    rule = rule_with("rest", f"{{url: 'http://x', body: {{t: \"{template}\"}}}}")
    assert rule.context_fields is None
    event = context_of(rule)["event"]
    assert set(event) == set(EVENT_FIELDS)


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("telegram", "{chat_id: '{{ event.agent_id }}', text: '{{ event.tag1 | upper }}'}"),
        ("telegram", "{chat_id: 1, text: '{% if event.score > 5 %}{{ event.owner }}{% endif %}'}"),
        ("rest", "{url: 'http://x', body: '{{ event.score * 2 }}'}"),
        ("rest", "{url: 'http://x', body: {v: '{{ event.value }}', s: '{{ event.score }}'}}"),
        ("rest", "{url: 'http://x', body: {all: '{{ event | tojson }}'}}"),
        ("mcp", "{url: 'http://x', tool: t, arguments: {s: '{{ event.metadata_value }}'}}"),
    ],
)
def test_projected_and_whole_row_contexts_render_the_same(kind, spec):
    rule = rule_with(kind, spec)
    whole = rule_with("rest", "{url: 'http://x', body: '{{ event }}'}")
    projected_context = context_of(rule)
    whole_context = context_of(whole)
    assert set(whole_context["event"]) == set(EVENT_FIELDS)
    action = rule.actions[0]
    assert render_action(kind, action.raw, projected_context) == render_action(
        kind, action.raw, whole_context
    )

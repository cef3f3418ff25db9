"""Templates: sandbox refusals, bounded work, escaping per parse mode, typed JSON leaves."""

from __future__ import annotations

import json
import math
import time
from decimal import Decimal

import pytest

from rules import TemplateRenderError, build_context, render_action
from rules.template_filters import escape_markdown_v2, explorer_link, short_address
from rules.templates import render_text
from tests.unit.rules.rule_helpers import one_rule

EVENT = {
    "chain_id": 84532,
    "agent_id": 42,
    "score": 55,
    "value": 1.5,
    "owner": "0xAbCdEf0123456789AbCdEf0123456789AbCdEf01",
    "tag1": "a<b>&c_*[x](y)~`>#+-=|{}.!\\",
    "timestamp": 1795600800,
}


# A rule whose template uses the whole row (`{{ event }}`): its context has every column,
# so the tests below can render any template against it.
WHOLE_ROW_ACTION = "actions: [{rest: {url: 'http://x', body: '{{ event }}'}}]"


@pytest.fixture
def context():
    rule = one_rule(
        "id: r\ndescription: d\nper: agent_id\nwhen: {ema: {of: score, window: 3, below: 99}}\n"
        + WHOLE_ROW_ACTION
    )
    step = rule.step(EVENT, None)
    return build_context(rule, EVENT, rule.group_values(EVENT), step.template_state, "T")


def test_context_converts_what_is_not_plain_json():
    # Rows from the engine are plain and taken as they are; anything else is still converted.
    rule = one_rule("id: r\n" + WHOLE_ROW_ACTION)
    odd = {**EVENT, "score": Decimal("55"), "value": math.nan, "tag2": ("a", 1)}
    context = build_context(rule, odd, {"k": Decimal("1.5")}, {"ema": math.inf}, "T")
    assert (context["event"]["score"], context["event"]["value"]) == (55, None)
    assert context["event"]["tag2"] == ["a", 1]
    assert (context["group"], context["state"]) == ({"k": 1.5}, {"ema": None})
    plain = build_context(rule, EVENT, {}, {}, "T")["event"]
    assert {k: plain[k] for k in EVENT} == EVENT
    assert plain["tag2"] is None  # every column is present


def test_context_is_json_and_complete(context):
    json.dumps(context)
    assert context["rule"] == {"id": "r", "description": "d", "owner": None, "labels": {}}
    assert context["group"] == {"agent_id": 42}
    assert context["state"] == {"ema": 55.0}
    assert context["event"]["tag2"] is None  # every column is present
    assert context["fired_at"] == "T"


def test_rest_typed_leaves_and_passthrough(context):
    spec = {
        "url": "https://h/{{ event.agent_id }}",
        "method": "PUT",
        "headers": {"X-Agent": "{{ event.agent_id }}"},
        "secret": "s",
        "body": {
            "score": "{{ event.score }}",
            "ok": "{{ event.score < 60 }}",
            "none": "{{ event.tag2 }}",
            "list": ["{{ [1, 2] }}", "{{ event.value }}", 3, None],
            "dict": "{{ {'a': event.agent_id} }}",
            "text": "score {{ event.score }}",
            "spaced": "  {{ event.score }}  ",
            "two": "{{ event.score }}{{ event.score }}",
        },
    }
    out = render_action("rest", spec, context)
    assert out["url"] == "https://h/42"
    assert out["method"] == "PUT" and out["secret"] == "s"
    assert out["headers"] == {"X-Agent": "42"}
    assert out["body"] == {
        "score": 55,
        "ok": True,
        "none": None,
        "list": [[1, 2], 1.5, 3, None],
        "dict": {"a": 42},
        "text": "score 55",
        "spaced": 55,
        "two": "5555",
    }


def test_mcp_renders_agent_tool_and_arguments(context):
    out = render_action(
        "mcp",
        {
            "agent": "{{ event.agent_id }}",
            "tool": "t",
            "token": "{{ raw }}",
            "arguments": {"a": "{{ event.score }}"},
        },
        context,
    )
    assert out == {"agent": "42", "tool": "t", "token": "{{ raw }}", "arguments": {"a": 55}}


def test_telegram_html_escapes_values_not_template_text(context):
    out = render_action("telegram", {"chat_id": 1, "text": "<b>{{ event.tag1 }}</b>"}, context)
    assert out["text"] == "<b>a&lt;b&gt;&amp;c_*[x](y)~`&gt;#+-=|{}.!\\</b>"


def test_telegram_markdown_v2_escapes_every_special_character(context):
    out = render_action(
        "telegram",
        {"chat_id": 1, "text": "*{{ event.tag1 }}* {{ event.value }}", "parse_mode": "MarkdownV2"},
        context,
    )
    assert out["text"] == (
        "*a<b\\>&c\\_\\*\\[x\\]\\(y\\)\\~\\`\\>\\#\\+\\-\\=\\|\\{\\}\\.\\!\\\\* 1\\.5"
    )
    assert escape_markdown_v2("_*[]()~`>#+-=|{}.!") == "".join(
        "\\" + c for c in "_*[]()~`>#+-=|{}.!"
    )


def test_telegram_none_mode_is_untouched(context):
    out = render_action(
        "telegram", {"chat_id": 1, "text": "{{ event.tag1 }}", "parse_mode": "none"}, context
    )
    assert out["text"] == EVENT["tag1"]


def test_filters(context):
    text = render_text(
        "{{ event.owner | short_address }} {{ event.timestamp | datetime }} "
        "{{ event.owner | explorer_link(event.chain_id) }} {{ event.chain_id | explorer_url }}",
        context,
    )
    assert text == (
        "0xAbCd…Ef01 2026-11-25 10:00:00 UTC "
        "https://sepolia.basescan.org/address/0xAbCdEf0123456789AbCdEf0123456789AbCdEf01 "
        "https://sepolia.basescan.org"
    )
    assert short_address(None) == "" and short_address("abc") == "abc"
    assert explorer_link("0x" + "a" * 64, 1) == "https://etherscan.io/tx/0x" + "a" * 64
    assert explorer_link(123, 8453) == "https://basescan.org/block/123"
    assert explorer_link("0xab", 999999) == "0xab"
    assert render_text("{{ none | datetime }}|{{ 'x' | datetime }}", context) == "|x"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self.__init__ }}",
        "{{ event.__class__ }}",
        "{{ joiner.__init__.__globals__['os'] }}",
        "{{ (event.items()|list)[0].__class__.__base__.__subclasses__() }}",
        "{{ event.update({'x': 1}) }}",
        "{{ event.pop('score') }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ 'a'.ljust(10**9) }}",
        "{{ 'a' * 10**9 }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ 2 ** 100000 }}",
        "{{ 'a' | center(1000000000) }}",
        "{{ range(100000) | join('x' * 60000) }}",
        "{{ lipsum(1000000) }}",
        "{% set ns = namespace(s='a') %}{{ ns }}",
    ],
)
def test_sandbox_refuses_escapes_and_amplifiers(template, context):
    with pytest.raises(TemplateRenderError):
        render_text(template, context)


@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(10**9) %}x{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}",
    ],
)
def test_huge_loops_are_bounded(template, context):
    started = time.monotonic()
    with pytest.raises(TemplateRenderError):
        render_text(template, context)
    assert time.monotonic() - started < 3


def test_typed_leaf_is_bounded_too(context):
    with pytest.raises(TemplateRenderError):
        render_action("rest", {"url": "http://x", "body": {"a": "{{ 'x' * 65537 }}"}}, context)
    with pytest.raises(TemplateRenderError):
        render_action(
            "rest", {"url": "http://x", "body": {"a": "{{ range(100000) | list }}"}}, context
        )


def test_undefined_names_raise_a_clear_error(context):
    with pytest.raises(
        TemplateRenderError, match=r"telegram\.text: 'dict object' has no attribute"
    ):
        render_action("telegram", {"chat_id": 1, "text": "{{ state.nope }}"}, context)
    with pytest.raises(TemplateRenderError, match=r"rest\.body\.a: .nothing. is undefined"):
        render_action("rest", {"url": "http://x", "body": {"a": "{{ nothing }}"}}, context)
    with pytest.raises(TemplateRenderError, match="ZeroDivisionError"):
        render_action("rest", {"url": "http://x", "body": {"a": "{{ 1 / 0 }}"}}, context)

"""Hostile templates: loading a rule file evaluates none of them, and the sandbox's
in-process guards refuse each known amplifier before it allocates or spins.

What the in-process guards cannot stop (work inside one C call) is the render jail's,
tested through a real worker in tests/integration/hostile/test_render_jail.py.
"""

from __future__ import annotations

import time

import pytest

from rules import TemplateRenderError, load_rules_text, render_action

#: Bodies Jinja would evaluate while compiling them (constant folding), each for minutes.
FOLDED_AT_LOAD = [
    "{{ [1]|slice(400000000)|sum(start=[])|length }}",
    "{{ [1]|tojson(indent=999999999)|length }}",
]

MACRO_DOUBLING = (
    "{% macro twice(s) %}{{ s }}{{ s }}{% endmacro %}"
    + "{{ ("
    + "twice(" * 30
    + "'x'"
    + ")" * 30
    + ")|length }}"
)

#: Each one took seconds to minutes or a gigabyte before its guard.
AMPLIFIERS = [
    *FOLDED_AT_LOAD,
    "{{ (((10**256)**256)**256) % 7 }}",
    "{{ ('%(x)999999999s' % {'x': 1})|length }}",
    "{{ [1]|batch(10**9, 0)|list|length }}",
    "{{ '%(x)0999999s' | format(x=1) }}",
    "{{ ([1] * 60000) + ([1] * 60000) }}",
    "{% macro grow(s, n) %}{{ grow(s ~ s, n - 1) if n else s|length }}{% endmacro %}"
    "{{ grow('x', 40) }}",
    "{% set s = 'x' * 60000 %}{% set t %}{{ s }}{{ s }}{% endset %}{{ t|length }}",
    MACRO_DOUBLING,
]

CONTEXT = {"event": {}, "rule": {"id": "r"}, "group": {}, "state": {}, "fired_at": "T"}


def _rule_file(body: str) -> str:
    quoted = body.replace("'", "''")
    return (
        "rules:\n"
        "  - id: hostile\n"
        "    on: {registry: reputation}\n"
        "    actions:\n"
        f"      - rest: {{url: 'http://127.0.0.1:1/x', body: {{a: '{quoted}'}}}}\n"
    )


@pytest.mark.parametrize("body", FOLDED_AT_LOAD)
def test_loading_a_rule_evaluates_none_of_its_templates(body: str) -> None:
    started = time.monotonic()
    loaded = load_rules_text(_rule_file(body), "hostile.yaml", environ={})
    elapsed = time.monotonic() - started
    assert [rule.id for rule in loaded.rules] == ["hostile"], loaded.errors
    assert elapsed < 1.0, f"loading took {elapsed:.1f}s"


@pytest.mark.parametrize("template", AMPLIFIERS)
def test_amplifiers_are_refused_before_they_run(template: str) -> None:
    spec = {"url": "http://127.0.0.1:1/x", "body": {"a": template, "b": f"x{template}"}}
    started = time.monotonic()
    with pytest.raises(TemplateRenderError, match=r"rest\.body\.a: "):
        render_action("rest", spec, CONTEXT)
    assert time.monotonic() - started < 0.4  # refused, not stopped by the 0.5 s trace hook


def test_bounded_forms_still_render() -> None:
    template = (
        "{{ 2 ** 10 }} {{ 'a' + 'b' }} {{ 'x' ~ 1 }} {{ [1, 2]|tojson(indent=2)|length }} "
        "{{ [1, 2, 3]|sum }} {{ [1, 2, 3]|batch(2)|list }} {{ '%(n)5s' % {'n': 'v'} }}"
    )
    out = render_action("telegram", {"chat_id": 1, "text": template}, CONTEXT)
    assert out["text"] == "1024 ab x1 12 6 [[1, 2], [3]]     v"

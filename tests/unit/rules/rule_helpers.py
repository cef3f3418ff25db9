"""Helpers for the rules unit tests: load rule YAML from a string."""

from __future__ import annotations

import textwrap

from rules import LoadResult, Rule, load_rules_text

ACTION = "actions: [{rest: {url: 'http://127.0.0.1:9/hook'}}]"


def load(text: str, *, environ=None, bot_names=None, source="rules/test.yaml") -> LoadResult:
    """Load dedented YAML as if it were the file ``source``."""
    return load_rules_text(
        textwrap.dedent(text), source, environ=environ or {}, bot_names=bot_names
    )


def one_rule(body: str, **kwargs) -> Rule:
    """Compile a single rule given as the YAML of its mapping (without `- `), or fail."""
    indented = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    text = "rules:\n  - " + indented.lstrip() + "\n"
    result = load_rules_text(text, "rules/test.yaml", environ=kwargs.get("environ", {}))
    assert not result.errors, [str(e) for e in result.errors]
    assert len(result.rules) == 1
    return result.rules[0]


def errors_of(text: str, **kwargs) -> list[str]:
    """The error strings from loading ``text``."""
    return [str(e) for e in load(text, **kwargs).errors]

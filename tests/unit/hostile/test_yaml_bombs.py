"""YAML alias bombs: a few hundred bytes that expand to a quarter of a million template
leaves are refused at load, quickly, naming the rule (or the `x-…` key) and its line."""

from __future__ import annotations

import time

from rules import load_rules_text

LEAVES = '["{{ event.score }}", "{{ event.agent_id }}", "{{ rule.id }}", "{{ fired_at }}"]'


def _nested_anchors(indent: str, levels: int) -> list[str]:
    lines = [f"{indent}l0: &l0 {LEAVES}"]
    lines += [
        f"{indent}l{i}: &l{i} [*l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}]"
        for i in range(1, levels)
    ]
    return lines


def test_an_anchor_key_that_expands_to_a_quarter_million_leaves_is_refused() -> None:
    text = "\n".join(
        [
            "x-bomb:",
            *_nested_anchors("  ", 9),
            "rules:",
            "  - id: bomb",
            "    on: {registry: reputation}",
            "    actions:",
            "      - rest: {url: 'http://127.0.0.1:1/x', body: *l8}",
        ]
    )
    assert len(text) < 700
    started = time.monotonic()
    loaded = load_rules_text(text, "bomb.yaml", environ={})
    assert time.monotonic() - started < 1.0
    assert loaded.rules == []
    assert [str(e) for e in loaded.errors] == [
        "bomb.yaml:1: 'x-bomb' expands to more than 10000 values through YAML aliases; a rule "
        "needs a few hundred: write repeated parts out, or share smaller anchors"
    ]


def test_a_rule_whose_own_aliases_explode_is_refused_by_id() -> None:
    text = "\n".join(
        [
            "rules:",
            "  - id: ok",
            "    on: {registry: reputation}",
            "    actions: [{rest: {url: 'http://127.0.0.1:1/x', body: {a: '{{ rule.id }}'}}}]",
            "  - id: bomb",
            "    on: {registry: reputation}",
            "    x:",
            *_nested_anchors("      ", 9),
            "    actions: [{rest: {url: 'http://127.0.0.1:1/x', body: *l8}}]",
        ]
    )
    loaded = load_rules_text(text, "bomb.yaml", environ={})
    assert loaded.rules == []
    assert [str(e) for e in loaded.errors] == [
        "bomb.yaml:5 rule 'bomb': the rule expands to more than 10000 values through YAML "
        "aliases; a rule needs a few hundred: write repeated parts out, or share smaller "
        "anchors"
    ]


def test_the_cap_is_a_parameter_and_plain_rules_fit_under_it() -> None:
    text = "\n".join(
        [
            "x-defaults: &defaults {registry: reputation}",
            "rules:",
            "  - id: shared",
            "    on: *defaults",
            f"    actions: [{{rest: {{url: 'http://127.0.0.1:1/x', body: {LEAVES}}}}}]",
        ]
    )
    assert [r.id for r in load_rules_text(text, "f.yaml", environ={}).rules] == ["shared"]
    tight = load_rules_text(text, "f.yaml", environ={}, max_aliased_values=0)
    assert tight.rules == []
    assert "rule 'shared': the rule expands to more than 0 values through" in str(tight.errors[0])


def test_the_cap_comes_from_the_config_for_every_command(tmp_path) -> None:
    from engine.config import load_config
    from rules import load_rules

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "x-defaults: &defaults {registry: reputation}\n"
        "rules:\n"
        "  - id: shared\n"
        "    on: *defaults\n"
        "    actions: [{rest: {url: 'http://127.0.0.1:1/x', body: {a: '{{ rule.id }}'}}}]\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text(f"rules: [{rules}]\nrule_files: {{max_aliased_values: 1}}\n")
    settings = load_config(config, environ={})
    assert settings.rule_files.max_aliased_values == 1
    loaded = load_rules(list(settings.rules), **settings.rule_loading())
    assert loaded.rules == []
    assert "more than 1 values through YAML aliases" in str(loaded.errors[0])

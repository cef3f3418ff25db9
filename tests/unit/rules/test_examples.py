"""The shipped examples load cleanly, pass their own tests and satisfy the JSON Schema."""

from __future__ import annotations

from pathlib import Path

import jsonschema

from rules import format_rule_test_report, load_rules, rule_file_schema, run_rule_tests
from rules.yaml_source import parse_yaml

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "rules"
SCHEMA_LINE = "# yaml-language-server: $schema=../../rules/rules.schema.json"


def test_examples_load_and_their_tests_pass():
    result = load_rules([EXAMPLES], environ={}, bot_names={"default"})
    assert [str(e) for e in result.errors] == []
    assert len(result.rules) >= 15
    results = run_rule_tests(result.rules)
    assert results and all(r.passed for r in results), format_rule_test_report(results)
    assert all(rule.tests for rule in result.rules)


def test_examples_cover_every_condition_family():
    result = load_rules([EXAMPLES], environ={})
    used = {key for rule in result.rules for key in (rule.document.get("when") or {})}
    assert used >= {"ema", "count", "change", "new", "avg", "sum", "min", "max"}
    assert any("throttle" in rule.document for rule in result.rules)


def test_examples_validate_against_the_schema_and_point_at_it():
    validator = jsonschema.Draft7Validator(rule_file_schema())
    for path in sorted(EXAMPLES.glob("*.yaml")):
        text = path.read_text()
        assert text.splitlines()[0] == SCHEMA_LINE, path
        assert list(validator.iter_errors(parse_yaml(text).data)) == [], path

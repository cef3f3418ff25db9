"""The rule language, pure: schema, load, compile, conditions, throttle, templates, tests.

This package does no I/O beyond reading the rule files it is asked to load, and imports
nothing of ours, so rule tests and backtests run without any service.

Public API (what `engine` and `actions` use)::

    load_rules(paths, environ=…, bot_names=…) -> LoadResult(rules, errors, files)
    load_rules_text(text, source, environ=…, bot_names=…) -> LoadResult
    RuleIndex(rules).matching(event) -> [Rule]
    Rule.matches / group_key / group_values / step(event, state, trusted_until=…) -> Step
    event_time(event) -> int | None  (the `timestamp` as rules read it)
    build_context(...) / render_action(kind, spec, context)
    evaluate_stream(index, events, states) -> Firings;  run_rule_tests(rules)
    rule_file_schema() -> dict
"""

from rules.conditions.base import event_time
from rules.errors import RuleError, TemplateRenderError
from rules.evaluate import Firing, evaluate_stream
from rules.index import RuleIndex
from rules.loader import LoadResult, load_rules, load_rules_text
from rules.model import ActionSpec, RetryPolicy, Rule, RuleTest, Step
from rules.schema import rule_file_schema
from rules.templates import build_context, render_action
from rules.testing import RuleTestResult, format_rule_test_report, run_rule_tests

__all__ = [
    "ActionSpec",
    "Firing",
    "LoadResult",
    "RetryPolicy",
    "Rule",
    "RuleError",
    "RuleIndex",
    "RuleTest",
    "RuleTestResult",
    "Step",
    "TemplateRenderError",
    "build_context",
    "evaluate_stream",
    "event_time",
    "format_rule_test_report",
    "load_rules",
    "load_rules_text",
    "render_action",
    "rule_file_schema",
    "run_rule_tests",
]

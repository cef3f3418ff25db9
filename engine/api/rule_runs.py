"""A rule's tests, given events and backtest firings, as the API answers them.

The same runner as `engine rules test` (rules.testing) and the same render function its
`renders:` checks use (rules.render_action, in the rules sandbox), so a test passes
through the API exactly when it passes on the command line.  Nothing here writes, sends
or reads anything: this module does no I/O.

A tenant's templates may still hold a long C-level call the sandbox cannot interrupt, so
the API runs a whole rule test in a render jail's child (``python -m engine.api.rule_runs``,
request kind ``rule_test``: ``report_for_request``), which is stopped at the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from actions.render_jail import main as serve_jailed
from engine.api.errors import ApiError, ErrorItem
from engine.api.rule_bodies import compile_tenant_document, parse_rule_text
from rules import Firing, Rule, render_action
from rules.errors import TemplateRenderError
from rules.testing import RuleTestResult, evaluate_test_steps, run_rule_test

#: The id of a rule under test that was sent without one.
UNTESTED_ID = "rule-under-test"
#: The name of the test that carries a request's `events` through the rule compiler, so
#: they are checked and completed exactly as a rule's own test events are.
REQUEST_EVENTS_TEST = "events of the request"


def with_request_events(document: Mapping[str, Any], events: Sequence[Any] | None) -> Any:
    """``document`` with the request's events as one more test (``fires`` is unused)."""
    if events is None or not isinstance(document, Mapping):
        return document
    tests = document.get("tests")
    own = list(tests) if isinstance(tests, list) else ([] if tests is None else tests)
    if not isinstance(own, list):
        return document  # the compiler reports the malformed `tests:` itself
    extra = {"name": REQUEST_EVENTS_TEST, "events": list(events), "fires": []}
    return {**document, "tests": [*own, extra]}


def enabled(rule: Rule) -> Rule:
    """A disabled rule is still tested and backtested when asked for by name."""
    return rule if rule.enabled else replace(rule, enabled=True)


def _json_safe(value: Any) -> Any:
    """Rendered values as JSON can carry them (an event's Decimal, a datetime)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Decimal | datetime | date):
        return str(value)
    return value


def _ignore(_: str) -> None:
    return None


def rendered_actions(
    firing: Firing, entering: Callable[[str], None] = _ignore
) -> list[dict[str, Any]]:
    """Each action of ``firing`` rendered as a worker would, or why it does not render.

    ``entering`` hears which template is being rendered (a render jail's child names it
    when it is stopped)."""
    out = []
    for action in firing.rule.actions:
        rendered, error = None, None

        def field(name: str, index: int = action.index) -> None:
            entering(f"template of actions[{index}].{name}")

        try:
            rendered = _json_safe(
                render_action(action.kind, action.raw, firing.context, on_field=field)
            )
        except TemplateRenderError as exc:
            error = str(exc)
        out.append(
            {
                "index": action.index,
                "kind": action.kind,
                "name": action.name,
                "rendered": rendered,
                "error": error,
            }
        )
    return out


def _int_or_none(value: Any) -> int | None:
    return value if type(value) is int else None


def firing_answer(
    firing: Firing, *, render: bool = True, entering: Callable[[str], None] = _ignore
) -> dict[str, Any]:
    event = firing.event
    event_id = event.get("id")
    return {
        "event_index": firing.event_index,
        "event_id": None if event_id is None else str(event_id),
        "block_number": _int_or_none(event.get("block_number")),
        "timestamp": _int_or_none(event.get("timestamp")),
        "group": _json_safe(firing.group),
        "suppressed": firing.step.suppressed,
        "actions": rendered_actions(firing, entering)
        if render and not firing.step.suppressed
        else [],
    }


def _test_answer(result: RuleTestResult) -> dict[str, Any]:
    return {
        "name": result.name,
        "line": result.source_line or None,
        "passed": result.passed,
        "expected_fires": result.expected_fires,
        "actual_fires": result.actual_fires,
        "messages": result.messages,
    }


def _evaluate(rule: Rule, events: Sequence[Any]) -> list[Firing]:
    try:
        return evaluate_test_steps(rule, events)
    except (TypeError, ValueError, ArithmeticError) as exc:
        # A value the rule cannot use (a mapping where it averages numbers): the author's
        # to fix, and the same message whichever event it was.
        message = f"an event cannot be evaluated by this rule: {exc}"
        raise ApiError(
            422, message, errors=[ErrorItem(path="events", line=None, message=message)]
        ) from exc


def rule_test_report(
    rule: Rule, *, with_events: bool, entering: Callable[[str], None] = _ignore
) -> dict[str, Any]:
    """The rule's tests (each from fresh state) and, when the request had events, which
    of them fired and what each firing's actions render to.  Sends nothing."""
    rule = enabled(rule)
    own = [t for t in rule.tests if not (with_events and t is rule.tests[-1])]
    try:
        results = []
        for test in own:
            entering(f"test {test.name!r} (its events and renders: checks)")
            results.append(run_rule_test(rule, test, {}))
    except (TypeError, ValueError, ArithmeticError) as exc:
        message = f"a test's events cannot be evaluated by this rule: {exc}"
        raise ApiError(
            422, message, errors=[ErrorItem(path="tests", line=None, message=message)]
        ) from exc
    events_answer = None
    if with_events:
        entering("evaluating the request's events")
        firings = _evaluate(rule, rule.tests[-1].events)
        events_answer = {
            "fired": [f.event_index for f in firings if f.step.fired],
            "firings": [firing_answer(f, entering=entering) for f in firings],
        }
    return {
        "rule_id": rule.id,
        "passed": all(r.passed for r in results),
        "tests": [_test_answer(r) for r in results],
        "events": events_answer,
    }


def report_for_request(request: Mapping[str, Any], entering: Callable[[str], None]) -> Any:
    """A render jail's ``rule_test`` request: the rule (a document, or YAML text), its id
    (None: the document's own), the request's events and the timeout limits, compiled and
    tested as the routes would in-process.  ``{"report": …}`` or ``{"refused": …}``."""
    try:
        given = request["rule"]
        if isinstance(given, str):
            raw, lines, base = parse_rule_text(given)
        else:
            raw, lines, base = given, None, ()
        rule_id = request.get("rule_id")
        if rule_id is None:
            own_id = raw.get("id") if isinstance(raw, Mapping) else None
            rule_id = own_id if isinstance(own_id, str) else UNTESTED_ID
        events = request.get("events")
        rule = compile_tenant_document(
            with_request_events(raw, events),
            rule_id,
            lines,
            base,
            timeout_limits_s=request.get("timeout_limits_s"),
        )
        return {"report": rule_test_report(rule, with_events=events is not None, entering=entering)}
    except ApiError as exc:
        errors = None if exc.errors is None else [item.model_dump() for item in exc.errors]
        return {"refused": {"status": exc.status, "message": exc.message, "errors": errors}}


if __name__ == "__main__":
    serve_jailed({"rule_test": report_for_request})

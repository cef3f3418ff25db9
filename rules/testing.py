"""Run the `tests:` blocks of rules with no database, Redis or network (`engine rules test`).

Each test evaluates its events against a fresh state of its own rule alone, compares the
indexes of the events that fired with `fires`, and checks `renders` expectations against
the rendered actions of the n-th firing (``${VAR}`` expanded from ``environ``).

`{advance: DURATION}` steps move the test's clock without an event; what fires on time
passing is run by rules.time_driven (TimeSteps, which says when each hook is called).
A firing on an advance counts at that step's index.

`fires` lists the raw firings, also a grouped rule's; the digests they make and the
resolved notices are replayed on the test's clock by rules.notice_replay, which
`digests`, `resolves` and `renders` ({firing: N}: the digest holding firing N;
{resolve: N}: the N-th resolved notice) check.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rules.conditions.base import event_time
from rules.envsubst import UnsetVariableError, expand_env
from rules.errors import TemplateRenderError
from rules.evaluate import Firing, evaluate_stream
from rules.index import RuleIndex
from rules.model import Advance, RenderExpectation, Rule, RuleTest, Step
from rules.notice_replay import NoticeReplay
from rules.templates import render_action
from rules.time_driven import TestStates, TimedFiring, TimeSteps


@dataclass
class RuleTestResult:
    """The outcome of one test of one rule."""

    rule_id: str
    name: str
    passed: bool
    expected_fires: list[int]
    actual_fires: list[int]
    messages: list[str] = field(default_factory=list)
    source_file: str = ""
    source_line: int = 0


def run_rule_tests(
    rules: Sequence[Rule], *, environ: Mapping[str, str] | None = None
) -> list[RuleTestResult]:
    """Run every test of every rule (disabled rules too: their tests still describe them)."""
    results = []
    for rule in rules:
        for test in rule.tests:
            results.append(run_rule_test(rule, test, environ or {}))
    return results


def run_rule_test(rule: Rule, test: RuleTest, environ: Mapping[str, str]) -> RuleTestResult:
    """Evaluate one test's steps against ``rule`` alone, from fresh state."""
    run = replay_test_steps(_enabled(rule), test.events)
    firings = [f for f in run.firings if f.step.fired]
    # An advance can fire several groups at one step: its index is listed once.
    actual = sorted({f.event_index for f in firings})
    messages = _check_notices(test, run.notices)
    messages += [m for r in test.renders for m in _check_render(rule, r, firings, run, environ)]
    return RuleTestResult(
        rule_id=rule.id,
        name=test.name,
        passed=actual == list(test.fires) and not messages,
        expected_fires=list(test.fires),
        actual_fires=actual,
        messages=messages,
        source_file=rule.source_file,
        source_line=test.line,
    )


def run_test_steps(
    rule: Rule, steps: Sequence[Mapping[str, Any] | Advance]
) -> list[tuple[int, dict[str, Any]]]:
    """(step index, template context) of each firing of ``rule`` (enabled) over ``steps``."""
    return [(f.event_index, f.context) for f in evaluate_test_steps(rule, steps) if f.step.fired]


def evaluate_test_steps(rule: Rule, steps: Sequence[Mapping[str, Any] | Advance]) -> list[Firing]:
    """Every firing of ``rule`` (enabled) over a test's ``steps``, suppressed ones too, in
    order; a firing on an advance step has the step's index (timed_firing)."""
    return replay_test_steps(rule, steps).firings


@dataclass
class TestRun:
    """What a rule did over a test's steps: its firings (suppressed ones too) and the
    digests and resolved notices they made (rules.notice_replay)."""

    firings: list[Firing]
    notices: NoticeReplay


def replay_test_steps(rule: Rule, steps: Sequence[Mapping[str, Any] | Advance]) -> TestRun:
    """``rule`` (enabled) over a test's ``steps``, from fresh state."""
    index = RuleIndex([rule])
    states: TestStates = {}
    timed = TimeSteps([rule], states)
    notices = NoticeReplay(rule)
    firings: list[Firing] = []
    fired = 0  # firings that were not throttled: digests and `renders` number these
    if steps and timed:
        first = steps[0]
        timed.start(first.now - first.seconds if isinstance(first, Advance) else first["timestamp"])
    for position, step in enumerate(steps):
        if isinstance(step, Advance):
            notices.advance(step.now, position)
            made = [timed_firing(t, position) for t in timed.advance(step.now)]
            firings += made
            fired += len(made)
            continue
        now = event_time(step)
        if now is not None:
            notices.advance(now, position)
        stream = evaluate_stream(index, (step,), states)
        stepped = [replace(f, event_index=position) for f in stream]
        numbered = []
        for firing in stepped:
            numbered.append((fired, firing))
            fired += firing.step.fired
        firings += stepped
        if now is not None and rule.matches(step):
            notices.event(step, numbered, now, position)
        if timed:
            timed.event(step, step["timestamp"])
    notices.finish()
    return TestRun(firings, notices)


def timed_firing(timed: TimedFiring, position: int) -> Firing:
    """A firing made by time passing as a Firing at ``position``: its event is the one its
    template context holds (an absence firing's group values and synthetic id)."""
    event = timed.context.get("event") or {}
    return Firing(timed.rule, event, position, timed.group_key, timed.group, _TIMED, timed.context)


#: The Step of a firing made by time passing: it fired, no throttle, no `when` state.
_TIMED = Step(fired=True, suppressed=False, state=None, template_state={})


def _enabled(rule: Rule) -> Rule:
    return rule if rule.enabled else replace(rule, enabled=True)


def _check_notices(test: RuleTest, notices: NoticeReplay) -> list[str]:
    messages = []
    if test.resolves is not None:
        actual = sorted({n.position for n in notices.resolves})
        if actual != list(test.resolves):
            messages.append(
                f"resolves: expected resolved notices at steps {list(test.resolves)}, "
                f"they were sent at {actual}"
            )
    if test.digests is not None and len(notices.digests) != test.digests:
        held = ", ".join(f"firings {list(d.firings)}" for d in notices.digests) or "none"
        messages.append(
            f"digests: expected {test.digests} digest(s), {len(notices.digests)} were sent ({held})"
        )
    return messages


def _check_render(
    rule: Rule,
    expect: RenderExpectation,
    firings: list[Firing],
    run: TestRun,
    environ: Mapping[str, str],
) -> list[str]:
    if expect.resolve:
        where = f"renders: resolve {expect.firing}, action {expect.action}"
        resolves = run.notices.resolves
        if expect.firing >= len(resolves):
            return [f"{where}: only {len(resolves)} resolved notice(s) were sent"]
        actions = rule.resolve.actions if rule.resolve is not None else ()
        context = resolves[expect.firing].context
    else:
        where = f"renders: firing {expect.firing}, action {expect.action}"
        if expect.firing >= len(firings):
            return [f"{where}: the rule fired only {len(firings)} time(s)"]
        actions = rule.actions
        context = firings[expect.firing].context
        digest = run.notices.digest_of(expect.firing) if rule.grouping is not None else None
        if digest is not None:
            context = digest.context
    action = next((a for a in actions if a.index == expect.action), None)
    if action is None:
        return [f"{where}: no such action"]
    # A variable the test environment lacks stays as written: rule tests must not depend
    # on secrets being set, and the loader has already reported unset ones.
    spec = expand_env(action.raw, environ, on_error=_leave_as_written)
    try:
        rendered = render_action(action.kind, spec, context)
    except TemplateRenderError as exc:
        return [f"{where}: {exc}"]
    text = rendered_text(action.kind, rendered)
    return [
        f"{where}: output does not contain {s!r}; it was {text!r}"
        for s in expect.contains
        if s not in text
    ]


def _leave_as_written(error: UnsetVariableError, path: tuple[str | int, ...]) -> None:
    return None


def rendered_text(kind: str, rendered: Mapping[str, Any]) -> str:
    """What `renders` searches: telegram text, rest body, mcp arguments (bodies as JSON)."""
    if kind == "telegram":
        return str(rendered.get("text", ""))
    value = rendered.get("body" if kind == "rest" else "arguments")
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def format_rule_test_report(results: Sequence[RuleTestResult]) -> str:
    """A PASS/FAIL line per test; failures show expected vs actual firing indexes."""
    lines = []
    for r in results:
        status = "PASS" if r.passed else "FAIL"
        lines.append(f"{status} {r.source_file}:{r.source_line} rule '{r.rule_id}': {r.name}")
        if r.passed:
            continue
        if r.expected_fires != r.actual_fires:
            missing = sorted(set(r.expected_fires) - set(r.actual_fires))
            extra = sorted(set(r.actual_fires) - set(r.expected_fires))
            lines.append(f"    expected fires: {r.expected_fires}")
            lines.append(f"    actual fires:   {r.actual_fires}")
            if missing:
                lines.append(f"    - did not fire on: {missing}")
            if extra:
                lines.append(f"    + fired unexpectedly on: {extra}")
        lines.extend(f"    {message}" for message in r.messages)
    passed = sum(r.passed for r in results)
    lines.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(lines)

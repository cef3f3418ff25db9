"""Why a rule did (not) fire on one event: the pure verdicts of `on`, `where`, `when` and
`throttle`, each with the values it saw.

A verdict answers one step of the evaluation (engine.evaluator runs the same steps):
``pass`` (the step let the event through), ``block`` (it stopped it, and why) or ``info``
(a fact that decides nothing, such as a digest group).  The verdicts use the compiled
rule for every decision and the rule's document only to name which matcher of `where`
failed, so an explanation never disagrees with the engine about the outcome.

Pure like the rest of the package: the caller brings the event, the group's state and
the trust ceiling of the event's time; nothing here reads a clock or the database.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from rules.conditions import Condition
from rules.conditions.base import Threshold, event_time, int_list, state_dict
from rules.model import Rule, Step, on_value
from rules.where_failures import describe_failure, failed_matchers, rounded, value_text

PASS: Final = "pass"
BLOCK: Final = "block"
INFO: Final = "info"
#: Stored lists longer than this (window times, remembered values) are shown as their
#: length and ends: a window keeps up to 10,000 entries.
SHOWN_LIST_ITEMS: Final = 8
#: The settings that say what a condition's value is compared with.
_COMPARISONS: Final = frozenset({"below", "above", "at_most", "at_least", "more_than", "exactly"})


@dataclass(frozen=True)
class Verdict:
    """One step's answer for one rule and event: outcome, one readable line, its values."""

    step: str
    outcome: str  # PASS, BLOCK or INFO
    summary: str
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        return self.outcome == BLOCK

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "outcome": self.outcome,
            "summary": self.summary,
            "values": dict(self.values),
        }


@dataclass(frozen=True)
class Simulation:
    """The verdicts of the pure steps, and the Step the rule gives (None: not reached)."""

    verdicts: tuple[Verdict, ...]
    step: Step | None

    @property
    def passed(self) -> bool:
        """Whether every verdict let the event through (it fired, or would fire)."""
        return self.step is not None and not any(v.blocks for v in self.verdicts)


def explain_on(rule: Rule, event: Mapping[str, Any]) -> Verdict:
    """Whether the event's chain, registry and type are among the rule's `on` values."""
    seen = {key: event.get(key) for key in rule.on}
    wrong = {
        key: sorted(allowed, key=repr)
        for key, allowed in rule.on.items()
        if on_value(event.get(key)) not in allowed
    }
    if not rule.on:
        return Verdict("on", PASS, "no `on`: every event", {})
    if not wrong:
        shown_on = ", ".join(f"{k}={value_text(v)}" for k, v in seen.items())
        return Verdict("on", PASS, f"matches ({shown_on})", {"event": seen})
    reasons = "; ".join(
        f"{key} is {value_text(event.get(key))},"
        f" the rule wants {' or '.join(map(value_text, want))}"
        for key, want in wrong.items()
    )
    return Verdict(
        "on",
        BLOCK,
        f"does not match: {reasons}",
        {"event": seen, "expected": {k: v for k, v in wrong.items()}},
    )


def explain_where(rule: Rule, event: Mapping[str, Any], spec: Any) -> Verdict:
    """`where` decided by the compiled predicate; ``spec`` (the rule's `where` with any
    ``${VAR}`` expanded) names the matchers that failed and the values they compared."""
    if rule.predicate is None or spec is None:
        return Verdict("where", PASS, "no `where`: every event", {})
    try:
        holds = bool(rule.predicate(event))
    except Exception:  # the engine counts a raising predicate as a non-match too
        holds = False
    if holds:
        return Verdict("where", PASS, "holds", {})
    failed = failed_matchers(spec, event)
    if not failed:
        return Verdict("where", BLOCK, "does not hold", {"failed": []})
    text = "; ".join(describe_failure(f) for f in failed[:3])
    more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
    return Verdict("where", BLOCK, f"fails: {text}{more}", {"failed": failed})


def explain_state_steps(
    rule: Rule,
    event: Mapping[str, Any],
    state: Mapping[str, Any] | None,
    trusted_until: int | None,
) -> Simulation:
    """`when` (one verdict per condition, state before and after) and `throttle`, as
    ``rule.step`` decides them from the group's ``state`` (None: a fresh group)."""
    step = rule.step(event, state, trusted_until=trusted_until)
    machine = rule.machine
    if machine is None:
        return Simulation((), step)
    now = event_time(event)
    untrusted = now is not None and trusted_until is not None and now > trusted_until
    if untrusted:
        now = None
    old = state if isinstance(state, Mapping) else {}
    old_when = state_dict(old.get("when"))
    verdicts: list[Verdict] = []
    all_hold = True
    for condition in machine.conditions:
        before = old_when.get(condition.key)
        outcome = condition.update(event, before, now, trusted_until)
        all_hold = all_hold and outcome.holds
        verdicts.append(_condition_verdict(condition, event, before, outcome, untrusted))
    if machine.throttle is not None:
        verdicts.append(_throttle_verdict(rule, old.get("throttle"), now, all_hold, step))
    return Simulation(tuple(verdicts), step)


def _condition_verdict(
    condition: Condition,
    event: Mapping[str, Any],
    before: Any,
    outcome: Any,
    untrusted: bool,
) -> Verdict:
    settings = condition_settings(condition)
    needs = [f"{k} {value_text(v)}" for k, v in settings.items() if k in _COMPARISONS]
    other = [
        f"{k} {value_text(v)}" for k, v in settings.items() if k not in _COMPARISONS and k != "of"
    ]
    of = settings.get("of")
    seen = "" if of is None else f"event {of} = {value_text(event.get(str(of)))}; "
    summary = (
        f"{seen}{condition.key} = {value_text(rounded(outcome.value))}"
        f" (state {_statevalue_text(before)} → {_statevalue_text(outcome.state)});"
        f" needs {' '.join(needs) or 'to hold'}" + (f" ({', '.join(other)})" if other else "")
    )
    if untrusted:
        summary += "; the event's timestamp is past the trusted clock: no time advanced"
    return Verdict(
        f"when.{condition.key}",
        PASS if outcome.holds else BLOCK,
        summary,
        {
            "condition": condition.key,
            "settings": settings,
            "event_value": None if of is None else event.get(str(of)),
            "value": outcome.value,
            "holds": outcome.holds,
            "state_before": compact_state(before),
            "state_after": compact_state(outcome.state),
        },
    )


def _throttle_verdict(
    rule: Rule, stored: Any, now: int | None, all_hold: bool, step: Step
) -> Verdict:
    throttle = rule.machine.throttle if rule.machine is not None else None
    assert throttle is not None
    old = state_dict(stored)
    last = old.get("last") if type(old.get("last")) is int else None
    fired = int_list(old.get("fired"))
    settings = {
        k: v
        for k, v in (
            ("cooldown_s", throttle.cooldown_s),
            ("max", throttle.max_firings),
            ("within_s", throttle.within_s),
        )
        if v is not None
    }
    values: dict[str, Any] = {"settings": settings, "last_fired": last, "event_time": now}
    if throttle.max_firings is not None and throttle.within_s is not None and now is not None:
        values["firings_in_window"] = len([t for t in fired if now - throttle.within_s < t <= now])
    if not all_hold:
        return Verdict("throttle", INFO, "not reached: `when` does not hold", values)
    if step.fired:
        return Verdict(
            "throttle", PASS, f"lets it through (last fired: {value_text(last)})", values
        )
    if now is None:
        reason = "the event has no usable or trusted timestamp, so it cannot be placed in time"
    elif throttle.cooldown_s is not None and last is not None and now - last < throttle.cooldown_s:
        reason = (
            f"last fired at {last}, {now - last}s before this event;"
            f" cooldown {throttle.cooldown_s}s"
        )
    else:
        reason = (
            f"{values.get('firings_in_window')} firing(s) within {throttle.within_s}s;"
            f" max {throttle.max_firings}"
        )
    return Verdict("throttle", BLOCK, f"suppressed: {reason}", values)


def simulate(
    rule: Rule,
    event: Mapping[str, Any],
    state: Mapping[str, Any] | None,
    trusted_until: int | None,
    where_spec: Any,
) -> Simulation:
    """`on`, `where`, then `when` and `throttle` from ``state``; stops at the first step
    that blocks (the engine does not run the later ones for that event)."""
    verdicts = [explain_on(rule, event)]
    if verdicts[-1].blocks:
        return Simulation(tuple(verdicts), None)
    verdicts.append(explain_where(rule, event, where_spec))
    if verdicts[-1].blocks:
        return Simulation(tuple(verdicts), None)
    stateful = explain_state_steps(rule, event, state, trusted_until)
    return Simulation((*verdicts, *stateful.verdicts), stateful.step)


def condition_settings(condition: Condition) -> dict[str, Any]:
    """A condition's settings as a rule author wrote them (`of`, `window`, `below` …)."""
    settings: dict[str, Any] = {}
    if not dataclasses.is_dataclass(condition):
        return settings
    values = {f.name: getattr(condition, f.name) for f in dataclasses.fields(condition)}
    for name, value in values.items():
        if name in ("key", "comparison"):
            continue
        if isinstance(value, Threshold):
            settings[value.name] = value.limit
        elif name == "limit" and "comparison" in values:
            settings[str(values["comparison"])] = value
        elif name.endswith("_s"):
            settings[name] = value
        elif isinstance(value, float):
            settings[name] = round(value, 6)
        else:
            settings[name] = value
    return settings


def compact_state(value: Any) -> Any:
    """A stored state for showing: long lists become their length and their two ends."""
    if isinstance(value, Mapping):
        return {str(k): compact_state(v) for k, v in value.items()}
    if isinstance(value, list) and len(value) > SHOWN_LIST_ITEMS:
        return {"entries": len(value), "first": value[0], "last": value[-1]}
    if isinstance(value, float):
        return rounded(value)
    return value


def _statevalue_text(state: Any) -> str:
    shown = compact_state(state)
    if shown is None or shown == {}:
        return "fresh"
    if isinstance(shown, Mapping):
        return ", ".join(f"{k} {value_text(v)}" for k, v in shown.items())
    return value_text(shown)


def explain_grouping(rule: Rule, event: Mapping[str, Any]) -> Verdict | None:
    """A `group` rule's firing goes to its group's digest instead of its own message."""
    spec = rule.grouping
    if spec is None:
        return None
    values = spec.values(event)
    group = ", ".join(f"{k}={value_text(v)}" for k, v in values.items()) or "(one group)"
    return Verdict(
        "digest",
        INFO,
        f"collected into group {group} for a digest (wait {spec.wait_s}s,"
        f" then at most one per {spec.interval_s}s)",
        {"group": values, "wait_s": spec.wait_s, "interval_s": spec.interval_s},
    )

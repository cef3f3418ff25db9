"""``engine rules backtest --explain``: every event some rule's `on` matches, with each
rule's verdicts step by step (rules.explain), from the backtest's own fresh state.

The state moves exactly as in a plain backtest (the same pure steps, in event order), so
the firings it shows are the ones ``Backtest.feed`` yields; it only prints more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from engine.backtest import Backtest, print_firing
from engine.explain_report import expanded_where, verdict_line
from rules import Firing, build_context
from rules.evaluate import event_time_iso
from rules.explain import Simulation, explain_grouping, explain_on, simulate


def explain_backtest(
    backtest: Backtest, events: Iterable[Mapping[str, Any]], environ: Mapping[str, str]
) -> None:
    """Feed ``events`` through ``backtest``'s rules, printing each matched event's verdicts."""
    rules = [rule for rule in backtest.rules if rule.enabled]
    where = expanded_where(environ)
    for event in events:
        backtest.events += 1
        candidates = [rule for rule in rules if not explain_on(rule, event).blocks]
        if not candidates:
            continue
        ceiling = backtest.clock.trusted_until(event)
        print(f"event {event.get('id')} block {event.get('block_number')}")
        for rule in candidates:
            key = rule.group_key(event)
            simulation = simulate(
                rule, event, backtest.states.get((rule.id, key)), ceiling, where(rule)
            )
            step = simulation.step
            if step is not None and step.state is not None:
                backtest.states[(rule.id, key)] = step.state
            _print_rule(backtest, rule.id, simulation)
            if step is not None and step.fired:
                backtest.fired[rule.id] += 1
                grouped = explain_grouping(rule, event)
                if grouped is not None:
                    print(f"    {verdict_line(grouped)}")
                group = rule.group_values(event)
                context = build_context(
                    rule, event, group, step.template_state, event_time_iso(event)
                )
                print_firing(
                    Firing(rule, event, backtest.events - 1, key, group, step, context),
                    environ,
                    indent="    ",
                )
            elif step is not None and step.suppressed:
                backtest.suppressed[rule.id] += 1


def _print_rule(backtest: Backtest, rule_id: str, simulation: Simulation) -> None:
    step = simulation.step
    if step is not None and step.fired:
        outcome = "fires"
    elif step is not None and step.suppressed:
        outcome = "suppressed by its throttle"
    else:
        outcome = "does not fire"
    print(f"  rule '{rule_id}': {outcome}")
    for verdict in simulation.verdicts:
        print(f"    {verdict_line(verdict)}")

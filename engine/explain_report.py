"""What an operator reads of an explanation: ``engine rules explain`` and the text of
``engine rules backtest --explain``.

One block per rule: the facts (action rows), then a line per step with ✓ (passed), ✗
(stopped the event) or · (a fact that decides nothing) and the values the step saw.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from engine.config import Settings
from engine.explain import (
    EventExplanation,
    RuleExplanation,
    WhereOf,
    explain_event,
    organizations_rules,
)
from rules import Rule, load_rules
from rules.envsubst import UnsetVariableError, expand_env
from rules.explain import BLOCK, PASS, Verdict
from sql import DatabaseError

MARKS = {PASS: "✓", BLOCK: "✗"}


def verdict_line(verdict: Verdict) -> str:
    """``✗ where: fails: where.score.lt: score is 90, expected lt 50``."""
    return f"{MARKS.get(verdict.outcome, '·')} {verdict.step}: {verdict.summary}"


def format_explanation(explanation: EventExplanation) -> str:
    """The readable text of ``engine rules explain``."""
    event = explanation.event
    lines = [
        f"event {event.get('id')} ({event.get('registry')} {event.get('event_type')},"
        f" chain {event.get('chain_id')}, block {event.get('block_number')},"
        f" timestamp {event.get('timestamp')}{_utc(event.get('timestamp'))},"
        f" stored {event.get('created_at')})",
        _evaluated_line(explanation),
    ]
    if not explanation.rules:
        lines.append(
            "no rule's `on` matches this event (chain_id, registry and event_type above);"
            " name one with --rule to see why"
        )
    for rule in explanation.rules:
        lines.append("")
        lines.extend(rule_block(rule))
    return "\n".join(lines)


def rule_block(rule: RuleExplanation) -> list[str]:
    """One rule's lines: facts first, then the simulated steps."""
    source = f"{rule.rule.source_file}:{rule.rule.source_line}"
    where = "" if rule.rule.org_id is not None else f" ({source})"
    lines = [f"rule '{rule.shown_id}'{where}"]
    if rule.actions:
        rows = ", ".join(
            f"#{a['id']} {a['action_type']} {a['status']}"
            + (" (digest)" if str(a["event_id"]).startswith("digest:") else "")
            for a in rule.actions
        )
        lines.append(f"  fired: {len(rule.actions)} action row(s): {rows}")
    else:
        lines.append("  action rows: none for this event")
    stored = (
        f"the group's state stored {rule.state_updated_at}"
        if rule.state_updated_at
        else "a fresh state (nothing stored for this group)"
    )
    lines.append(f"  its steps now, with {stored}:")
    lines.extend(f"  {verdict_line(v)}" for v in rule.verdicts)
    lines.append(f"  => {'would fire' if rule.would_fire else 'would not fire'}")
    return lines


def _utc(timestamp: Any) -> str:
    if type(timestamp) is not int:
        return ""
    try:
        return f" = {dt.datetime.fromtimestamp(timestamp, dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
    except (OverflowError, OSError, ValueError):
        return ""


def _evaluated_line(explanation: EventExplanation) -> str:
    if explanation.evaluated is None:
        return f"evaluated: unknown (no engine has run with cursor '{explanation.cursor}' yet)"
    if explanation.evaluated:
        return f"evaluated: yes (cursor '{explanation.cursor}' has passed it)"
    return f"evaluated: not yet (cursor '{explanation.cursor}' has not reached it)"


def expanded_where(environ: Mapping[str, str]) -> WhereOf:
    """A file rule's `where` with ``${VAR}`` expanded as the loader did (as written when
    a variable cannot be read any more)."""

    def where(rule: Rule) -> Any:
        spec = rule.document.get("where")
        if rule.org_id is not None:
            return spec
        try:
            return expand_env(spec, environ)
        except UnsetVariableError:
            return spec

    return where


def run_explain(settings: Settings, args: argparse.Namespace) -> int:
    """``engine rules explain EVENT_ID [--rule ID] [--json]``: the config's rule files and
    every organization's rules, as the running engine has them."""
    loading = settings.rule_loading()
    loaded = load_rules(list(settings.rules), **loading)
    for error in loaded.errors:
        print(error, file=sys.stderr)
    if loaded.errors:
        return 1

    async def explain() -> EventExplanation:
        try:
            conn = await asyncpg.connect(settings.database_url, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise DatabaseError(f"cannot connect to the database: {exc}") from exc
        try:
            rules: Sequence[Rule] = [*loaded.rules, *await organizations_rules(conn)]
            return await explain_event(
                conn,
                args.event_id,
                rules,
                only=args.rule,
                cursor=settings.engine.cursor_name,
                skew_s=settings.engine.max_event_future_skew_s,
                where_of=expanded_where(loading["environ"]),
            )
        finally:
            await conn.close()

    explanation = asyncio.run(explain())
    if args.json:
        print(json.dumps(explanation.as_json(), indent=2, ensure_ascii=False, default=str))
    else:
        print(format_explanation(explanation))
    return 0

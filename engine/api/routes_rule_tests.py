"""Trying rules without side effects: their ``tests:``, given events, and backtests.

``POST /v1/rule-tests`` and ``POST /v1/rules/{id}/test`` run the same runner as
`engine rules test`; ``POST /v1/rules/{id}/backtest`` evaluates the stored rule over
stored events with fresh state, as `engine rules backtest` does (engine.backtest).
Nothing is written and nothing is sent: a rule's state, its action rows and its
receivers never see any of it.  Evaluation runs in a thread, so one long test does not
hold up the process's other requests; a backtest reads at most
``api.backtest_max_events`` events and stops after ``api.backtest_timeout_s``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Body, Request

from engine.api.db import BEARER, settings_of, tenant_transaction
from engine.api.errors import ApiError, ErrorItem, error_responses, not_found
from engine.api.models import (
    BacktestReport,
    BacktestRequest,
    EventsToTest,
    RuleTestReport,
    RuleTestRequest,
)
from engine.api.routes_rules import stored_rule
from engine.api.rule_bodies import compile_tenant_document, parse_rule_text
from engine.api.rule_runs import enabled, firing_answer, rule_test_report, with_request_events
from engine.backtest import Backtest, StoredClock, parse_time
from engine.event_rows import events_from_rows
from engine.tenants.keys import Role
from rules.errors import EngineError
from sql import query

router = APIRouter(tags=["rule tests"], dependencies=[BEARER])
FETCH_ROWS = 2000
# Times a backtest range may take: unix seconds PostgreSQL's BIGINT and datetime both hold.
LATEST_S = 253_402_300_799  # 9999-12-31T23:59:59Z
UNTESTED_ID = "rule-under-test"


@router.post(
    "/v1/rule-tests",
    summary="Test a rule that need not be stored",
    response_model=RuleTestReport,
    responses=error_responses(422),
)
async def test_given_rule(wanted: RuleTestRequest, request: Request) -> dict[str, Any]:
    """Run the `tests:` of the rule in the body and, when `events` are given, evaluate them
    in order from fresh state: which fire, and what each firing's actions render to.
    Nothing is stored or sent.  A rule that does not compile answers 422 as PUT would."""
    async with tenant_transaction(request, Role.VIEWER, "test rules"):
        if isinstance(wanted.rule, str):
            raw, lines, base = parse_rule_text(wanted.rule)
        else:
            raw, lines, base = wanted.rule, None, ()
        given_id = raw.get("id") if isinstance(raw, dict) else None
        rule_id = given_id if isinstance(given_id, str) else UNTESTED_ID
        document = with_request_events(raw, wanted.events)
        rule = compile_tenant_document(
            document,
            rule_id,
            lines,
            base,
            timeout_limits_s=settings_of(request).action_timeout_limits_s,
        )
        with_events = wanted.events is not None
        return await asyncio.to_thread(rule_test_report, rule, with_events=with_events)


@router.post(
    "/v1/rules/{rule_id}/test",
    summary="Test a stored rule",
    response_model=RuleTestReport,
    responses=error_responses(404, 422),
)
async def test_stored_rule(
    rule_id: str,
    request: Request,
    wanted: Annotated[EventsToTest | None, Body()] = None,
) -> dict[str, Any]:
    """Run the stored rule's `tests:` (and the `events` of the body, if any) as
    `POST /v1/rule-tests` does.  Nothing is stored or sent; the rule's state is untouched."""
    async with tenant_transaction(request, Role.VIEWER, "test rules") as tx:
        row = await stored_rule(tx, rule_id)
        if row is None:
            raise not_found(f"rule {rule_id!r}")
        events = wanted.events if wanted is not None else None
        document = with_request_events(json.loads(row["document"]), events)
        rule = compile_tenant_document(
            document, rule_id, timeout_limits_s=settings_of(request).action_timeout_limits_s
        )
        return await asyncio.to_thread(rule_test_report, rule, with_events=events is not None)


def _moment(field: str, text: str, now: float) -> int:
    try:
        seconds = parse_time(text, now=now)
    except EngineError as exc:
        message = f"{field}: {exc}"
        raise ApiError(
            422, message, errors=[ErrorItem(path=field, line=None, message=message)]
        ) from None
    if not 0 <= seconds <= LATEST_S:
        message = f"{field}: must be between 1970 and 9999 (got {text!r})"
        raise ApiError(
            422, message, errors=[ErrorItem(path=field, line=None, message=message)]
        ) from None
    return seconds


def _feed(backtest: Backtest, events: list[dict[str, Any]], listed: list[Any], room: int) -> None:
    for firing in backtest.feed(events):
        if firing.step.fired and len(listed) < room:
            listed.append(firing_answer(firing))


@router.post(
    "/v1/rules/{rule_id}/backtest",
    summary="Backtest a stored rule over stored events",
    response_model=BacktestReport,
    responses=error_responses(404, 422),
)
async def backtest_rule(rule_id: str, request: Request, wanted: BacktestRequest) -> dict[str, Any]:
    """Evaluate the stored rule over the events whose block time is in [since, until),
    in the live cursor's order, from fresh state; list its firings (at most `limit` and
    `api.backtest_max_firings`) with their rendered actions.  Nothing is sent; the rule's
    live state is untouched.  At most `api.backtest_max_events` events are read, for at
    most `api.backtest_timeout_s`: `complete` says whether the whole range was."""
    settings = settings_of(request)
    bounds = settings.api
    now = time.time()
    since = _moment("since", wanted.since, now)
    until = int(now) + 1 if wanted.until is None else _moment("until", wanted.until, now)
    room = min(wanted.limit, bounds.backtest_max_firings)
    async with tenant_transaction(request, Role.VIEWER, "backtest rules") as tx:
        row = await stored_rule(tx, rule_id)
        if row is None:
            raise not_found(f"rule {rule_id!r}")
        rule = enabled(
            compile_tenant_document(
                json.loads(row["document"]),
                rule_id,
                timeout_limits_s=settings.action_timeout_limits_s,
            )
        )
        backtest = Backtest([rule], StoredClock(settings.engine.max_event_future_skew_s, now))
        listed: list[Any] = []
        complete = True
        deadline = time.monotonic() + bounds.backtest_timeout_s
        timeout_ms = max(1, int(bounds.backtest_timeout_s * 1000))
        await tx.conn.execute(query("api_statement_timeout"), f"{timeout_ms}ms")
        try:
            cursor = await tx.conn.cursor(
                query("backtest_events"), since, until, bounds.backtest_max_events + 1
            )
            while rows := await cursor.fetch(FETCH_ROWS):
                left = bounds.backtest_max_events - backtest.events
                if len(rows) > left:
                    rows, complete = rows[:left], False
                await asyncio.to_thread(_feed, backtest, events_from_rows(rows), listed, room)
                if not complete or len(rows) < FETCH_ROWS:
                    break
                if time.monotonic() > deadline:
                    complete = False
                    break
        except asyncpg.QueryCanceledError as exc:
            raise ApiError(
                503,
                f"reading the events took longer than api.backtest_timeout_s "
                f"({bounds.backtest_timeout_s:g}s): ask for a shorter range",
            ) from exc
    fired = backtest.fired[rule.id]
    return {
        "rule_id": rule_id,
        "since": dt.datetime.fromtimestamp(since, dt.UTC),
        "until": dt.datetime.fromtimestamp(until, dt.UTC),
        "events": backtest.events,
        "complete": complete,
        "fired": fired,
        "suppressed": backtest.suppressed[rule.id],
        "firings": listed,
        "truncated": fired > len(listed),
    }

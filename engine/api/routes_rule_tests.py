"""Trying rules without side effects: their ``tests:``, given events, and backtests.

``POST /v1/rule-tests`` and ``POST /v1/rules/{id}/test`` run the same runner as
`engine rules test`; ``POST /v1/rules/{id}/backtest`` evaluates the stored rule over
stored events with fresh state, as `engine rules backtest` does (engine.backtest).
Nothing is written and nothing is sent: a rule's state, its action rows and its
receivers never see any of it.  A tenant's templates are rendered only in the app's
render jail (engine.api.app), a child process stopped at ``worker.render_timeout_s`` /
``worker.render_memory_mb``: a rule test runs there whole (compiled, evaluated, rendered),
a backtest's firings are rendered there one action at a time.  Either way one request's
template cannot hold up the process's other requests.  A backtest's evaluation runs in a
thread, reads at most ``api.backtest_max_events`` events and stops after
``api.backtest_timeout_s``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Iterable
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Body, Request

from actions.render_jail import RenderJail, RenderOverBudget
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
from engine.api.rule_bodies import compile_tenant_document
from engine.api.rule_runs import enabled, firing_answer
from engine.backtest import Backtest, StoredClock, parse_time
from engine.event_rows import events_from_rows
from engine.tenants.keys import Role
from rules import Firing
from rules.errors import EngineError, TemplateRenderError
from sql import query

router = APIRouter(tags=["rule tests"], dependencies=[BEARER])
FETCH_ROWS = 2000
# Times a backtest range may take: unix seconds PostgreSQL's BIGINT and datetime both hold.
LATEST_S = 253_402_300_799  # 9999-12-31T23:59:59Z


def _over_budget(exc: RenderOverBudget) -> ApiError:
    return ApiError(422, str(exc), errors=[ErrorItem(path="actions", line=None, message=str(exc))])


async def _jailed_report(request: Request, wanted: dict[str, Any], rule_id: str) -> dict[str, Any]:
    """The rule test of ``wanted`` run in the render jail's child (rule_runs.report_for_request)."""
    jail: RenderJail = request.app.state.rule_jail
    wanted = {
        "op": "rule_test",
        "timeout_limits_s": dict(settings_of(request).action_timeout_limits_s or {}),
        **wanted,
    }
    try:
        answer = await jail.run(wanted, over_budget=lambda doing: f"rule {rule_id!r}: {doing}")
    except RenderOverBudget as exc:
        raise _over_budget(exc) from None
    refused = answer.get("refused")
    if refused is not None:
        errors = refused["errors"]
        raise ApiError(
            refused["status"],
            refused["message"],
            errors=None if errors is None else [ErrorItem(**item) for item in errors],
        )
    return dict(answer["report"])


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
        pass  # the key is checked; the test itself needs no database, nor its locks
    given = wanted.rule
    given_id = given.get("id") if isinstance(given, dict) else None
    rule_id = given_id if isinstance(given_id, str) else "the rule"
    return await _jailed_report(request, {"rule": given, "events": wanted.events}, rule_id)


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
    # Outside the transaction: a test holds no connection or lock while it runs.
    events = wanted.events if wanted is not None else None
    document = json.loads(row["document"])
    return await _jailed_report(
        request, {"rule": document, "rule_id": rule_id, "events": events}, rule_id
    )


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


def _feed(
    backtest: Backtest, events: list[dict[str, Any]], listed: list[Firing], room: int
) -> None:
    _list(backtest.feed(events), listed, room)


def _list(firings: Iterable[Firing], listed: list[Firing], room: int) -> None:
    for firing in firings:
        if firing.step.fired and len(listed) < room:
            listed.append(firing)


async def _rendered_answer(jail: RenderJail, firing: Firing) -> dict[str, Any]:
    """``firing_answer`` with each action rendered in the jail, as a worker renders it."""
    answer = firing_answer(firing, render=False)
    actions = []
    for action in firing.rule.actions:
        rendered, error = None, None
        try:
            rendered = await jail.render(
                action.kind, action.raw, firing.context, what=f"actions[{action.index}]"
            )
        except TemplateRenderError as exc:
            error = str(exc)
        except RenderOverBudget as exc:
            raise _over_budget(exc) from None
        actions.append(
            {
                "index": action.index,
                "kind": action.kind,
                "name": action.name,
                "rendered": rendered,
                "error": error,
            }
        )
    answer["actions"] = actions
    return answer


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
        backtest = Backtest(
            [rule], StoredClock(settings.engine.max_event_future_skew_s, now), since=since
        )
        listed: list[Firing] = []
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
            if complete:  # time-driven rules (absence): time passes on to `until`
                _list(backtest.finish(until), listed, room)
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
        "firings": [await _rendered_answer(request.app.state.rule_jail, f) for f in listed],
        "truncated": fired > len(listed),
    }

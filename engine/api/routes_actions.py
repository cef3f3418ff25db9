"""``/v1/actions``: an organization's audit rows (one per action firing), and replaying a
dead letter.

A retried row goes back to 'queued' with its attempts reset, as `engine actions retry`
does (the same query); `engine run`'s sweep enqueues queued rows older than
``engine.sweep_grace_s``, so the API needs no Redis.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Path, Query, Request

from engine.api.db import BEARER, tenant_transaction
from engine.api.errors import ApiError, error_responses, not_found
from engine.api.models import ActionPage, ActionRow, ActionStatus
from engine.api.routes_rules import ID_REGEX, trigger_id
from engine.tenants.keys import Role
from sql import query

router = APIRouter(prefix="/v1/actions", tags=["actions"], dependencies=[BEARER])
BIGINT_MAX = 2**63 - 1


def _action(row: asyncpg.Record) -> dict[str, Any]:
    found = dict(row)
    data = found.pop("response_data")
    found["response_data"] = None if data is None else json.loads(data)
    return found


@router.get(
    "",
    summary="List action results",
    response_model=ActionPage,
    responses=error_responses(422),
)
async def list_actions(
    request: Request,
    rule: Annotated[str | None, Query(pattern=ID_REGEX, description="a rule id")] = None,
    status: ActionStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=BIGINT_MAX, description="an action id")] = None,
) -> dict[str, Any]:
    """The organization's action results, newest first, `limit` at a time before `before`."""
    async with tenant_transaction(request, Role.VIEWER, "read action results") as tx:
        tid = None if rule is None else trigger_id(tx.org_id, rule)
        rows = await tx.conn.fetch(query("api_actions_page"), tx.org_id, tid, status, before, limit)
    actions = [_action(row) for row in rows]
    return {"actions": actions, "next": actions[-1]["id"] if len(actions) == limit else None}


@router.post(
    "/{action_id}/retry",
    summary="Retry a failed action (a dead letter)",
    response_model=ActionRow,
    responses=error_responses(403, 404, 409, 422),
)
async def retry_action(
    action_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)], request: Request
) -> dict[str, Any]:
    """Put a failed action back to 'queued' with fresh attempts; a worker runs it within
    `engine.sweep_grace_s` (plus a sweep interval) of this answer.  409 unless it failed."""
    async with tenant_transaction(request, Role.EDITOR, "retry actions") as tx:
        requeued = await tx.conn.fetch(query("requeue_failed"), [action_id])
        row = await tx.conn.fetchrow(query("api_action_get"), action_id)
        if row is None:
            raise not_found(f"action {action_id}")
        if not requeued:
            raise ApiError(
                409,
                f"action {action_id} is {row['status']!r}: only a failed action "
                "(a dead letter) can be retried",
            )
    return _action(row)

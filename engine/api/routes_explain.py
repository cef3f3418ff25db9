"""``GET /v1/events/{id}/explain``: why the organization's rules did (not) fire on an event.

The same explanation as ``engine rules explain`` (engine.explain), restricted to the
caller's organization: its rules are read in the request's tenant transaction, so
row-level security shows it only its own rules, state, digests and action rows.
Read-only, a viewer may ask.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from engine.api.db import BEARER, settings_of, tenant_transaction
from engine.api.errors import ApiError, error_responses
from engine.explain import ExplainError, explain_event, organizations_rules, shown_id
from engine.tenants.keys import Role

router = APIRouter(prefix="/v1/events", tags=["events"], dependencies=[BEARER])
EVENT_ID = r"^[A-Za-z0-9_.:-]{1,200}$"


@router.get(
    "/{event_id}/explain",
    summary="Explain why your rules did (not) fire on an event",
    responses=error_responses(404, 422),
)
async def explain(
    request: Request,
    event_id: Annotated[str, Path(pattern=EVENT_ID)],
    rule: Annotated[
        str | None,
        Query(max_length=200, description="only this rule of yours, also when its `on` differs"),
    ] = None,
) -> dict[str, Any]:
    """For each of your rules whose `on` matches the event (or `rule`): whether the engine
    evaluated the event, the action rows it produced, and each step's verdict."""
    settings = settings_of(request)
    async with tenant_transaction(request, Role.VIEWER, "explain events") as tx:
        rules = await organizations_rules(tx.conn)
        try:
            explanation = await explain_event(
                tx.conn,
                event_id,
                rules,
                only=rule,
                cursor=settings.engine.cursor_name,
                skew_s=settings.engine.max_event_future_skew_s,
                id_of=shown_id,
            )
        except ExplainError as exc:
            raise ApiError(404, str(exc)) from exc
    return explanation.as_json()

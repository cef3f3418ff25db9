"""``/v1/follows``: "tell me about every event of this agent", the most used shortcut.

A follow is an ordinary rule, written by the same code as ``PUT /v1/rules/{id}``
(compiled by the same compiler, counted in ``max_rules``, visible in ``GET /v1/rules``):
id ``follow-<chain_id>-<agent_id>``, ``on: {chain_id}``, ``where: {agent_id}`` and the
given actions.  Its id is deterministic, so following an agent again replaces its rule.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from engine.api.db import BEARER, settings_of, tenant_transaction
from engine.api.errors import error_responses, not_found
from engine.api.models import BIGINT_MAX, FollowPage, FollowRequest, FollowWritten
from engine.api.routes_rules import max_rules_default, remove_rule, stored, write_rule
from engine.api.rule_bodies import compile_tenant_document
from engine.tenants.keys import Role
from sql import query

router = APIRouter(prefix="/v1/follows", tags=["follows"], dependencies=[BEARER])
FOLLOW_ID = re.compile(r"^follow-(?P<chain>[0-9]+)-(?P<agent>[0-9]+)$")
ChainId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
AgentId = Annotated[int, Path(ge=0, le=BIGINT_MAX)]


def follow_rule_id(chain_id: int, agent_id: int) -> str:
    return f"follow-{chain_id}-{agent_id}"


def follow_document(wanted: FollowRequest) -> dict[str, Any]:
    """The rule a follow is: every event of the agent on that chain, the given actions."""
    return {
        "id": follow_rule_id(wanted.chain_id, wanted.agent_id),
        "description": f"Follows agent {wanted.agent_id} on chain {wanted.chain_id}",
        "on": {"chain_id": wanted.chain_id},
        "where": {"agent_id": wanted.agent_id},
        "actions": wanted.actions,
    }


@router.post(
    "",
    summary="Follow an agent",
    status_code=200,
    response_model=FollowWritten,
    responses={
        201: {"model": FollowWritten, "description": "The follow was created"},
        **error_responses(403, 409, 422),
    },
)
async def follow(wanted: FollowRequest, request: Request, response: Response) -> dict[str, Any]:
    """Fire `actions` on every event of agent `agent_id` on chain `chain_id` (201 created;
    200 when the agent was followed already: its rule is replaced).  A mistake in the
    actions answers 422 with its path (`actions[0].rest`), as PUT /v1/rules does."""
    document = follow_document(wanted)
    async with tenant_transaction(request, Role.EDITOR, "change rules") as tx:
        rule = compile_tenant_document(
            document,
            document["id"],
            timeout_limits_s=settings_of(request).action_timeout_limits_s,
        )
        written = await write_rule(tx, rule, max_rules_default(request))
    response.status_code = 201 if written.created else 200
    return {"chain_id": wanted.chain_id, "agent_id": wanted.agent_id, "rules": [written.answer()]}


@router.get("", summary="List follows", response_model=FollowPage, responses=error_responses(422))
async def list_follows(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[
        str | None, Query(pattern=FOLLOW_ID.pattern, description="a follow's rule id")
    ] = None,
) -> dict[str, Any]:
    """The organization's follows in rule id order, `limit` at a time after `after`."""
    async with tenant_transaction(request, Role.VIEWER, "read rules") as tx:
        rows = await tx.conn.fetch(query("api_follows_page"), tx.org_id, after, limit)
    follows = []
    for row in rows:
        ids = FOLLOW_ID.match(row["rule_id"])
        assert ids is not None  # the query selects only such ids
        follows.append(
            {"chain_id": int(ids["chain"]), "agent_id": int(ids["agent"]), "rule": stored(row)}
        )
    last = rows[-1]["rule_id"] if len(rows) == limit else None
    return {"follows": follows, "next": last}


@router.delete(
    "/{chain_id}/{agent_id}",
    summary="Stop following an agent",
    status_code=204,
    response_class=Response,
    responses=error_responses(403, 404, 422),
)
async def unfollow(chain_id: ChainId, agent_id: AgentId, request: Request) -> Response:
    """Delete the follow's rule and its state (as DELETE /v1/rules/{id} does)."""
    async with tenant_transaction(request, Role.EDITOR, "change rules") as tx:
        gone = await remove_rule(tx, follow_rule_id(chain_id, agent_id))
    if not gone:
        raise not_found(f"a follow of agent {agent_id} on chain {chain_id}")
    return Response(status_code=204)

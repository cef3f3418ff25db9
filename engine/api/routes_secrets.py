"""``/v1/secrets`` and ``/v1/agent-tokens``: credentials a tenant's rules use, write-only.

A value is encrypted here, in the API process, under config ``secrets_key``
(engine.tenants.secrets_box) with the row's identity as associated data, and only the
ciphertext is stored.  No answer of any endpoint carries a value: the lists show names
(and agents) with their times.  Without ``secrets_key`` nothing can be stored: 503, with
the message that tells the operator what to set.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from engine.api.db import BEARER, tenant_transaction
from engine.api.errors import ApiError, error_responses, not_found
from engine.api.models import (
    SECRET_NAME,
    AgentTokenList,
    AgentTokenValue,
    AgentTokenWritten,
    SecretList,
    SecretValue,
    SecretWritten,
)
from engine.tenants.keys import Role
from engine.tenants.secrets_box import SecretsBox, SecretsKeyMissing, agent_token_aad, secret_aad
from sql import query

router = APIRouter(tags=["secrets"], dependencies=[BEARER])
BIGINT_MAX = 2**63 - 1
SecretName = Annotated[str, Path(pattern=SECRET_NAME, description="a secret's name")]
ChainId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
AgentId = Annotated[int, Path(ge=0, le=BIGINT_MAX)]


def seal(request: Request, plain: str, aad: str) -> bytes:
    """``plain`` encrypted for the row ``aad``; 503 when no secrets_key is configured."""
    box: SecretsBox = request.app.state.secrets_box
    try:
        return box.seal(plain, aad)
    except SecretsKeyMissing as exc:
        raise ApiError(503, str(exc)) from exc


def _written(description: str, model: type[Any]) -> dict[int | str, dict[str, Any]]:
    return {201: {"model": model, "description": description}, **error_responses(403, 422)}


@router.put(
    "/v1/secrets/{name}",
    summary="Store a secret",
    status_code=200,
    response_model=SecretWritten,
    responses=_written("The secret was created", SecretWritten),
)
async def put_secret(
    name: SecretName, wanted: SecretValue, request: Request, response: Response
) -> dict[str, Any]:
    """Store `value` under `name`, encrypted (201 created, 200 replaced).  The value is
    never shown again; a rule uses it as `{secret: NAME}`."""
    async with tenant_transaction(request, Role.EDITOR, "store secrets") as tx:
        sealed = seal(request, wanted.value, secret_aad(tx.org_id, name))
        row = await tx.conn.fetchrow(query("api_secret_upsert"), tx.org_id, name, sealed)
    response.status_code = 201 if row["created"] else 200
    return dict(row)


@router.get(
    "/v1/secrets",
    summary="List secrets (names only)",
    response_model=SecretList,
    responses=error_responses(),
)
async def list_secrets(request: Request) -> dict[str, Any]:
    """The organization's secret names with their times; never a value."""
    async with tenant_transaction(request, Role.VIEWER, "read secret names") as tx:
        rows = await tx.conn.fetch(query("api_secrets_list"), tx.org_id)
    return {"secrets": [dict(row) for row in rows]}


@router.delete(
    "/v1/secrets/{name}",
    summary="Delete a secret",
    status_code=204,
    response_class=Response,
    responses=error_responses(403, 404, 422),
)
async def delete_secret(name: SecretName, request: Request) -> Response:
    """Delete the secret; a rule that names it fails its actions until it is stored again."""
    async with tenant_transaction(request, Role.EDITOR, "delete secrets") as tx:
        gone = await tx.conn.fetchval(query("api_secret_delete"), tx.org_id, name)
    if gone is None:
        raise not_found(f"secret {name!r}")
    return Response(status_code=204)


@router.put(
    "/v1/agent-tokens/{chain_id}/{agent_id}",
    summary="Store an agent's MCP token",
    status_code=200,
    response_model=AgentTokenWritten,
    responses=_written("The token was created", AgentTokenWritten),
)
async def put_agent_token(
    chain_id: ChainId,
    agent_id: AgentId,
    wanted: AgentTokenValue,
    request: Request,
    response: Response,
) -> dict[str, Any]:
    """The bearer token an `mcp` action in `agent:` mode sends to this agent's MCP
    endpoint, encrypted like a secret (201 created, 200 replaced); never shown again."""
    async with tenant_transaction(request, Role.EDITOR, "store agent tokens") as tx:
        sealed = seal(request, wanted.token, agent_token_aad(tx.org_id, chain_id, agent_id))
        row = await tx.conn.fetchrow(
            query("api_agent_token_upsert"), tx.org_id, chain_id, agent_id, sealed
        )
    response.status_code = 201 if row["created"] else 200
    return dict(row)


@router.get(
    "/v1/agent-tokens",
    summary="List agents with a stored MCP token",
    response_model=AgentTokenList,
    responses=error_responses(),
)
async def list_agent_tokens(request: Request) -> dict[str, Any]:
    """Which agents have a token (chain and agent ids); never a token."""
    async with tenant_transaction(request, Role.VIEWER, "read agent token ids") as tx:
        rows = await tx.conn.fetch(query("api_agent_tokens_list"), tx.org_id)
    return {"agent_tokens": [dict(row) for row in rows]}


@router.delete(
    "/v1/agent-tokens/{chain_id}/{agent_id}",
    summary="Delete an agent's MCP token",
    status_code=204,
    response_class=Response,
    responses=error_responses(403, 404, 422),
)
async def delete_agent_token(chain_id: ChainId, agent_id: AgentId, request: Request) -> Response:
    async with tenant_transaction(request, Role.EDITOR, "delete agent tokens") as tx:
        gone = await tx.conn.fetchval(
            query("api_agent_token_delete"), tx.org_id, chain_id, agent_id
        )
    if gone is None:
        raise not_found(f"the token of agent {agent_id} on chain {chain_id}")
    return Response(status_code=204)

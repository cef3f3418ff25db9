"""``/v1/keys``: an admin manages its own organization's API keys.

A key is shown once, in the answer that creates it; only its hash is stored
(engine.tenants.keys).  Revoking keeps the row (``revoked_at``) so the audit trail stays.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from engine.api.db import BEARER, tenant_transaction
from engine.api.errors import error_responses, not_found
from engine.api.models import KeyList, KeyRequest, NewKey
from engine.tenants.keys import Role, new_key
from sql import query

router = APIRouter(prefix="/v1/keys", tags=["keys"], dependencies=[BEARER])
BIGINT_MAX = 2**63 - 1


@router.post(
    "",
    summary="Create an API key",
    status_code=201,
    response_model=NewKey,
    responses=error_responses(403, 422),
)
async def create_key(wanted: KeyRequest, request: Request) -> dict[str, Any]:
    """A new key of the organization, with `role` and an optional `name`; its text is in
    the answer, once."""
    async with tenant_transaction(request, Role.ADMIN, "manage API keys") as tx:
        key = new_key()
        row = await tx.conn.fetchrow(
            query("api_key_insert"), tx.org_id, wanted.role, wanted.name, key.lookup, key.digest
        )
    return {**dict(row), "key": key.text}


@router.get("", summary="List API keys", response_model=KeyList, responses=error_responses(403))
async def list_keys(request: Request) -> dict[str, Any]:
    """The organization's keys, revoked ones included; never their text."""
    async with tenant_transaction(request, Role.ADMIN, "manage API keys") as tx:
        rows = await tx.conn.fetch(query("api_keys_list"), tx.org_id)
    return {"keys": [dict(row) for row in rows]}


@router.delete(
    "/{key_id}",
    summary="Revoke an API key",
    status_code=204,
    response_class=Response,
    responses=error_responses(403, 404, 422),
)
async def revoke_key(
    key_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)], request: Request
) -> Response:
    """Revoke the key: every request with it answers 401 from now on."""
    async with tenant_transaction(request, Role.ADMIN, "manage API keys") as tx:
        revoked = await tx.conn.fetchval(query("api_key_revoke"), key_id)
    if revoked is None:
        raise not_found(f"API key {key_id}")
    return Response(status_code=204)

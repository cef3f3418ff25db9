"""Who is asking: the bearer key of a request, checked against ``api_keys``.

Authentication runs inside the request's transaction, already as ``engine_tenant``: the
``engine_authenticate`` SQL function (SECURITY DEFINER, sql/004) is the only way that role
can read a key row before it knows its organization.  Every failure is the same 401 with
``WWW-Authenticate: Bearer``, and a missing, malformed, unknown or revoked key differ only
in their message; a key is compared in constant time (engine.tenants.keys).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from engine.api.errors import ApiError
from engine.tenants.keys import Role, key_lookup, key_matches
from sql import query

CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Caller:
    """An authenticated key: its organization and what it may do."""

    key_id: int
    org_id: int
    role: Role


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers=CHALLENGE)


def bearer_key(authorization: str | None) -> str:
    """The key text of an ``Authorization: Bearer <key>`` header, or a 401."""
    if not authorization:
        raise unauthorized("send your API key as `Authorization: Bearer <key>`")
    scheme, _, text = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not text.strip():
        raise unauthorized("the Authorization header must be `Bearer <key>`")
    return text.strip()


async def authenticate(conn: asyncpg.Connection, key_text: str) -> Caller:
    """The caller whose key this is; a 401 for a malformed, unknown or revoked key."""
    lookup = key_lookup(key_text)
    if lookup is None:
        raise unauthorized("this is not an API key (keys look like te_<12 chars>_<43 chars>)")
    row = await conn.fetchrow(query("api_authenticate"), lookup)
    if row is None or not key_matches(key_text, row["hash"]):
        raise unauthorized("unknown API key")
    if row["revoked"]:
        raise unauthorized("this API key was revoked; ask an admin of your organization")
    return Caller(key_id=row["key_id"], org_id=row["org_id"], role=Role(row["role"]))


def require(caller: Caller, needed: Role, doing: str) -> None:
    """A 403 unless the caller's role allows ``doing`` (viewer < editor < admin)."""
    if not caller.role.allows(needed):
        raise ApiError(
            403,
            f"a {caller.role.value} key may not {doing}: it takes an {needed.value}"
            f"{' or admin' if needed is Role.EDITOR else ''} key",
        )

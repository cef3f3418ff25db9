"""The API's connections, and the one transaction each request's database work runs in.

``tenant_transaction`` is the only way route code reaches the database: it takes a pooled
connection, begins a transaction, becomes ``engine_tenant`` (SET LOCAL ROLE, so the
row-level security policies of sql/004 apply even when the configured DSN is a
superuser's), authenticates the key, and sets ``engine.org_id`` to the key's organization
for the rest of the transaction.  The transaction commits when the route's block ends
without an error, before the answer is sent, and rolls back otherwise.  Tenant tables are
never queried outside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from fastapi import Request, Security
from fastapi.security import HTTPBearer

from engine.api.auth import Caller, authenticate, bearer_key, require
from engine.config import ApiSettings, Settings
from engine.tenants.keys import Role
from sql import DatabaseError, query

# Declares the scheme in the OpenAPI document (the docs' "Authorize" button); the header
# itself is checked by tenant_transaction, inside the request's transaction.
BEARER = Security(HTTPBearer(auto_error=False, description="an API key: te_…"))


@dataclass(frozen=True)
class TenantTx:
    """A request's transaction: its connection, as engine_tenant of the caller's org."""

    conn: asyncpg.Connection
    caller: Caller

    @property
    def org_id(self) -> int:
        return self.caller.org_id


async def open_pool(database_url: str, api: ApiSettings) -> asyncpg.Pool:
    """The process's pool; a clear error when the database cannot be reached."""
    try:
        pool = await asyncpg.create_pool(
            database_url,
            min_size=api.db_pool_min_size,
            max_size=max(api.db_pool_max_size, api.db_pool_min_size),
            timeout=api.db_connect_timeout_s,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise DatabaseError(f"engine api cannot connect to the database: {exc}") from exc
    assert pool is not None
    return pool


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@asynccontextmanager
async def tenant_transaction(request: Request, needed: Role, doing: str) -> AsyncIterator[TenantTx]:
    """Authenticate the request and run its database work as its organization.

    401 for a missing or bad key, 403 when its role may not do ``doing``.
    """
    key_text = bearer_key(request.headers.get("authorization"))
    pool: asyncpg.Pool = request.app.state.pool
    timeout = settings_of(request).api.db_connect_timeout_s
    async with pool.acquire(timeout=timeout) as conn, conn.transaction():
        await conn.execute(query("api_become_tenant"))
        caller = await authenticate(conn, key_text)
        await conn.execute(query("api_set_org"), str(caller.org_id))
        require(caller, needed, doing)
        await conn.execute(query("api_touch_key"), caller.key_id)
        yield TenantTx(conn=conn, caller=caller)

"""The agent directory backed by the events table: an agent's registration URI is the
token_uri of its latest identity event (Registered or URIUpdated) on that chain."""

from __future__ import annotations

import psycopg

import sql


class PostgresAgentDirectory:
    """One lazily opened async connection, reopened after a failure."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    async def token_uri(self, chain_id: int, agent_id: int) -> str | None:
        for attempt in (1, 2):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self.dsn, autocommit=True, cursor_factory=psycopg.AsyncRawCursor
                    )
                cursor = await self._conn.execute(
                    sql.query("agent_token_uri").encode(), (chain_id, agent_id)
                )
                row = await cursor.fetchone()
                return None if row is None else str(row[0])
            except psycopg.OperationalError:
                await self.aclose()
                if attempt == 2:
                    raise
        return None

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

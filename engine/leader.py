"""The leader lock of ``engine run``: one evaluating process per cursor.

A session advisory lock held on a connection of its own: the lock lives exactly as long
as that connection, so a leader that dies or loses the database loses the lock, and a
standby takes it over.  It never evaluates anything itself.
"""

from __future__ import annotations

import asyncio

import asyncpg

from sql import query

#: What an unreachable or failing database looks like to asyncpg: the daemon retries these
#: with backoff, and the lock takes them as lost.
CONNECTION_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError)


class LeaderLock:
    """A session advisory lock on its own connection: losing the connection loses the lock."""

    def __init__(
        self, dsn: str, name: str, *, connect_timeout_s: float, check_timeout_s: float
    ) -> None:
        self.dsn, self.name = dsn, name
        self.connect_timeout_s = connect_timeout_s
        self.check_timeout_s = check_timeout_s
        self._conn: asyncpg.Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def try_acquire(self) -> bool:
        if self.held:
            return True
        conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout_s)
        if await conn.fetchval(query("leader_try_lock"), self.name):
            self._conn = conn
            return True
        await conn.close()
        return False

    async def check(self) -> bool:
        """Still the leader? A cheap round trip on the lock's connection."""
        if not self.held:
            return False
        assert self._conn is not None
        try:
            await self._conn.fetchval(query("ping"), timeout=self.check_timeout_s)
            return True
        except CONNECTION_ERRORS:
            await self.release()
            return False

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

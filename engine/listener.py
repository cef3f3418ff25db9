"""The doorbell: a dedicated asyncpg connection LISTENing on ``new_event``.

A notification only rings the bell; the evaluator reads the table through its cursor.
The bell also rings on every (re)connect, because notifications sent while nobody
listened are lost and the cursor must catch up.  The connection is checked on every
poll tick and re-established with exponential backoff when it, or the server, goes away.
This module must never read events itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import asyncpg

from engine.config import EngineTunables
from sql import query

log = logging.getLogger(__name__)

CHANNEL = "new_event"
PROBE_CHANNEL = "engine_probe"
APPLICATION_NAME = "engine-listener"


class Listener:
    """Keeps a LISTEN connection alive and rings ``doorbell`` when events may be waiting."""

    def __init__(self, dsn: str, doorbell: asyncio.Event, tunables: EngineTunables) -> None:
        self.dsn = dsn
        self.doorbell = doorbell
        self.tunables = tunables
        self.connected = False
        self.reconnects = 0
        self.notifications = 0
        self._lost = asyncio.Event()
        self._probes: dict[str, asyncio.Future[float]] = {}
        self._conn: asyncpg.Connection | None = None

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        if channel == PROBE_CHANNEL:
            waiter = self._probes.pop(payload, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(time.monotonic())
            return
        self.notifications += 1
        self.doorbell.set()

    def _on_terminate(self, _conn: Any) -> None:
        self._lost.set()

    async def run(self) -> None:
        """Forever: connect, listen, watch the connection; back off between failures."""
        delay = self.tunables.reconnect_min_s
        first = True
        while True:
            try:
                await self._connect()
            except Exception as exc:  # whatever it is, the doorbell must come back
                log.warning("listener cannot connect", extra={"error": str(exc), "retry_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.tunables.reconnect_max_s)
                continue
            delay = self.tunables.reconnect_min_s
            if not first:
                self.reconnects += 1
                log.info("listener reconnected", extra={"reconnects": self.reconnects})
            first = False
            self.doorbell.set()  # catch up on whatever was missed while not listening
            await self._watch()
            self.connected = False
            await self._close()

    async def _connect(self) -> None:
        self._lost.clear()
        conn = await asyncpg.connect(
            self.dsn,
            timeout=self.tunables.db_connect_timeout_s,
            server_settings={"application_name": APPLICATION_NAME},
        )
        conn.add_termination_listener(self._on_terminate)
        await conn.add_listener(CHANNEL, self._on_notify)
        await conn.add_listener(PROBE_CHANNEL, self._on_notify)
        self._conn = conn
        self.connected = True

    async def _watch(self) -> None:
        """Return when the connection is lost; a cheap query each tick detects half-dead links."""
        assert self._conn is not None
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self.tunables.poll_interval_s)
            if self._lost.is_set() or self._conn.is_closed():
                log.warning("listener connection lost")
                return
            try:
                await self._conn.fetchval(
                    query("ping"),
                    timeout=max(
                        self.tunables.listener_ping_timeout_s, self.tunables.poll_interval_s
                    ),
                )
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.warning("listener connection lost")
                return

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def probe(self, pool: asyncpg.Pool, timeout_s: float) -> float | None:
        """NOTIFY round trip through this listener, in seconds; None when it fails."""
        if not self.connected:
            return None
        token = secrets.token_hex(8)
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._probes[token] = waiter
        started = time.monotonic()
        try:
            await pool.execute(query("notify_probe"), PROBE_CHANNEL, token, timeout=timeout_s)
            received = await asyncio.wait_for(waiter, timeout_s)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None
        finally:
            self._probes.pop(token, None)
        return received - started

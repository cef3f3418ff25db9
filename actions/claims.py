"""The claim/lease state machine of action rows, from the worker's side.

A worker claims a row atomically (the only way into 'running'), holds it for a lease,
and finishes it with the attempt's outcome, fenced by the attempt number so a worker
that lost its lease cannot overwrite a newer attempt.  Every query runs on the async
driver: up to ``worker.concurrency`` actions share the worker's event loop, and one
action waiting for the database must never stall the others.  This module must never
decide what an outcome is (actions.job does) nor talk to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg

import sql

log = logging.getLogger(__name__)


class ActionStatus(StrEnum):
    """The ``status`` of an action_results row (SQL spells the same words)."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCESS = "success"
    FAILED = "failed"
    # Over its organization's max_firings_per_minute: written, never enqueued.
    QUOTA_EXCEEDED = "quota_exceeded"
    # Held back by a silence (actions.silence_gate): written, never sent.
    SILENCED = "silenced"


@dataclass(frozen=True)
class ReconnectBackoff:
    """How long to keep reconnecting to an unavailable database, and how often."""

    min_s: float
    max_s: float
    deadline_s: float  # then the query raises sql.DatabaseError


@dataclass(frozen=True)
class ClaimedAction:
    """A row this worker now owns until its lease expires."""

    id: int
    trigger_id: str
    event_id: str | None
    action_index: int
    action_type: str
    action_name: str | None
    attempt: int
    max_attempts: int
    backoff_s: float
    max_backoff_s: float
    spec: dict[str, Any]
    context: dict[str, Any]
    org_id: int | None = None  # None: a file rule's, the operator's


AsyncConnection = psycopg.AsyncConnection[Any]


class ActionClaims:
    """One long-lived async connection for claiming and finishing rows; reconnects."""

    def __init__(self, dsn: str, backoff: ReconnectBackoff) -> None:
        self.dsn = dsn
        self.backoff = backoff
        self._conn: AsyncConnection | None = None
        self._connecting = asyncio.Lock()

    async def _connection(self) -> AsyncConnection:
        """The open connection; concurrent callers wait for one reconnect, not each their own."""
        async with self._connecting:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.dsn,
                    autocommit=True,
                    cursor_factory=psycopg.AsyncRawCursor,
                    connect_timeout=10,
                )
            return self._conn

    async def _run(self, name: str, *params: Any) -> tuple[Any, ...] | None:
        """Run a query, reconnecting with backoff while the database is away."""
        deadline = time.monotonic() + self.backoff.deadline_s
        delay = self.backoff.min_s
        while True:
            conn: AsyncConnection | None = None
            try:
                conn = await self._connection()
                cursor = await conn.execute(sql.query(name).encode(), params or None)
                return await cursor.fetchone() if cursor.description else None
            except psycopg.OperationalError as exc:
                await self._discard(conn)
                if time.monotonic() + delay > deadline:
                    raise sql.DatabaseError(f"database unavailable: {exc}") from exc
                log.warning("action database unavailable, retrying", extra={"retry_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff.max_s)

    async def fetch_one(self, name: str, *params: Any) -> tuple[Any, ...] | None:
        """One row of another named query on this connection (a tenant's credentials)."""
        return await self._run(name, *params)

    async def claim(
        self, action_id: int, lease_s: float, crash_attempts: int
    ) -> ClaimedAction | None:
        """Take the row if it is queued, due, or abandoned; None means: nothing to do."""
        row = await self._run("claim_action", action_id, lease_s, crash_attempts)
        if row is None:
            return None
        return ClaimedAction(
            id=action_id,
            trigger_id=row[0],
            event_id=row[1],
            action_index=row[2],
            action_type=row[3],
            action_name=row[4],
            attempt=row[5],
            max_attempts=row[6],
            backoff_s=float(row[7]),
            max_backoff_s=float(row[8]),
            spec=json.loads(row[9]),
            context=json.loads(row[10]),
            org_id=row[11],
        )

    async def finish(
        self,
        claimed: ClaimedAction,
        *,
        status: ActionStatus,
        duration_ms: int,
        error: str | None = None,
        response_data: dict[str, Any] | None = None,
        retry_in_s: float | None = None,
    ) -> bool:
        """Record the attempt; False when the row was taken over meanwhile."""
        # PostgreSQL text and jsonb cannot hold NUL: a response body (or an error quoting
        # one) with a \0 would make this UPDATE fail, leaving the row 'running' until its
        # lease expired and the action was sent again, forever.  Store U+FFFD in its place.
        payload = (
            None if response_data is None else json.dumps(_without_nul(response_data), default=str)
        )
        if error is not None:
            error = error.replace("\x00", "\ufffd")
        row = await self._run(
            "finish_action",
            claimed.id,
            claimed.attempt,
            str(status),
            duration_ms,
            error,
            payload,
            retry_in_s,
        )
        if row is None:
            log.warning(
                "action row was taken over; result dropped", extra={"action_id": claimed.id}
            )
        return row is not None

    async def _discard(self, conn: AsyncConnection | None) -> None:
        """Close a connection that failed, unless another caller already replaced it."""
        async with self._connecting:
            if conn is not None and self._conn is conn:
                self._conn = None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


def _without_nul(value: Any) -> Any:
    """``value`` with every NUL character in its strings (keys included) replaced."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value

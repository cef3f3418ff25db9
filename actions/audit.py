"""The audit table from the worker's side: claim a row atomically, record the outcome.

Every attempt leaves its trace in ``action_results``: status, attempts, duration,
error, response.  The claim is the only way into 'running', and the finish is fenced by
the attempt number, so a worker that lost its lease cannot overwrite a newer attempt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg

import sql

log = logging.getLogger(__name__)


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


class AuditLog:
    """A long-lived connection for claiming and finishing rows; reconnects when broken."""

    def __init__(self, dsn: str, *, reconnect_timeout_s: float = 30.0) -> None:
        self.dsn = dsn
        self.reconnect_timeout_s = reconnect_timeout_s
        self._conn: sql.Connection | None = None

    def _run(self, name: str, *params: Any) -> tuple[Any, ...] | None:
        """Run a query, reconnecting with backoff while the database is away."""
        deadline = time.monotonic() + self.reconnect_timeout_s
        delay = 0.2
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = sql.connect(self.dsn)
                cursor = sql.run(self._conn, name, *params)
                return cursor.fetchone() if cursor.description else None
            except (psycopg.OperationalError, sql.DatabaseError) as exc:
                self.close()
                if time.monotonic() + delay > deadline:
                    raise sql.DatabaseError(f"database unavailable: {exc}") from exc
                log.warning("audit database unavailable, retrying", extra={"retry_s": delay})
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def claim(self, action_id: int, lease_s: float, crash_attempts: int) -> ClaimedAction | None:
        """Take the row if it is queued, due, or abandoned; None means: nothing to do."""
        row = self._run("claim_action", action_id, lease_s, crash_attempts)
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
        )

    def finish(
        self,
        claimed: ClaimedAction,
        *,
        status: str,
        duration_ms: int,
        error: str | None = None,
        response_data: dict[str, Any] | None = None,
        retry_in_s: float | None = None,
    ) -> bool:
        """Record the attempt; False when the row was taken over meanwhile."""
        # PostgreSQL text and jsonb cannot hold NUL: a response body (or an error quoting
        # one) with a \0 made this UPDATE fail, leaving the row 'running' until its lease
        # expired and the action was sent again, forever.  Store U+FFFD in its place.
        payload = (
            None if response_data is None else json.dumps(_without_nul(response_data), default=str)
        )
        if error is not None:
            error = error.replace("\x00", "\ufffd")
        row = self._run(
            "finish_action",
            claimed.id,
            claimed.attempt,
            status,
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

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def _without_nul(value: Any) -> Any:
    """``value`` with every NUL character in its strings (keys included) replaced."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value

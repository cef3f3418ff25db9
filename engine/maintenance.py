"""Retention and hourly statistics, applied in the background by the leading ``engine run``.

Two periodic jobs:

- **retention**: finished ``action_results`` rows older than ``action_results_days`` and
  ``events`` older than ``events_days`` are deleted in batches (each its own short
  transaction, so no statement holds locks for long); on TimescaleDB, event chunks are
  dropped whole instead, up to a cutoff no later than the oldest event still to be
  evaluated.  Retention never deletes an event that a cursor has not passed (a chain
  cursor of engine.confirmations: of its chain; so no event waiting for its
  confirmations goes), nor an action that is still queued, running or retrying.  The log
  of rule changes (``trigger_changes``) is kept ``trigger_changes_days``, the record of
  reorgs (``event_reorgs``) as long as events.
- **statistics**: the plain materialized views ``events_hourly`` and
  ``action_metrics_hourly`` are refreshed (``CONCURRENTLY`` once populated, so readers
  never wait).  A TimescaleDB continuous aggregate is left to TimescaleDB's own policy.

Both run as one task beside the evaluation loop, never inside it: a long refresh must
not delay events.  The SQL lives in ``sql/queries.sql``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from engine.config import RetentionSettings
from sql import query

log = logging.getLogger(__name__)

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError)
STATEMENT_TIMEOUT_S = 600.0


@dataclass
class RetentionReport:
    events_deleted: int = 0
    event_chunks_dropped: int = 0
    action_results_deleted: int = 0
    trigger_changes_deleted: int = 0
    event_reorgs_deleted: int = 0


def _rows(status: str) -> int:
    """The row count of a command tag such as ``DELETE 42``."""
    return int(status.rsplit(" ", 1)[-1]) if status and status[-1].isdigit() else 0


async def _delete_in_batches(pool: Any, name: str, days: int, batch_size: int) -> int:
    total = 0
    while True:
        deleted = _rows(await pool.execute(query(name), days, batch_size))
        total += deleted
        if deleted < batch_size:
            return total
        await asyncio.sleep(0)  # let the evaluation loop use the pool between batches


async def events_is_hypertable(pool: Any) -> bool:
    if not await pool.fetchval(query("retention_events_is_hypertable")):
        return False
    return bool(await pool.fetchval(query("retention_hypertable_check")))


async def _drop_event_chunks(pool: Any, days: int) -> int:
    cutoff = await pool.fetchval(query("retention_event_chunks_cutoff"), days)
    if cutoff is None:  # no cursor yet: nothing has been evaluated, nothing may go
        return 0
    dropped = await pool.fetchval(
        query("retention_drop_event_chunks"), cutoff, timeout=STATEMENT_TIMEOUT_S
    )
    return int(dropped)


async def apply_retention(pool: Any, settings: RetentionSettings) -> RetentionReport:
    """Delete (or drop) what is older than the configured ages; returns what went."""
    report = RetentionReport()
    batch = settings.delete_batch_size
    if await events_is_hypertable(pool):
        report.event_chunks_dropped = await _drop_event_chunks(pool, settings.events_days)
    else:
        report.events_deleted = await _delete_in_batches(
            pool, "retention_delete_events", settings.events_days, batch
        )
    report.action_results_deleted = await _delete_in_batches(
        pool, "retention_delete_action_results", settings.action_results_days, batch
    )
    report.trigger_changes_deleted = await _delete_in_batches(
        pool, "retention_delete_trigger_changes", settings.trigger_changes_days, batch
    )
    report.event_reorgs_deleted = await _delete_in_batches(
        pool, "retention_delete_event_reorgs", settings.events_days, batch
    )
    return report


async def refresh_statistics(pool: Any) -> list[str]:
    """Refresh the plain materialized views; returns the names refreshed."""
    refreshed = []
    for row in await pool.fetch(query("stats_views")):
        name = row["relname"]
        # CONCURRENTLY needs a populated view: the first refresh is a plain one.
        suffix = "_concurrently" if row["relispopulated"] else ""
        await pool.execute(query(f"refresh_{name}{suffix}"), timeout=STATEMENT_TIMEOUT_S)
        refreshed.append(name)
    return refreshed


class Maintenance:
    """Starts retention and statistics refreshes when due, one task at a time."""

    def __init__(self, settings: RetentionSettings) -> None:
        self.settings = settings
        self._next_retention = 0.0  # monotonic times; 0: due at the first opportunity
        self._next_refresh = 0.0
        self._task: asyncio.Task[None] | None = None

    def poke(self, pool: Any) -> None:
        """Called from the daemon's loop: starts a background task if something is due."""
        if pool is None or (self._task is not None and not self._task.done()):
            return
        now = time.monotonic()
        retention, refresh = now >= self._next_retention, now >= self._next_refresh
        if not (retention or refresh):
            return
        if retention:
            self._next_retention = now + self.settings.interval_s
        if refresh:
            self._next_refresh = now + self.settings.stats_refresh_s
        self._task = asyncio.create_task(self._run(pool, retention, refresh), name="maintenance")

    async def _run(self, pool: Any, retention: bool, refresh: bool) -> None:
        try:
            if retention:
                report = await apply_retention(pool, self.settings)
                log.info(
                    "retention applied",
                    extra=dataclasses.asdict(report),
                )
            if refresh:
                views = await refresh_statistics(pool)
                log.debug("statistics refreshed", extra={"views": ",".join(views)})
        except _DB_ERRORS as exc:
            # Not fatal: the next period tries again.
            log.warning("maintenance failed; retrying later", extra={"error": str(exc)})

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

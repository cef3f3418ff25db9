"""The dispatcher: after a batch commits, one RQ job per queued action row; and the sweep.

The row exists before the job (guarantee 3), and the job id is derived from the row id,
so enqueuing twice is harmless: the job claims its row atomically and a job whose row
is already claimed does nothing.  The sweep re-enqueues what a crash, a Redis outage or
an expired worker lease left behind, and retries whose time has come.

Jobs are written by ``actions.rq_internals``' script, which makes ``enqueue_many``'s
writes at a fraction of its cost, when that module verified the installed RQ; otherwise
by ``Queue.enqueue_many`` itself.  This module must never spell RQ's keys or fields: it
asks ``actions.rq_internals``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
import redis
import rq
from rq import Queue

from actions import rq_internals
from actions.claims import ActionStatus
from actions.job import run_action
from actions.rq_internals import LearnedWrites, job_description, job_id
from engine.config import WorkerTunables
from sql import query

log = logging.getLogger(__name__)

#: Jobs per script call: bounds how long one call holds Redis (about as long as the EXEC
#: of ``enqueue_many``'s transaction for as many jobs).
CHUNK = 1000


def _job_data(action_id: int, timeout_s: int) -> Any:
    """The ``enqueue_many`` entry of one action (the fallback, and what is learnt from)."""
    return Queue.prepare_data(
        run_action,
        args=(action_id,),
        job_id=job_id(action_id),
        timeout=timeout_s,
        result_ttl=0,  # the audit table keeps the result; Redis keeps nothing
        failure_ttl=24 * 3600,
        description=job_description(action_id),
    )


class Dispatcher:
    """Enqueues action jobs into RQ (synchronous: call it from a thread in async code)."""

    def __init__(self, redis_url: str, tunables: WorkerTunables) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.queue = Queue(tunables.queue, connection=self.redis)
        self.timeout_s = int(tunables.job_timeout_s)
        self.enqueued = 0
        self.failures = 0
        self._writes: LearnedWrites | None = None
        try:
            self._writes = rq_internals.learn_writes(
                self.queue, lambda action_id: _job_data(action_id, self.timeout_s)
            )
        except Exception as exc:  # any surprise: RQ's own path is always right
            _warn_fallback(exc)
        self._script = self.redis.register_script(rq_internals.ENQUEUE_LUA)

    def enqueue(self, action_ids: Sequence[int]) -> None:
        """One job per row; raises redis errors (the rows stay 'queued' for the sweep)."""
        if not action_ids:
            return
        # enqueue_many refuses a repeated id (ValueError): let it say so.
        if self._writes is None or len(set(action_ids)) != len(action_ids):
            self.queue.enqueue_many([_job_data(a, self.timeout_s) for a in action_ids])
            self.enqueued += len(action_ids)
            return
        for start in range(0, len(action_ids), CHUNK):
            chunk = action_ids[start : start + CHUNK]
            self._enqueue_chunk(self._writes, chunk)
            self.enqueued += len(chunk)

    def _enqueue_chunk(self, writes: LearnedWrites, action_ids: Sequence[int]) -> None:
        """``enqueue_many`` of these jobs, as one script call."""
        keys, args = writes.script_call(action_ids)
        self._script(keys=keys, args=args)

    def not_pending(self, action_ids: Sequence[int]) -> list[int]:
        """The ids whose job is not waiting or running in RQ (lost, finished or failed)."""
        return rq_internals.not_pending(self.redis, action_ids)

    def close(self) -> None:
        self.redis.close()


async def sweep_actions(
    dispatcher: Dispatcher,
    pool: asyncpg.Pool,
    *,
    grace_s: float,
    batch_size: int,
    crash_attempts: int,
) -> int | None:
    """Re-enqueue rows the dispatcher lost, retries that are due and expired leases.

    Returns how many were enqueued, or None when nothing was due (Redis was not asked);
    raises redis errors (the rows wait for the next sweep).  Rows out of crash attempts
    become dead letters first.
    """
    for row in await pool.fetch(query("fail_abandoned"), crash_attempts):
        log.warning("action abandoned by its workers: dead letter", extra={"action_id": row["id"]})
    rows = await pool.fetch(query("due_actions"), grace_s, batch_size, crash_attempts)
    if not rows:
        return None
    # A row whose lease expired belongs to a dead worker, whatever RQ believes.
    expired = [row["id"] for row in rows if row["status"] == ActionStatus.RUNNING]
    waiting = [row["id"] for row in rows if row["status"] != ActionStatus.RUNNING]
    lost = expired + await asyncio.to_thread(dispatcher.not_pending, waiting)
    await asyncio.to_thread(dispatcher.enqueue, lost)
    if lost:
        log.info("sweep re-enqueued actions", extra={"actions": len(lost)})
    return len(lost)


_warned = False


def _warn_fallback(exc: Exception) -> None:
    """Once a process: the fast path is off, jobs go through ``enqueue_many``."""
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "rq enqueue fast path disabled: using Queue.enqueue_many (slower)",
            extra={"reason": f"{type(exc).__name__}: {exc}", "rq": rq.__version__},
        )

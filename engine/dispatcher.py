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
from collections.abc import Mapping, Sequence
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
    """Enqueues action jobs into RQ (synchronous: call it from a thread in async code).

    The operator's actions go to the queue ``worker.queue``, each organization's to a
    queue of its own (``WorkerTunables.queue_of``), which workers take from in turn: one
    organization's backlog never stands in front of another's action.
    """

    def __init__(self, redis_url: str, tunables: WorkerTunables) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.tunables = tunables
        self.queue = Queue(tunables.queue, connection=self.redis)  # the operator's
        self.timeout_s = int(tunables.job_timeout_s)
        self.enqueued = 0
        self.failures = 0
        # What enqueue_many writes on the operator's queue, and on each organization's
        # (None: the fast path is off).  The job hash names its queue, so each queue's
        # writes are learnt, once a process.
        self._writes = self._learn_writes(self.queue)
        self._org_writes: dict[str, LearnedWrites | None] = {}
        self._script = self.redis.register_script(rq_internals.ENQUEUE_LUA)

    def queue_for(self, org_id: int | None) -> Queue:
        """The RQ queue the actions of ``org_id`` (None: the operator) are enqueued on."""
        name = self.tunables.queue_of(org_id)
        return self.queue if name == self.queue.name else Queue(name, connection=self.redis)

    def _learn_writes(self, queue: Queue) -> LearnedWrites | None:
        try:
            return rq_internals.learn_writes(
                queue, lambda action_id: _job_data(action_id, self.timeout_s)
            )
        except Exception as exc:  # any surprise: RQ's own path is always right
            _warn_fallback(exc)
            return None

    def _writes_for(self, queue: Queue) -> LearnedWrites | None:
        if queue is self.queue:
            return self._writes
        if queue.name not in self._org_writes:
            self._org_writes[queue.name] = self._learn_writes(queue)
        return self._org_writes[queue.name]

    def enqueue(
        self, action_ids: Sequence[int], org_of: Mapping[int, int | None] | None = None
    ) -> None:
        """One job per row, on its organization's queue (``org_of``: action id -> org id;
        an id not in it is the operator's); raises redis errors (the rows stay 'queued'
        for the sweep)."""
        by_queue: dict[int | None, list[int]] = {}
        for action_id in action_ids:
            org_id = None if org_of is None else org_of.get(action_id)
            by_queue.setdefault(org_id, []).append(action_id)
        for org_id, ids in by_queue.items():
            self._enqueue_on(self.queue_for(org_id), ids)

    def _enqueue_on(self, queue: Queue, action_ids: Sequence[int]) -> None:
        writes = self._writes_for(queue)
        # enqueue_many refuses a repeated id (ValueError): let it say so.
        if writes is None or len(set(action_ids)) != len(action_ids):
            queue.enqueue_many([_job_data(a, self.timeout_s) for a in action_ids])
            self.enqueued += len(action_ids)
            return
        for start in range(0, len(action_ids), CHUNK):
            chunk = action_ids[start : start + CHUNK]
            self._enqueue_chunk(writes, chunk)
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
    org_of = {row["id"]: row["org_id"] for row in rows if row["org_id"] is not None}
    await asyncio.to_thread(dispatcher.enqueue, lost, org_of)
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

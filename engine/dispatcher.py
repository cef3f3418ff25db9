"""The dispatcher: after a batch commits, one RQ job per queued action row.

The row exists before the job (guarantee 3), and the job id is derived from the row id,
so enqueuing twice is harmless: the job claims its row atomically and a job whose row
is already claimed does nothing.  The sweep re-enqueues what a crash, a Redis outage or
an expired worker lease left behind, and retries whose time has come.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis
from rq import Queue

from actions.job import job_id, run_action
from engine.config import WorkerTunables

log = logging.getLogger(__name__)

# RQ job states in which the job will still run: the sweep leaves those alone.
# Not "started": the sweep only asks about rows nobody has claimed (queued/retrying),
# and a started job claims its row first thing.  A job left "started" with its row
# unclaimed lost its worker (or Redis) between dequeue and claim, and RQ would keep it
# "started" until its registry cleanup, minutes later: the row would wait that long.
# Enqueuing again is harmless: of two jobs for one row, one claims it, the other skips.
_PENDING_JOB_STATES = {b"queued", b"deferred", b"scheduled"}


class Dispatcher:
    """Enqueues action jobs into RQ (synchronous: call it from a thread in async code)."""

    def __init__(self, redis_url: str, tunables: WorkerTunables) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.queue = Queue(tunables.queue, connection=self.redis)
        self.timeout_s = int(tunables.job_timeout_s)
        self.enqueued = 0
        self.failures = 0

    def enqueue(self, action_ids: Sequence[int]) -> None:
        """One job per row; raises redis errors (the rows stay 'queued' for the sweep)."""
        if not action_ids:
            return
        jobs = [
            Queue.prepare_data(
                run_action,
                args=(action_id,),
                job_id=job_id(action_id),
                timeout=self.timeout_s,
                result_ttl=0,  # the audit table keeps the result; Redis keeps nothing
                failure_ttl=24 * 3600,
                description=f"action {action_id}",
            )
            for action_id in action_ids
        ]
        self.queue.enqueue_many(jobs)
        self.enqueued += len(jobs)

    def not_pending(self, action_ids: Sequence[int]) -> list[int]:
        """The ids whose job is not waiting or running in RQ (lost, finished or failed)."""
        if not action_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for action_id in action_ids:
            pipe.hget(f"rq:job:{job_id(action_id)}", "status")
        states = pipe.execute()
        return [a for a, s in zip(action_ids, states, strict=True) if s not in _PENDING_JOB_STATES]

    def close(self) -> None:
        self.redis.close()

"""``engine worker``: RQ workers that keep their connections and event loop across jobs.

RQ's default Worker forks a process per job (imports and connections paid every
time); a SimpleWorker runs jobs in its own process, and the JobRunner installed before
it starts keeps one event loop, one database connection, one HTTP client and the
Telegram bots for its whole life.  It wires; it must never execute an action itself.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid

import redis
from rq import Queue, SimpleWorker

from actions.base import ActionRuntime
from actions.claims import ReconnectBackoff
from actions.directory import PostgresAgentDirectory
from actions.job import JobRunner, JobSettings, install_runner
from actions.render_jail import RenderBudget, RenderJail
from engine.config import Settings

log = logging.getLogger(__name__)


def build_runner(settings: Settings) -> JobRunner:
    """The per-process state of a worker: executors, their clients, the claims connection."""
    from actions.executors import EXECUTORS
    from actions.runtime import WorkerRuntime

    async def make_runtime() -> ActionRuntime:
        return WorkerRuntime.with_redis(
            settings.actions,
            redis_url=settings.redis_url,
            agents=PostgresAgentDirectory(settings.database_url),
        )

    tun = settings.worker
    job_settings = JobSettings(
        dsn=settings.database_url,
        attempt_timeout_s=tun.job_timeout_s,
        lease_s=tun.job_timeout_s + tun.lease_margin_s,
        crash_attempts=tun.crash_attempts,
        concurrency=tun.concurrency,
        db_backoff=ReconnectBackoff(
            min_s=tun.db_reconnect_min_s,
            max_s=tun.db_reconnect_max_s,
            deadline_s=tun.db_reconnect_deadline_s,
        ),
        environ=dict(os.environ),
    )
    # Templates render in a child process with hard limits, never in the worker itself.
    jail = RenderJail(RenderBudget(timeout_s=tun.render_timeout_s, memory_mb=tun.render_memory_mb))
    return JobRunner(job_settings, make_runtime, EXECUTORS, renderer=jail)


def run_worker(settings: Settings, *, burst: bool = False) -> int:
    """Take jobs until stopped (or, with ``burst``, until the queue is empty)."""
    runner = build_runner(settings)
    install_runner(runner)
    connection = redis.Redis.from_url(settings.redis_url)
    queue = Queue(settings.worker.queue, connection=connection)
    delay = settings.worker.redis_reconnect_min_s
    try:
        while True:
            name = f"engine-worker-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            try:
                worker = SimpleWorker([queue], connection=connection, name=name)
                log.info("worker started", extra={"queue": queue.name, "worker": name})
                worker.work(burst=burst, with_scheduler=False, logging_level="WARNING")
                return 0
            except redis.ConnectionError as exc:
                # RQ gives up on a lost Redis (it raises out of work()); a worker must
                # outlive an outage like the daemon does.  The rows stay in the audit
                # table, and the daemon's sweep re-enqueues whatever Redis lost.
                log.warning(
                    "redis unavailable; the worker waits and starts again",
                    extra={"error": str(exc), "retry_s": delay},
                )
                # RQ's handlers would only flag the dead worker: let SIGTERM/SIGINT stop us.
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                time.sleep(delay)
                delay = min(delay * 2, settings.worker.redis_reconnect_max_s)
    finally:
        install_runner(None)
        runner.close()

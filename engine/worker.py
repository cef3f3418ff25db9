"""``engine worker``: RQ workers that keep their connections and event loop across jobs.

RQ's default Worker forks a process per job (imports and connections paid every
time); a SimpleWorker runs jobs in its own process, and the JobRunner installed before
it starts keeps one event loop, one database connection, one HTTP client and the
Telegram bots for its whole life.  It wires; it must never execute an action itself.

A worker takes jobs from the operator's queue and from every organization's queue in
turn (RQ's round-robin dequeue), learning of organizations' new queues as their first
jobs arrive (``OrgQueuesWorker``): an organization's backlog waits in its own queue
instead of in front of everyone else's actions (docs/tenants.md, "Fairness").
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.worker import DequeueStrategy

from actions.base import ActionRuntime
from actions.claims import ReconnectBackoff
from actions.directory import PostgresAgentDirectory
from actions.errors import PermanentActionError, RetryableActionError
from actions.job import JobRunner, JobSettings, install_runner
from actions.redact import install_secret_log_filter
from actions.render_jail import RenderBudget, RenderJail
from actions.rq_internals import listen_on
from engine.config import Settings, WorkerTunables
from engine.tenants.secrets_box import (
    SecretsBox,
    SecretsKeyMissing,
    SecretUnreadable,
    agent_token_aad,
    secret_aad,
)

log = logging.getLogger(__name__)


class BoxOpener:
    """Opens tenants' sealed secrets for the job (actions.tenant_credentials.SealedOpener),
    saying what went wrong in the terms of an action's outcome."""

    def __init__(self, box: SecretsBox) -> None:
        self.box = box

    def _open(self, sealed: bytes, aad: str, what: str) -> str:
        try:
            return self.box.open(sealed, aad)
        except SecretsKeyMissing as exc:
            # The operator can fix the worker's config; the action waits for it.
            raise RetryableActionError(
                f"{what} cannot be opened: this worker has no secrets_key in its config"
            ) from exc
        except SecretUnreadable as exc:
            raise PermanentActionError(
                f"{what} does not open with this worker's secrets_key (was the key changed?"
                " store the secret again)"
            ) from exc

    def open_secret(self, org_id: int, name: str, sealed: bytes) -> str:
        return self._open(sealed, secret_aad(org_id, name), f"secret {name!r}")

    def open_agent_token(self, org_id: int, chain_id: int, agent_id: int, sealed: bytes) -> str:
        what = f"the token of agent {agent_id} on chain {chain_id}"
        return self._open(sealed, agent_token_aad(org_id, chain_id, agent_id), what)


class OrgQueuesWorker(SimpleWorker):
    """A SimpleWorker on the operator's queue that also listens on every organization's.

    Organizations' queues are found in RQ's registry of queues (``Queue.all``) at most
    every ``refresh_s``, and a worker with nothing to do wakes that often to look: an
    organization's first job waits at most about that long for a worker to listen.
    """

    def __init__(
        self, queues: list[Queue], *, org_queue_prefix: str, refresh_s: float, **kwargs: Any
    ) -> None:
        super().__init__(queues, **kwargs)
        self.org_queue_prefix = org_queue_prefix
        self.refresh_s = refresh_s
        self._refreshed_at = float("-inf")

    def listen_on_new_queues(self) -> list[str]:
        """Add the organizations' queues not listened on yet; their names."""
        known = {queue.name for queue in self.queues}
        new = sorted(
            (
                queue
                for queue in Queue.all(
                    connection=self.connection,
                    job_class=self.job_class,
                    serializer=self.serializer,
                )
                if queue.name.startswith(self.org_queue_prefix) and queue.name not in known
            ),
            key=lambda queue: queue.name,
        )
        if new:
            # At the end of the turn: the queues already waiting are not put off further.
            listen_on(self, new)
            log.info("worker listens on new queues", extra={"queues": [q.name for q in new]})
        return [queue.name for queue in new]

    def dequeue_job_and_maintain_ttl(
        self, timeout: Any, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        while True:
            if time.monotonic() - self._refreshed_at >= self.refresh_s:
                self.listen_on_new_queues()
                self._refreshed_at = time.monotonic()
            if timeout is None or max_idle_time is not None:  # burst, or the caller's limit
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            # Wait at most refresh_s at a time, so that a new queue is heard of while idle
            # (RQ types these int; BLPOP takes fractions of a second).
            wait_s: Any = self.refresh_s
            result = super().dequeue_job_and_maintain_ttl(wait_s, max_idle_time=wait_s)
            if result is not None:
                return result


def make_worker(connection: redis.Redis, tunables: WorkerTunables, name: str) -> OrgQueuesWorker:
    """A worker on the operator's queue and the organizations' (found as they appear)."""
    queue = Queue(tunables.queue, connection=connection)
    return OrgQueuesWorker(
        [queue],
        connection=connection,
        name=name,
        org_queue_prefix=tunables.org_queue_prefix,
        refresh_s=tunables.queue_refresh_s,
    )


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
        environ=settings.rules_environ(),
        max_timeouts_s=tun.max_action_timeouts_s,
        batch_wait_s=tun.batch_wait_s,
        silences_refresh_s=settings.engine.silences_refresh_s,
    )
    opener = BoxOpener(SecretsBox(settings.secrets_key))
    # Templates render in a child process with hard limits, never in the worker itself.
    jail = RenderJail(RenderBudget(timeout_s=tun.render_timeout_s, memory_mb=tun.render_memory_mb))
    return JobRunner(job_settings, make_runtime, EXECUTORS, opener, renderer=jail)


def run_worker(settings: Settings, *, burst: bool = False) -> int:
    """Take jobs until stopped (or, with ``burst``, until the queue is empty)."""
    # Every record this process writes passes the running attempt's secrets, masked.
    install_secret_log_filter(logging.getLogger().handlers)
    runner = build_runner(settings)
    install_runner(runner)
    connection = redis.Redis.from_url(settings.redis_url)
    delay = settings.worker.redis_reconnect_min_s
    try:
        while True:
            name = f"engine-worker-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            try:
                worker = make_worker(connection, settings.worker, name)
                log.info("worker started", extra={"queue": settings.worker.queue, "worker": name})
                worker.work(
                    burst=burst,
                    with_scheduler=False,
                    logging_level="WARNING",
                    dequeue_strategy=DequeueStrategy.ROUND_ROBIN,
                )
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

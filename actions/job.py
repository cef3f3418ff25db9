"""The RQ job: claim the row, render, execute, record.

``run_action(action_id)`` is what the dispatcher enqueues.  It runs inside a worker
process that installed a ``JobRunner`` once at start: one event loop, one database
connection and the executors' clients live across jobs, so a job pays no fork, no
imports and no new connections.  The job never raises for an action failure: the
outcome is recorded in ``action_results`` and RQ only sees a finished job.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from actions.audit import AuditLog, ClaimedAction
from actions.base import ActionRequest, ActionRuntime, Executor
from actions.errors import ActionError, PermanentActionError, RetryableActionError
from rules import render_action
from rules.envsubst import UnsetVariableError, expand_env
from rules.errors import TemplateRenderError

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 24 * 3600.0  # a Retry-After further away than this is not believed
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class JobSettings:
    dsn: str
    attempt_timeout_s: float  # one attempt's hard limit
    lease_s: float  # how long a claimed row stays ours (timeout + margin)
    crash_attempts: int  # extra attempts for a row whose worker died mid-attempt
    environ: Mapping[str, str]
    batch: int = 8  # actions run at once: the RQ job's own and up to batch - 1 waiting ones


#: The RQ job id of an action is this prefix and its action_results id.
ACTION_JOB_PREFIX = "action-"


def job_id(action_id: int) -> str:
    """The RQ job id of action ``action_id`` (stable: enqueuing twice is harmless)."""
    return f"{ACTION_JOB_PREFIX}{action_id}"


# Atomically pop up to ARGV[1] waiting action jobs from the queue list KEYS[1] and delete
# their job hashes.  RQ's per-job bookkeeping (about 20 Redis commands) is paid once per
# batch instead of once per action.  Crash-safe with the sweep: a row whose job hash is
# gone counts as lost (dispatcher.not_pending) and is re-enqueued, and a claimed row is
# re-enqueued when its lease expires; the claim keeps every action to one execution.
_TAKE_WAITING_LUA = """
local taken = {}
for i = 1, tonumber(ARGV[1]) do
    local id = redis.call('LPOP', KEYS[1])
    if not id then break end
    if string.sub(id, 1, string.len(ARGV[2])) ~= ARGV[2] then
        redis.call('LPUSH', KEYS[1], id)
        break
    end
    redis.call('DEL', ARGV[3] .. id)
    taken[#taken + 1] = id
end
return taken
"""


def take_waiting_actions(limit: int) -> list[int]:
    """Ids of up to ``limit`` action jobs waiting behind the current RQ job (none outside
    a worker, or when Redis fails: they then run as their own jobs)."""
    from rq import Queue, get_current_job

    job = get_current_job()
    if limit <= 0 or job is None or not job.id.startswith(ACTION_JOB_PREFIX):
        return []
    queue_key = Queue.redis_queue_namespace_prefix + job.origin
    try:
        taken = job.connection.eval(
            _TAKE_WAITING_LUA,
            1,
            queue_key,
            limit,
            ACTION_JOB_PREFIX,
            job.redis_job_namespace_prefix,
        )
    except Exception as exc:  # redis errors: run just this job
        log.warning("could not take waiting actions", extra={"error": repr(exc)})
        return []
    ids = []
    for raw in taken:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        ids.append(int(text.removeprefix(ACTION_JOB_PREFIX)))
    return ids


def retry_delay(claimed: ClaimedAction, retry_after: float | None) -> float:
    """Exponential backoff with jitter, or the server's Retry-After when it gave one."""
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, MAX_RETRY_AFTER_S)
    ceiling = min(claimed.max_backoff_s, claimed.backoff_s * 2.0 ** (claimed.attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class JobRunner:
    """Everything a worker process keeps between jobs."""

    def __init__(
        self,
        settings: JobSettings,
        runtime_factory: Callable[[], Awaitable[ActionRuntime]],
        executors: Mapping[str, Executor],
    ) -> None:
        self.settings = settings
        self.executors = executors
        self.loop = asyncio.new_event_loop()
        self.runtime = self.loop.run_until_complete(runtime_factory())
        self.audit = AuditLog(settings.dsn)

    def run(self, action_id: int) -> str:
        more = take_waiting_actions(self.settings.batch - 1)
        if more:
            return self.loop.run_until_complete(self.run_many([action_id, *more]))
        return self.loop.run_until_complete(self._claim_and_attempt(action_id))

    async def _claim_and_attempt(self, action_id: int) -> str:
        claimed = self.audit.claim(action_id, self.settings.lease_s, self.settings.crash_attempts)
        if claimed is None:
            log.info("action already claimed or finished", extra={"action_id": action_id})
            return "skipped"
        return await self.attempt(claimed)

    async def run_many(self, action_ids: list[int]) -> str:
        """The actions concurrently in this loop; returns (or raises) the first one's outcome.

        A failure of another one (the audit database gone) leaves its row to the sweep,
        as it would have left its own job's row.
        """
        outcomes = await asyncio.gather(
            *(self._claim_and_attempt(a) for a in action_ids), return_exceptions=True
        )
        for action_id, outcome in zip(action_ids[1:], outcomes[1:], strict=True):
            if isinstance(outcome, BaseException):
                log.warning(
                    "action left to the sweep",
                    extra={"action_id": action_id, "error": repr(outcome)},
                )
        first = outcomes[0]
        if isinstance(first, BaseException):
            raise first
        return first

    async def attempt(self, claimed: ClaimedAction) -> str:
        """One attempt at a claimed row; records the outcome and returns the new status."""
        extra = {"action_id": claimed.id, "trigger_id": claimed.trigger_id}
        started = time.monotonic()
        response: dict[str, Any] | None = None
        retry_in: float | None = None
        error: str | None = None
        try:
            request = self._request(claimed)
            outcome = await asyncio.wait_for(
                self.executors[claimed.action_type](request, self.runtime),
                self.settings.attempt_timeout_s,
            )
            status, response = "success", outcome.response_data
        except RetryableActionError as exc:
            status, error, response = "retrying", exc.message, exc.response_data
            retry_in = retry_delay(claimed, exc.retry_after)
        except ActionError as exc:
            status, error, response = "failed", exc.message, exc.response_data
        except TimeoutError:
            status, error = "retrying", f"timed out after {self.settings.attempt_timeout_s:g}s"
            retry_in = retry_delay(claimed, None)
        except Exception as exc:  # an executor bug is recorded, bounded by the attempts
            log.exception("action raised unexpectedly", extra=extra)
            status, error = "retrying", f"internal error: {exc!r}"
            retry_in = retry_delay(claimed, None)
        if status == "retrying" and claimed.attempt >= claimed.max_attempts:
            status, retry_in = "failed", None
            error = f"{error} (gave up after {claimed.attempt} attempts)"
        duration_ms = int((time.monotonic() - started) * 1000)
        self.audit.finish(
            claimed,
            status=status,
            duration_ms=duration_ms,
            error=None if error is None else error[:MAX_ERROR_CHARS],
            response_data=response,
            retry_in_s=retry_in,
        )
        log_level = logging.INFO if status == "success" else logging.WARNING
        log.log(log_level, "action %s", status, extra={**extra, "duration_ms": duration_ms})
        return status

    def _request(self, claimed: ClaimedAction) -> ActionRequest:
        if claimed.action_type not in self.executors:
            raise PermanentActionError(f"unknown action type {claimed.action_type!r}")
        try:
            spec = expand_env(claimed.spec, self.settings.environ)
        except UnsetVariableError as exc:
            raise PermanentActionError(f"rule '{claimed.trigger_id}': {exc}") from exc
        try:
            rendered = render_action(claimed.action_type, spec, claimed.context)
        except TemplateRenderError as exc:
            raise PermanentActionError(f"rule '{claimed.trigger_id}': {exc}") from exc
        return ActionRequest(
            action_id=claimed.id,
            trigger_id=claimed.trigger_id,
            kind=claimed.action_type,
            spec=rendered,
            context=claimed.context,
            attempt=claimed.attempt,
        )

    def close(self) -> None:
        aclose = getattr(self.runtime, "aclose", None)
        if aclose is not None:
            self.loop.run_until_complete(aclose())
        self.loop.close()
        self.audit.close()


_runner: JobRunner | None = None


def install_runner(runner: JobRunner | None) -> None:
    """Called once by ``engine worker`` before it starts taking jobs."""
    global _runner
    _runner = runner


def run_action(action_id: int) -> str:
    """The RQ job function: one attempt at action ``action_id``."""
    if _runner is None:
        raise RuntimeError("no JobRunner installed: run jobs through `engine worker`")
    return _runner.run(action_id)

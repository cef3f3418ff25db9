"""The RQ job: claim the row, render, execute, record.

``run_action(action_id)`` is what the dispatcher enqueues.  It runs inside a worker
process that installed a ``JobRunner`` once at start: one event loop, one database
connection and the executors' clients live across jobs, so a job pays no fork, no
imports and no new connections.  The job never raises for an action failure: the
outcome is recorded in ``action_results`` and RQ only sees a finished job.  This
module must never spell SQL (actions.claims does) nor RQ's keys (actions.rq_internals).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from actions.base import ActionRequest, ActionRuntime, Executor
from actions.claims import ActionClaims, ActionStatus, ClaimedAction, ReconnectBackoff
from actions.errors import ActionError, PermanentActionError, RetryableActionError
from actions.render_jail import InProcessRenderer, RenderOverBudget
from actions.rq_internals import take_waiting_actions
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
    concurrency: int  # actions run at once: the RQ job's own and up to concurrency - 1 waiting
    db_backoff: ReconnectBackoff
    environ: Mapping[str, str]


def retry_delay(claimed: ClaimedAction, retry_after: float | None) -> float:
    """Exponential backoff with jitter, or the server's Retry-After when it gave one."""
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, MAX_RETRY_AFTER_S)
    ceiling = min(claimed.max_backoff_s, claimed.backoff_s * 2.0 ** (claimed.attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class ActionRenderer(Protocol):
    """Renders an action's templates: ``actions.render_jail.RenderJail`` in a worker."""

    async def render(
        self, kind: str, spec: Mapping[str, Any], context: Mapping[str, Any], *, what: str
    ) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class JobRunner:
    """Everything a worker process keeps between jobs."""

    def __init__(
        self,
        settings: JobSettings,
        runtime_factory: Callable[[], Awaitable[ActionRuntime]],
        executors: Mapping[str, Executor],
        renderer: ActionRenderer | None = None,
    ) -> None:
        self.settings = settings
        self.executors = executors
        self.renderer: ActionRenderer = renderer or InProcessRenderer()
        self.loop = asyncio.new_event_loop()
        self.runtime = self.loop.run_until_complete(runtime_factory())
        self.claims = ActionClaims(settings.dsn, settings.db_backoff)

    def run(self, action_id: int) -> str:
        more = take_waiting_actions(self.settings.concurrency - 1)
        if more:
            return self.loop.run_until_complete(self.run_many([action_id, *more]))
        return self.loop.run_until_complete(self._claim_and_attempt(action_id))

    async def _claim_and_attempt(self, action_id: int) -> str:
        claimed = await self.claims.claim(
            action_id, self.settings.lease_s, self.settings.crash_attempts
        )
        if claimed is None:
            log.info("action already claimed or finished", extra={"action_id": action_id})
            return "skipped"
        return await self.attempt(claimed)

    async def run_many(self, action_ids: list[int]) -> str:
        """The actions concurrently in this loop; returns (or raises) the first one's outcome.

        A failure of another one (the database gone) leaves its row to the sweep,
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
            request = await self._request(claimed)
            outcome = await asyncio.wait_for(
                self.executors[claimed.action_type](request, self.runtime),
                self.settings.attempt_timeout_s,
            )
            status, response = ActionStatus.SUCCESS, outcome.response_data
        except RetryableActionError as exc:
            status, error, response = ActionStatus.RETRYING, exc.message, exc.response_data
            retry_in = retry_delay(claimed, exc.retry_after)
        except ActionError as exc:
            status, error, response = ActionStatus.FAILED, exc.message, exc.response_data
        except TimeoutError:
            status, error = (
                ActionStatus.RETRYING,
                f"timed out after {self.settings.attempt_timeout_s:g}s",
            )
            retry_in = retry_delay(claimed, None)
        except Exception as exc:  # an executor bug is recorded, bounded by the attempts
            log.exception("action raised unexpectedly", extra=extra)
            status, error = ActionStatus.RETRYING, f"internal error: {exc!r}"
            retry_in = retry_delay(claimed, None)
        if status == ActionStatus.RETRYING and claimed.attempt >= claimed.max_attempts:
            status, retry_in = ActionStatus.FAILED, None
            error = f"{error} (gave up after {claimed.attempt} attempts)"
        duration_ms = int((time.monotonic() - started) * 1000)
        await self.claims.finish(
            claimed,
            status=status,
            duration_ms=duration_ms,
            error=None if error is None else error[:MAX_ERROR_CHARS],
            response_data=response,
            retry_in_s=retry_in,
        )
        log_level = logging.INFO if status == ActionStatus.SUCCESS else logging.WARNING
        log.log(log_level, "action %s", status, extra={**extra, "duration_ms": duration_ms})
        return status.value

    async def _request(self, claimed: ClaimedAction) -> ActionRequest:
        if claimed.action_type not in self.executors:
            raise PermanentActionError(f"unknown action type {claimed.action_type!r}")
        try:
            spec = expand_env(claimed.spec, self.settings.environ)
        except UnsetVariableError as exc:
            raise PermanentActionError(f"rule '{claimed.trigger_id}': {exc}") from exc
        try:
            rendered = await self.renderer.render(
                claimed.action_type, spec, claimed.context, what=f"actions[{claimed.action_index}]"
            )
        except TemplateRenderError as exc:
            raise PermanentActionError(f"rule '{claimed.trigger_id}': {exc}") from exc
        except RenderOverBudget as exc:
            raise RenderOverBudget(f"rule '{claimed.trigger_id}': {exc.message}") from exc
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
        self.loop.run_until_complete(self.renderer.aclose())
        self.loop.run_until_complete(self.claims.aclose())
        self.loop.close()


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

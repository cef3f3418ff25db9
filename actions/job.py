"""The RQ job: claim the row, render, execute, record.

``run_action(action_id)`` is what the dispatcher enqueues.  It runs inside a worker
process that installed a ``JobRunner`` once at start: one event loop (in a thread of its
own), one database connection and the executors' clients live across jobs, so a job pays
no fork, no imports and no new connections.  The job never raises for an action failure: the
outcome is recorded in ``action_results`` and RQ only sees a finished job.  A file rule's
spec is ``${VAR}``-expanded from the worker's environment; an organization's never is: its
credentials come from its own secrets and its requests follow its own network policy
(actions.tenant_credentials).  This
module must never spell SQL (actions.claims does) nor RQ's keys (actions.rq_internals).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from actions.base import ActionRequest, ActionRuntime, Executor
from actions.claims import ActionClaims, ActionStatus, ClaimedAction, ReconnectBackoff
from actions.errors import ActionError, PermanentActionError, RetryableActionError
from actions.netguard import attempt_network
from actions.redact import SecretValues, attempt_secrets, current_secrets, spec_credentials
from actions.render_jail import InProcessRenderer, RenderOverBudget
from actions.rq_internals import take_waiting_actions
from actions.silence_gate import SilenceGate
from actions.tenant_credentials import (
    SealedOpener,
    TenantCredentials,
    refuse_secret_refs,
    tenant_spec,
)
from rules.envsubst import UnsetVariableError, expand_env
from rules.errors import TemplateRenderError

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RETRY_AFTER_S = 24 * 3600.0  # a Retry-After further away than this is not believed
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class JobSettings:
    dsn: str
    attempt_timeout_s: float  # one attempt's hard limit, whatever its kind
    lease_s: float  # how long a claimed row stays ours (timeout + margin)
    crash_attempts: int  # extra attempts for a row whose worker died mid-attempt
    concurrency: int  # actions in flight at once in this process's loop
    db_backoff: ReconnectBackoff
    environ: Mapping[str, str]
    # The longest attempt of each action kind, render included (kinds not named here:
    # attempt_timeout_s).
    max_timeouts_s: Mapping[str, float] = field(default_factory=dict)
    # How long an RQ job waits for its batch before leaving the slower actions to run on
    # in the background, so that the worker takes its next job.
    batch_wait_s: float = 1.0
    # How often the active silences are read again (engine.silences_refresh_s).
    silences_refresh_s: float = 1.0


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

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class JobRunner:
    """Everything a worker process keeps between jobs.

    The event loop runs in a thread of its own for the runner's whole life: an RQ job
    hands its actions to it and returns when they are done or after ``batch_wait_s``,
    whichever is first.  An action still running then (an endpoint that does not answer)
    goes on in the loop, holding one of the ``concurrency`` slots until its deadline,
    while the worker takes its next job: one slow endpoint never holds the actions
    behind it.
    """

    def __init__(
        self,
        settings: JobSettings,
        runtime_factory: Callable[[], Awaitable[ActionRuntime]],
        executors: Mapping[str, Executor],
        opener: SealedOpener,
        renderer: ActionRenderer | None = None,
    ) -> None:
        """``opener``: opens tenants' sealed secrets (the engine's SecretsBox)."""
        self.settings = settings
        self.executors = executors
        self.renderer: ActionRenderer = renderer or InProcessRenderer()
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self.loop.run_forever, name="action-loop", daemon=True
        )
        self._loop_thread.start()
        self.runtime = self._wait_for(runtime_factory())
        try:
            # Started now, not by the first action: that action would wait for it.
            self._wait_for(self.renderer.start())
        except Exception as exc:  # the first render tries again, and says why it cannot
            log.warning("render process not started", extra={"error": repr(exc)})
        self.claims = ActionClaims(settings.dsn, settings.db_backoff)
        self.credentials = TenantCredentials(self.claims.fetch_one, opener)
        self.silences = SilenceGate(self.claims.fetch_one, settings.silences_refresh_s)
        self._free_slots = threading.Semaphore(settings.concurrency)
        self._in_flight: set[Future[str]] = set()
        self._in_flight_lock = threading.Lock()

    def _wait_for(self, work: Awaitable[T]) -> T:
        """Run ``work`` in the loop and wait for its result (from the RQ job's thread)."""

        async def wrapped() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result()

    def run(self, action_id: int) -> str:
        """Hand ``action_id`` and the jobs waiting behind it (as many as there are free
        slots) to the loop; returns the first one's outcome, or "running" when it is still
        running after ``batch_wait_s``."""
        self._free_slots.acquire()  # waits while every slot holds a running action
        extra = 0
        while extra < self.settings.concurrency - 1 and self._free_slots.acquire(blocking=False):
            extra += 1
        more = take_waiting_actions(extra) if extra else []
        for _ in range(extra - len(more)):
            self._free_slots.release()
        batch = [self._start(a) for a in [action_id, *more]]
        wait(batch, timeout=self.settings.batch_wait_s)
        first = batch[0]
        if not first.done():
            return "running"
        return first.result()  # raises as it raised: the sweep owns its row

    def _start(self, action_id: int) -> Future[str]:
        future = asyncio.run_coroutine_threadsafe(self._claim_and_attempt(action_id), self.loop)
        with self._in_flight_lock:
            self._in_flight.add(future)
        future.add_done_callback(lambda done: self._finished(action_id, done))
        return future

    def _finished(self, action_id: int, future: Future[str]) -> None:
        with self._in_flight_lock:
            self._in_flight.discard(future)
        self._free_slots.release()
        error = None if future.cancelled() else future.exception()
        if error is not None:
            # The database gone, typically: the row is left as it was, to the sweep.
            log.warning(
                "action left to the sweep", extra={"action_id": action_id, "error": repr(error)}
            )

    async def _claim_and_attempt(self, action_id: int) -> str:
        claimed = await self.claims.claim(
            action_id, self.settings.lease_s, self.settings.crash_attempts
        )
        if claimed is None:
            log.info("action already claimed or finished", extra={"action_id": action_id})
            return "skipped"
        silence_id = await self.silences.silence_of(claimed)
        if silence_id is not None:
            await self.silences.hold_back(claimed, silence_id)
            return ActionStatus.SILENCED.value
        return await self.attempt(claimed)

    def max_timeout_s(self, kind: str) -> float:
        """The deadline of one attempt at an action of ``kind``."""
        limit = self.settings.max_timeouts_s.get(kind, self.settings.attempt_timeout_s)
        return min(limit, self.settings.attempt_timeout_s)

    async def attempt(self, claimed: ClaimedAction) -> str:
        """One attempt at a claimed row; records the outcome and returns the new status.

        Render and execution share one deadline, the kind's maximum; the rule's own
        ``timeout`` (at most that, see rules.action_specs) bounds the request inside it.
        """
        extra = {"action_id": claimed.id, "trigger_id": claimed.trigger_id}
        # Filled as the spec is expanded and rendered; masks what is recorded and logged.
        secrets = SecretValues()
        secrets_token = attempt_secrets.set(secrets)
        network_token = attempt_network.set(None)
        started = time.monotonic()
        response: dict[str, Any] | None = None
        retry_in: float | None = None
        error: str | None = None
        limit_s = self.max_timeout_s(claimed.action_type)
        try:
            async with asyncio.timeout(limit_s):
                request = await self._request(claimed, secrets)
                outcome = await self.executors[claimed.action_type](request, self.runtime)
            status, response = ActionStatus.SUCCESS, outcome.response_data
        except RetryableActionError as exc:
            status, error, response = ActionStatus.RETRYING, exc.message, exc.response_data
            retry_in = retry_delay(claimed, exc.retry_after)
        except ActionError as exc:
            status, error, response = ActionStatus.FAILED, exc.message, exc.response_data
        except TimeoutError:
            status = ActionStatus.RETRYING
            error = (
                f"timed out after {limit_s:g}s, the longest a {claimed.action_type} "
                f"action may take (worker.max_{claimed.action_type}_timeout_s)"
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
        masked = current_secrets()
        try:
            await self.claims.finish(
                claimed,
                status=status,
                duration_ms=duration_ms,
                error=None if error is None else masked.redact(error)[:MAX_ERROR_CHARS],
                response_data=masked.redact_data(response),
                retry_in_s=retry_in,
            )
            log_level = logging.INFO if status == ActionStatus.SUCCESS else logging.WARNING
            log.log(log_level, "action %s", status, extra={**extra, "duration_ms": duration_ms})
        finally:
            attempt_network.reset(network_token)
            attempt_secrets.reset(secrets_token)
        return status.value

    async def _request(self, claimed: ClaimedAction, secrets: SecretValues) -> ActionRequest:
        if claimed.action_type not in self.executors:
            raise PermanentActionError(f"unknown action type {claimed.action_type!r}")
        if claimed.org_id is None:
            rendered = await self._file_rule_spec(claimed, secrets)
        else:
            # The organization's policy, not the config's, for every request of the attempt.
            attempt_network.set(await self.credentials.network(claimed.org_id))
            rendered = await tenant_spec(
                claimed.action_type,
                claimed.spec,
                claimed.context,
                org_id=claimed.org_id,
                trigger_id=claimed.trigger_id,
                credentials=self.credentials,
                secrets=secrets,
                render=lambda spec: self._render(claimed, spec),
            )
        secrets.update(spec_credentials(rendered))
        return ActionRequest(
            action_id=claimed.id,
            trigger_id=claimed.trigger_id,
            kind=claimed.action_type,
            spec=rendered,
            context=claimed.context,
            attempt=claimed.attempt,
        )

    async def _render(self, claimed: ClaimedAction, spec: Mapping[str, Any]) -> dict[str, Any]:
        """``spec`` rendered within the render budget (the worker's render jail)."""
        try:
            return await self.renderer.render(
                claimed.action_type, spec, claimed.context, what=_action_path(claimed.action_index)
            )
        except TemplateRenderError as exc:
            raise PermanentActionError(f"rule '{claimed.trigger_id}': {exc}") from exc
        except RenderOverBudget as exc:
            raise RenderOverBudget(f"rule '{claimed.trigger_id}': {exc.message}") from exc

    async def _file_rule_spec(
        self, claimed: ClaimedAction, secrets: SecretValues
    ) -> dict[str, Any]:
        """The operator's rule: ``${VAR}`` from the environment (``rules_env``), rendered."""
        refuse_secret_refs(claimed.action_type, claimed.spec, claimed.trigger_id)
        substituted: set[str] = set()
        try:
            spec = expand_env(claimed.spec, self.settings.environ, substituted=substituted)
        except UnsetVariableError as exc:
            raise PermanentActionError(f"rule '{claimed.trigger_id}': {exc}") from exc
        finally:
            secrets.update(substituted)
        return await self._render(claimed, spec)

    def close(self) -> None:
        """Wait for the actions still running (each ends by its deadline), then close."""
        with self._in_flight_lock:
            running = list(self._in_flight)
        wait(running)
        aclose = getattr(self.runtime, "aclose", None)
        if aclose is not None:
            self._wait_for(aclose())
        self._wait_for(self.renderer.aclose())
        self._wait_for(self.claims.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join()
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


def _action_path(action_index: int) -> str:
    """Where the action is written in its rule: on_retract's have negative indexes."""
    if action_index < 0:
        return f"on_retract.actions[{-action_index - 1}]"
    return f"actions[{action_index}]"

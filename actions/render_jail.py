"""The render jail: actions' templates rendered in a child process with hard limits.

The sandbox's in-process guards (rules.sandbox) refuse the amplifiers they know, but
work done inside one C call (a builtin, a filter: `([range(100000)]*60000)|map('sum')`)
escapes any trace hook or signal handler.  So a worker renders in one long-lived child
process, `python -m actions.render_jail`, whose address space is capped (RLIMIT_AS) and
whose CPU time per render is capped (RLIMIT_CPU); the parent waits at most the wall-clock
budget, then kills the child, starts a new one for the next render, and the action fails
for good with ``RenderOverBudget``.  Nothing a template does can hold the worker
longer than the budget or take more memory than the child may have.

The child gets no environment but what Python needs (templates are rendered from specs
whose `${VAR}` were expanded by the parent) and speaks newline-delimited JSON, never
pickle: a child that a template subverted cannot make the parent run anything.
A render costs one round trip on a pipe (see docs/operations.md, Limits).  A request's
``op`` names its kind: a render unless the child's module serves more (``serve(handlers=)``;
`engine api` runs a whole rule test this way, engine.api.rule_runs).

This module must never import ``engine``; the child must never touch the network,
the database or the parent's descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mmap
import os
import resource
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from actions.errors import PermanentActionError
from rules import TemplateRenderError, render_action

#: A rendered action larger than this is refused (per field the sandbox allows 64 KiB).
MAX_RESULT_BYTES: Final = 4 * 1024 * 1024
#: A new child imports Jinja and the rules package; it does not render meanwhile.
START_TIMEOUT_S: Final = 30.0
#: Bytes of the shared page where the child writes the field it is rendering.
_FIELD_BYTES: Final = 256
#: Environment variables the child keeps: enough to find Python and our packages.
_CHILD_ENVIRONMENT: Final = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE")


class RenderOverBudget(PermanentActionError):
    """A template needed more time or memory than the render budget allows."""


@dataclass(frozen=True)
class RenderBudget:
    """What one action's render may use: wall-clock seconds and MiB beyond the child's start."""

    timeout_s: float = 2.0
    memory_mb: int = 256

    def describe(self) -> str:
        """``2.0 s / 256 MiB``, as error messages quote it."""
        return f"{self.timeout_s:.1f} s / {self.memory_mb} MiB"


class RenderJail:
    """The parent's side: one child process, one render at a time, restarted when killed.

    Used from one event loop.  Concurrent renders queue on a lock: a hostile template
    holds the others for at most the budget.
    """

    def __init__(self, budget: RenderBudget, *, child_module: str = "actions.render_jail") -> None:
        self.budget = budget
        # The module the child runs: this one renders actions; another may add request
        # kinds of its own (``serve(handlers=...)``), such as a whole rule test.
        self._child_module = child_module
        self._child: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        # The child writes the field it renders here, so a killed render names it without
        # a message per field (a write the parent would wake up for).
        self._field_fd = os.memfd_create("render-jail-field")
        os.ftruncate(self._field_fd, _FIELD_BYTES)
        self._field = mmap.mmap(self._field_fd, _FIELD_BYTES)

    async def render(
        self, kind: str, spec: Mapping[str, Any], context: Mapping[str, Any], *, what: str
    ) -> dict[str, Any]:
        """``render_action(kind, spec, context)`` in the child, within the budget.

        ``what`` names the action in errors (`actions[0]`).  Raises TemplateRenderError for
        a template mistake (as rendering in-process would) and RenderOverBudget when
        the child had to be stopped.
        """
        request = {"kind": kind, "spec": spec, "context": context}
        reply = await self.run(
            request, over_budget=lambda field: f"template of {what}.{field or 'template'}"
        )
        return dict(reply)

    async def run(self, request: Mapping[str, Any], *, over_budget: Callable[[str], str]) -> Any:
        """One request to the child (``op`` names its kind; a render by default), within
        the budget; its ``ok`` answer.

        ``over_budget`` says what was stopped, given what the child was doing then (the
        phrase it last wrote with ``entering``).  Raises TemplateRenderError for an
        ``error`` answer and RenderOverBudget when the child had to be stopped.
        """
        line = json.dumps(request, default=str)
        async with self._lock:
            child = await self._running_child()
            assert child.stdin is not None and child.stdout is not None
            try:
                async with asyncio.timeout(self.budget.timeout_s):
                    child.stdin.write(line.encode() + b"\n")
                    await child.stdin.drain()
                    reply = json.loads(await child.stdout.readuntil(b"\n"))
            except (
                TimeoutError,
                OSError,
                ValueError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
            ) as exc:
                await self._stop()
                raise self._over_budget(over_budget) from exc
            if "ok" in reply:
                return reply["ok"]
            if reply.get("over"):
                await self._stop()  # it ran out of memory: a fresh child for the next render
                raise self._over_budget(over_budget)
        raise TemplateRenderError(str(reply.get("error")))

    def _over_budget(self, what: Callable[[str], str]) -> RenderOverBudget:
        field = self._field[:].split(b"\0", 1)[0].decode(errors="replace")
        return RenderOverBudget(
            f"{what(field)} exceeded its render budget ({self.budget.describe()})"
        )

    async def _running_child(self) -> asyncio.subprocess.Process:
        if self._child is not None and self._child.returncode is None:
            return self._child
        environment = {k: os.environ[k] for k in _CHILD_ENVIRONMENT if k in os.environ}
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self._child_module,
            str(self.budget.memory_mb),
            str(self.budget.timeout_s),
            str(self._field_fd),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=environment,
            pass_fds=(self._field_fd,),
            limit=MAX_RESULT_BYTES + 1024,
        )
        assert child.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await child.stdout.readuntil(b"\n")
        except (TimeoutError, asyncio.IncompleteReadError) as exc:
            child.kill()
            await child.wait()
            raise RuntimeError("the render process did not start") from exc
        self._child = child
        return child

    async def _stop(self) -> None:
        child, self._child = self._child, None
        if child is not None and child.returncode is None:
            child.kill()
            await child.wait()

    async def start(self) -> None:
        """Start the child ahead of the first render (which would otherwise wait for it)."""
        async with self._lock:
            await self._running_child()

    async def aclose(self) -> None:
        """Stop the child; the jail is unusable afterwards."""
        async with self._lock:
            await self._stop()
        self._field.close()
        os.close(self._field_fd)


class InProcessRenderer:
    """Renders in the calling process, bounded only by the sandbox's in-process guards.

    For tests and tools whose templates are trusted; a worker uses ``RenderJail``.
    """

    async def render(
        self, kind: str, spec: Mapping[str, Any], context: Mapping[str, Any], *, what: str
    ) -> dict[str, Any]:
        """``render_action(kind, spec, context)``; raises TemplateRenderError."""
        return render_action(kind, spec, context)

    async def start(self) -> None:
        """Nothing to start."""

    async def aclose(self) -> None:
        """Nothing to release."""


def _limit_memory(memory_mb: int) -> None:
    """Cap the address space at what the child uses now plus ``memory_mb``."""
    with open("/proc/self/statm") as statm:
        in_use = int(statm.read().split()[0]) * resource.getpagesize()
    limit = in_use + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _limit_cpu(seconds: float) -> None:
    """Let the next render use ``seconds`` more CPU time; then the kernel stops the child.

    A backstop for a parent that died while the child spins inside one C call.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(used + seconds) + 2
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


#: What the child does with one request of a kind: its ``ok`` answer, given a function
#: that records what it is doing now (so a stopped request can be named).
Handler = Callable[[Mapping[str, Any], Callable[[str], None]], Any]


def _render(request: Mapping[str, Any], entering: Callable[[str], None]) -> Any:
    entering("template")
    return render_action(request["kind"], request["spec"], request["context"], on_field=entering)


def serve(
    memory_mb: int, timeout_s: float, field_fd: int, handlers: Mapping[str, Handler] | None = None
) -> None:
    """The child's loop: one JSON request per line on stdin, one JSON reply per line.

    A request's ``op`` picks its handler from ``handlers`` (a render when absent).
    """
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    current = mmap.mmap(field_fd, _FIELD_BYTES)
    kinds: dict[str, Handler] = {"render": _render, **(handlers or {})}

    def send(message: Mapping[str, Any]) -> None:
        line = json.dumps(message, default=str).encode()
        if len(line) > MAX_RESULT_BYTES:
            line = json.dumps({"error": "the rendered action is larger than 4 MiB"}).encode()
        sink.write(line + b"\n")
        sink.flush()

    def entering(field: str) -> None:
        current[:] = field.encode()[: _FIELD_BYTES - 1].ljust(_FIELD_BYTES, b"\0")

    _die_with_parent()
    _limit_memory(memory_mb)
    send({"ready": True})
    for line in source:
        request = json.loads(line)
        _limit_cpu(timeout_s)
        entering("")
        try:
            reply: Mapping[str, Any] = {"ok": kinds[request.get("op", "render")](request, entering)}
        except TemplateRenderError as exc:
            reply = {"error": str(exc)}
        except MemoryError:
            # Freed memory may stay fragmented: answer, then let the parent start a new child.
            send({"over": "memory"})
            return
        send(reply)


def main(handlers: Mapping[str, Handler] | None = None) -> None:
    """``python -m <module> MEMORY_MB TIMEOUT_S FIELD_FD``, as ``RenderJail`` starts it."""
    serve(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), handlers)


if __name__ == "__main__":
    main()

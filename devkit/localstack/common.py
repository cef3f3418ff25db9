"""What the private servers share: ports, pids, log tails, and the tracking that stops them.

Every server started here is tracked until it is stopped, and stopped at interpreter exit
if the caller forgot.  Nothing here may touch a process or port we did not start or choose.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from rules.errors import EngineError

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
PORT_ATTEMPTS = 5
LOG_TAIL_LINES = 30

_ADDRESS_IN_USE = re.compile(
    r"address already in use|could not bind|could not create any TCP", re.I
)


class LocalStackError(EngineError):
    """A private server could not be started or stopped; the message carries its log's tail."""


class _Stoppable(Protocol):
    def stop(self) -> None: ...


_running: dict[int, _Stoppable] = {}


def track(server: _Stoppable) -> None:
    _running[id(server)] = server


def untrack(server: _Stoppable) -> None:
    _running.pop(id(server), None)


@atexit.register
def _stop_all() -> None:
    """Last line of defence against orphaned servers when a caller forgot ``stop()``."""
    for server in list(_running.values()):
        with contextlib.suppress(Exception):
            server.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry when it is not)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves do: connections in TIME_WAIT don't make a port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie waiting for its reaper.

    A stopped postmaster is re-parented to PID 1, which in a container may reap it late;
    counting the zombie as alive would make every stop wait for that.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat_line.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def log_tail(path: Path, since: int = 0) -> str:
    """The last lines ``path`` gained after byte ``since``, for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(since)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _should_retry_port(tail: str, fixed_port: bool, attempt: int) -> bool:
    """Retry on another port when ours was taken between choosing and binding it."""
    in_use = _ADDRESS_IN_USE.search(tail) is not None
    return in_use and not fixed_port and attempt + 1 < PORT_ATTEMPTS


class OnAPort(Protocol):
    """A server as ``start_on_a_free_port`` sees it: the port it will bind, and its log."""

    port: int
    logfile: Path


def _nothing() -> None:
    pass


def start_on_a_free_port(
    server: OnAPort,
    launch: Callable[[], str | None],
    *,
    fixed_port: bool,
    name: str,
    where: str,
    after_failure: Callable[[], None] = _nothing,
    before_raise: Callable[[], None] = _nothing,
) -> None:
    """Start ``server`` by ``launch``, moving it to a fresh port when another process took
    its port between our choosing and its binding it (unless the caller fixed the port).

    ``launch`` starts the server on ``server.port`` and returns None once it is up, else
    what the failed start printed.  ``after_failure`` runs after every failed attempt,
    ``before_raise`` only before giving up with a ``LocalStackError`` carrying the log's tail.
    """
    for attempt in range(PORT_ATTEMPTS):
        offset = log_size(server.logfile)
        output = launch()
        if output is None:
            return
        tail = log_tail(server.logfile, offset)
        after_failure()
        if _should_retry_port(tail, fixed_port, attempt):
            server.port = free_port()
            continue
        before_raise()
        raise LocalStackError(
            f"{name} failed to start on 127.0.0.1:{server.port} {where}:\n"
            f"{output}--- {server.logfile} (tail) ---\n{tail}"
        )

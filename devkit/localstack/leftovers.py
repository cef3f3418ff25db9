"""Finding and stopping the servers a killed earlier run left behind.

atexit does not run on SIGKILL, so the next run looks for them by their pid files; it
must never stop a process that is not one of ours (see each server's own check).
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

from devkit.localstack.postgres import PostgresServer
from devkit.localstack.redis import REDIS_PIDFILE, stop_leftover_redis
from rules.errors import EngineError


def stop_abandoned(directory: Path) -> None:
    """Stop servers left running under ``directory`` by a process that was killed.

    atexit does not run on SIGKILL; the next run finds the leftovers by their pid files.
    """
    for pidfile in directory.rglob("postmaster.pid"):
        with contextlib.suppress(EngineError, OSError):
            PostgresServer(pidfile.parent).stop(mode="immediate")
    for pidfile in directory.rglob(REDIS_PIDFILE):
        stop_leftover_redis(pidfile, signal.SIGKILL)

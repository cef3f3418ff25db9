"""A real TimescaleDB for the tests: PGlite's TimescaleDB build, served on 127.0.0.1.

``make timescaledb`` (a step of ``make test``) installs it from the npm registry into
tests/timescaledb/node_modules; nothing is downloaded here.  What differs from a
TimescaleDB server, and what a test must do about it:

- one connection at a time (others wait for it to close): open one, close it, then the
  next; an asyncpg pool of one connection is fine;
- one PostgreSQL backend behind every connection: asyncpg must not name its prepared
  statements (``statement_cache_size=0``), or a second connection finds the first one's;
- ``RESET ALL`` (asyncpg does it when a pool connection is released) sets search_path to
  pg_catalog: a pool sets it back each time it hands a connection out (:func:`open_pool`);
- no background workers: a TimescaleDB job (a refresh policy) runs when called
  (``CALL run_job(id)``), not on its schedule;
- it is PostgreSQL 17 compiled to WebAssembly, and its TimescaleDB is 2.23.0-dev.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import asyncpg

SERVER_DIR = Path(__file__).resolve().parent / "timescaledb"
STARTUP_TIMEOUT_S = 60.0


class TimescaleServerMissing(RuntimeError):
    """node or the installed server package is not there."""


class TimescaleServer:
    """``node tests/timescaledb/server.mjs`` on a free port, in memory; stop() ends it."""

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        node = shutil.which("node")
        if node is None or not (SERVER_DIR / "node_modules" / "@electric-sql").is_dir():
            raise TimescaleServerMissing(
                "the TimescaleDB test server is not installed: run `make timescaledb` "
                f"(it needs node and npm, and installs into {SERVER_DIR}/node_modules)"
            )
        process = subprocess.Popen(
            [node, "server.mjs", "0"],
            cwd=SERVER_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._process = process
        first_line: list[str] = []
        reader = threading.Thread(
            target=lambda: first_line.append(process.stdout.readline() if process.stdout else "")
        )
        reader.start()
        reader.join(STARTUP_TIMEOUT_S)
        line = first_line[0] if first_line else ""
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"the TimescaleDB test server did not start: {line!r}")
        self.port = int(line.split()[1])

    def dsn(self) -> str:
        # PGlite accepts any password but psycopg insists on sending one; it speaks no TLS.
        return f"postgresql://postgres:postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


async def _search_path_public(conn: Any) -> None:
    await conn.execute("SET search_path TO public")


async def open_pool(dsn: str) -> asyncpg.Pool:
    """A pool of one connection that suits this server (see the module docstring)."""
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=1, statement_cache_size=0, setup=_search_path_public
    )
    assert pool is not None
    return pool

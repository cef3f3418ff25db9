"""The engine's own processes as an operator runs them, plus a local webhook receiver."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import yaml


def write_config(
    directory: Path,
    *,
    database_url: str,
    redis_url: str,
    rules_text: str | list[str],
    poll_interval_s: float = 1.0,
    name: str = "bench",
    sections: dict[str, Any] | None = None,
) -> Path:
    """A config file for the engine's processes; ``sections`` adds or replaces top-level
    sections (``api:`` for ``engine api``)."""
    rules = directory / f"{name}-rules"
    rules.mkdir(exist_ok=True)
    texts = [rules_text] if isinstance(rules_text, str) else rules_text
    for i, text in enumerate(texts):
        (rules / f"rules-{i}.yaml").write_text(text, encoding="utf-8")
    doc = {
        "database_url": database_url,
        "redis_url": redis_url,
        "rules": [str(rules)],
        "http": {"listen": None},
        "network": {"allow_private": True},
        "engine": {"poll_interval_s": poll_interval_s},
        **(sections or {}),
    }
    path = directory / f"{name}-config.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def engine_command(config: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "engine",
        "--config",
        str(config),
        "--log-level",
        "WARNING",
        *args,
    ]


@contextlib.contextmanager
def spawned(commands: list[list[str]], logdir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start the commands; SIGTERM (then SIGKILL) exactly those processes on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, command in enumerate(commands):
            log = (logdir / f"proc-{time.monotonic_ns()}-{i}.log").open("wb")
            procs.append(
                subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
            )
            log.close()
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(check: Any, what: str, timeout_s: float = 60.0, interval_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"bench: timed out waiting for {what}")


def scalar(db: str | psycopg.Connection[Any], sql: str, *params: Any) -> Any:
    """The first value of ``sql``'s first row, on a connection or a new one to a DSN."""
    if isinstance(db, str):
        with psycopg.connect(db, autocommit=True) as conn:
            return scalar(conn, sql, *params)
    row = db.execute(sql, params).fetchone()
    return None if row is None else row[0]


def wait_engine_ready(dsn: str, rules: int, proc: subprocess.Popen[bytes]) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"engine run exited with {proc.returncode}")
        loaded = scalar(dsn, "SELECT count(*) FROM triggers") == rules
        return loaded and bool(scalar(dsn, "SELECT count(*) FROM engine_cursors"))

    wait_for(ready, "engine run to load its rules", timeout_s=300)


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(rest.split()[0])
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: 16 workers' connections arriving at once
    # overflowed it, and a dropped SYN is retried only after a second, which the bench
    # would report as a delivery that slow.
    request_queue_size = 128


class Receiver:
    """A local webhook receiver: records (wall time, body) of every POST."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out as two writes: without this, Nagle and the
                # client's delayed ACK add 40 ms to every keep-alive request.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                now = time.time()
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = {}
                with receiver._lock:
                    receiver.received.append((now, doc if isinstance(doc, dict) else {}))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def take(self) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            got, self.received = self.received, []
        return got

"""Running the real ``engine`` commands as a user would, for end-to-end tests."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

import sql

ROOT = Path(__file__).resolve().parents[1]


def write_config(
    directory: Path,
    *,
    database_url: str,
    redis_url: str,
    rules: Sequence[str] | str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """A config.yaml for tests: private servers, the network guard off for 127.0.0.1."""
    doc: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "rules": [rules] if isinstance(rules, str) else list(rules),
        "http": {"listen": None},
        "network": {"allow_private": True},
        "engine": {"poll_interval_s": 0.5, "sweep_interval_s": 0.5, "sweep_grace_s": 2.0},
        "worker": {"job_timeout_s": 20, "lease_margin_s": 5},
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def engine_command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "engine", "--config", str(config), *args]


def run_engine(
    config: Path | None, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run one engine command to completion, capturing its output."""
    cmd = [sys.executable, "-m", "engine"]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


class EngineProcess:
    """A long-running ``engine run`` or ``engine worker``; output goes to a log file."""

    def __init__(
        self, config: Path, *args: str, log_path: Path, env: Mapping[str, str] | None = None
    ):
        self.args = engine_command(config, *args)
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """kill -9: no clean-up of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 10) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@contextmanager
def engine_processes(
    config: Path,
    tmp_path: Path,
    *commands: Sequence[str],
    env: Mapping[str, str] | None = None,
) -> Iterator[list[EngineProcess]]:
    """Start each command (e.g. ["run"], ["worker"]); stop them all afterwards."""
    procs = [
        EngineProcess(config, *cmd, log_path=tmp_path / f"{'-'.join(cmd)}-{i}.log", env=env).start()
        for i, cmd in enumerate(commands)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def wait_until(
    predicate: Callable[[], Any], timeout: float = 20, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def query_all(dsn: str, text: str, *params: Any) -> list[tuple[Any, ...]]:
    """Ad-hoc SQL for assertions in tests (the engine's own SQL stays in sql/)."""
    with sql.connect(dsn) as conn:
        return conn.execute(text.encode(), params or None).fetchall()


def query_value(dsn: str, text: str, *params: Any) -> Any:
    rows = query_all(dsn, text, *params)
    return rows[0][0] if rows else None


def insert_events(dsn: str, events: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows as an indexer would, in one transaction."""
    from engine.emit import EVENT_COLUMNS, build_event

    block = random.randint(1, 10**12)  # ids are chain-block-log_index: keep them unique
    with sql.connect(dsn, autocommit=False) as conn:
        for i, given in enumerate(events):
            fields = {"block_number": block, "log_index": i, **given}
            event = build_event(fields.pop("registry"), fields.pop("event_type"), fields)
            sql.run(conn, "insert_event", *(event.get(c) for c in EVENT_COLUMNS))
        conn.commit()

"""A private redis-server in a directory we own, listening on 127.0.0.1 only.

It must never touch a redis the machine happens to run: the only process it stops besides
its own is one named by our pid file whose command line is a redis-server's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from devkit.localstack.common import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    free_port,
    pid_alive,
    start_on_a_free_port,
    track,
    untrack,
)
from rules.errors import ConfigError

log = logging.getLogger(__package__)  # the package's name, as before it was split

REDIS_PIDFILE = "redis-server.pid"  # ours: redis writes its own only when daemonized


class RedisServer:
    """A private redis-server in ``datadir`` on 127.0.0.1.

    ``persistence`` turns on the append-only file with an fsync per write, so a restart
    (even after SIGKILL) gives the data back; without it nothing is written to disk.
    """

    def __init__(self, datadir: Path, *, port: int | None = None, persistence: bool = False):
        self.datadir = Path(datadir).absolute()
        self.persistence = persistence
        self._fixed_port = port is not None
        self.port: int = port if port is not None else free_port()
        self.logfile = self.datadir / "redis.log"
        self.pidfile = self.datadir / REDIS_PIDFILE
        self._proc: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).is_file():
            raise ConfigError(
                "redis-server not found: install Debian's 'redis-server' package "
                "(scripts/bootstrap.sh does it)"
            )
        self.binary = binary

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _command(self) -> list[str]:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.datadir), "--logfile", str(self.logfile)]
        args += ["--daemonize", "no", "--save", ""]
        if self.persistence:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args

    def start(self) -> None:
        """Start and wait until it answers PING."""
        if self.running:
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        # A server left by a killed earlier run would share our append-only file: stop it.
        stop_leftover_redis(self.pidfile, signal.SIGTERM)
        start_on_a_free_port(
            self,
            self._launch,
            fixed_port=self._fixed_port,
            name="redis-server",
            where=f"in {self.datadir}",
            after_failure=self.stop,
        )

    def _launch(self) -> str | None:
        """One start on ``self.port``: None once it answers PING, else "" (it logs, not prints)."""
        # Own session: a Ctrl-C at the terminal must not kill it before its users stop.
        self._proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        track(self)
        self.pidfile.write_text(f"{self._proc.pid}\n")
        return None if self._wait_ready() else ""

    def _wait_ready(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.exceptions.ConnectionError:
                    pass
                except redis.exceptions.BusyLoadingError:
                    pass
                time.sleep(0.02)
            return False
        finally:
            client.close()

    def stop(self, *, kill: bool = False) -> None:
        """Stop (SIGTERM: a clean shutdown; ``kill=True``: SIGKILL, a crash). Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.pidfile.unlink(missing_ok=True)
        untrack(self)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self._fixed_port = True
        self.start()


def stop_leftover_redis(pidfile: Path, signum: int) -> None:
    """Stop the redis-server named by our pid file, if it still runs (checked by cmdline)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
            log.warning("stopping a leftover server", extra={"pid": pid, "path": str(pidfile)})
            os.kill(pid, signum)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
    pidfile.unlink(missing_ok=True)

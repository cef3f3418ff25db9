"""``engine up``: the whole stack on one machine, for trying the engine out (``make run``).

Starts, under ``ROOT/.engine/``: a private PostgreSQL and Redis (data kept between runs,
ports remembered in ``state.json`` and reused while free), the migrations, the local
webhook receiver and Telegram stand-in (in this process), then ``engine run`` and one
``engine worker`` as child processes.  Ctrl-C or SIGTERM stops everything it started, in
reverse order.  It must never touch a server it did not start itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from devkit.localstack import PostgresServer, RedisServer, free_port, port_is_free
from devkit.receiver import LocalReceiver, serve_receiver
from rules.errors import EngineError

ENGINE_HOME = ".engine"
STATE_FILE = "state.json"
DATABASE_NAME = "engine"
CHILD_STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 20.0
WATCH_INTERVAL_S = 0.5
DEMO_INTERVAL_S = 3.0
STAND_IN_BOT_TOKEN = "000000:local-stand-in"
# Children see the receiver's URL here, so rule files can say ${DEMO_WEBHOOK_URL}.
DEMO_WEBHOOK_ENV = "DEMO_WEBHOOK_URL"
# The example rules post to ${WEBHOOK_URL:-…}: point it at the receiver unless the user
# already chose an endpoint of their own.
EXAMPLE_WEBHOOK_ENV = "WEBHOOK_URL"


def _say(text: str) -> None:
    print(f"engine up: {text}", flush=True)


@dataclass
class Ports:
    """The ports of the last run, reused when still free so URLs stay the same."""

    postgres: int | None = None
    redis: int | None = None
    http: int | None = None
    receiver: int | None = None

    @classmethod
    def load(cls, path: Path) -> Ports:
        try:
            data = json.loads(path.read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            return cls()

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def _reusable(port: int | None) -> int | None:
    return port if port is not None and port_is_free(port) else None


class Child:
    """An engine process in its own session, so a terminal Ctrl-C reaches only us."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            self.argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)


def _dead_child(children: list[Child]) -> Child | None:
    return next((child for child in children if child.exit_code() is not None), None)


def _stop_children(children: list[Child]) -> None:
    """SIGTERM to all at once, then SIGKILL to whoever is still there after the timeout."""
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
    for child in children:
        if child.proc is None:
            continue
        try:
            child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{child.name} did not stop in {CHILD_STOP_TIMEOUT_S:.0f}s: killing it")
            child.signal(signal.SIGKILL)
            child.proc.wait()


class _Interrupts:
    """The first SIGINT/SIGTERM interrupts (KeyboardInterrupt); later ones only wait."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            _say("still stopping, please wait")
            return
        self.requested = True
        raise KeyboardInterrupt


def _write_config(
    home: Path,
    root: Path,
    *,
    database_url: str,
    redis_url: str,
    http_port: int,
    receiver: LocalReceiver,
) -> Path:
    if os.environ.get("TELEGRAM_BOT_TOKEN"):
        telegram = {
            "api_base_url": "https://api.telegram.org",
            "bots": {"default": {"token": "${TELEGRAM_BOT_TOKEN}"}},
        }
    else:
        telegram = {
            "api_base_url": receiver.telegram_api_base_url,
            "bots": {"default": {"token": STAND_IN_BOT_TOKEN}},
        }
    config = {
        "database_url": database_url,
        "redis_url": redis_url,
        "rules": [str(root / "examples" / "rules")],
        "http": {"listen": f"127.0.0.1:{http_port}"},
        "telegram": telegram,
        "network": {"allow_private": True},
        # What the example rules read; nothing else of this environment reaches them.
        "rules_env": [EXAMPLE_WEBHOOK_ENV, DEMO_WEBHOOK_ENV, "TELEGRAM_CHAT_ID"],
    }
    path = home / "config.yaml"
    header = "# Written by `engine up` on every start; pass --config to use your own.\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path


def _wait_ready(http_port: int, children: list[Child]) -> bool:
    """Until /healthz answers 200, a child exits, or the deadline passes."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    url = f"http://127.0.0.1:{http_port}/healthz"
    while time.monotonic() < deadline:
        if _dead_child(children) is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def _emit_demo_events(database_url: str, stop: threading.Event) -> None:
    """A slow, plausible stream of ERC-8004 events so the example rules have work."""
    import sql
    from devkit.demo import DemoStream
    from engine.emit import build_event, insert_event

    stream = DemoStream(random.Random())
    try:
        with sql.connect(database_url) as conn:
            while not stop.wait(DEMO_INTERVAL_S):
                registry, event_type, fields = stream.next_event()
                insert_event(conn, build_event(registry, event_type, fields))
    except Exception as exc:  # a demo must never take the stack down
        _say(f"demo events stopped: {exc}")


def _pid(child: Child) -> int | None:
    return child.proc.pid if child.proc is not None else None


def _banner(**where: str) -> str:
    width = max(len(k) for k in where)
    lines = ["", "trigger-engine is up:"]
    lines += [f"  {name.ljust(width)}  {value}" for name, value in where.items()]
    return "\n".join(lines)


def run_up(*, root: Path, config_path: Path | None, demo: bool = False) -> int:
    """Run the local stack until Ctrl-C/SIGTERM (exit 0) or until a child dies (exit 1)."""
    interrupts = _Interrupts()
    interrupts.install()
    try:
        with contextlib.ExitStack() as cleanup:
            try:
                return _run(cleanup, root.resolve(), config_path, demo)
            except KeyboardInterrupt:
                interrupts.requested = True
                _say("stopping")
                return 0
            finally:
                interrupts.requested = True  # a signal now must not cut the cleanup short
    except EngineError as exc:
        _say(f"error: {exc}")
        return 1
    finally:
        interrupts.restore()


def _run(cleanup: contextlib.ExitStack, root: Path, config_path: Path | None, demo: bool) -> int:
    home = root / ENGINE_HOME
    home.mkdir(parents=True, exist_ok=True)
    state = home / STATE_FILE
    ports = Ports.load(state)

    _say(f"starting PostgreSQL and Redis (data in {home})")
    postgres = PostgresServer(home / "postgres", port=_reusable(ports.postgres))
    cleanup.callback(postgres.stop)
    postgres.start()
    redis_server = RedisServer(home / "redis", port=_reusable(ports.redis), persistence=True)
    cleanup.callback(redis_server.stop)
    redis_server.start()
    receiver: LocalReceiver = serve_receiver(port=_reusable(ports.receiver) or 0)
    cleanup.callback(receiver.stop)
    http_port = _reusable(ports.http) or free_port()
    Ports(postgres.port, redis_server.port, http_port, receiver.port).save(state)

    from engine.migrate import apply_migrations

    database_url = postgres.create_database(DATABASE_NAME, exist_ok=True)
    applied = apply_migrations(database_url)
    _say(f"migrations applied: {', '.join(applied) or 'none new'}")

    env = {**os.environ, "PYTHONUNBUFFERED": "1", DEMO_WEBHOOK_ENV: receiver.webhook_url}
    env.setdefault(EXAMPLE_WEBHOOK_ENV, receiver.webhook_url)
    if config_path is None:
        config = _write_config(
            home,
            root,
            database_url=database_url,
            redis_url=redis_server.url(),
            http_port=http_port,
            receiver=receiver,
        )
        emit_prefix = ""
    else:
        # ENGINE_* variables win over the file: the user's rules, our servers.
        config = config_path.resolve()
        env |= {"ENGINE_DATABASE_URL": database_url, "ENGINE_REDIS_URL": redis_server.url()}
        emit_prefix = f"ENGINE_DATABASE_URL={database_url} "

    engine_cmd = [sys.executable, "-m", "engine", "--config", str(config)]
    children = [Child("engine run", [*engine_cmd, "run"]), Child("worker", [*engine_cmd, "worker"])]
    cleanup.callback(_stop_children, children)
    for child in children:
        child.start(env=env, cwd=root)

    ready = _wait_ready(http_port, children)
    if (dead := _dead_child(children)) is not None:
        _say(f"{dead.name} exited with status {dead.exit_code()} while starting; stopping")
        return 1
    print(
        _banner(
            postgres=f"{database_url}  (data in {home / 'postgres'})",
            redis=f"{redis_server.url()}  (data in {home / 'redis'})",
            engine=f"pid {_pid(children[0])}, http://127.0.0.1:{http_port}/healthz",
            worker=f"pid {_pid(children[1])}",
            receiver=f"{receiver.webhook_url}  (deliveries are printed below)",
            telegram=f"{receiver.telegram_api_base_url}  (a stand-in that prints messages)",
            config=str(config),
        ),
        f"Emit a demo event:\n  {emit_prefix}{Path(sys.executable).parent / 'engine'} "
        f"--config {config} emit reputation NewFeedback agent_id=42 score=12",
        "Stop: Ctrl-C\n",
        sep="\n\n",
        flush=True,
    )
    _say(
        "ready" if ready else f"engine run not healthy after {READY_TIMEOUT_S:.0f}s; still waiting"
    )

    if demo:
        stop_demo = threading.Event()
        thread = threading.Thread(
            target=_emit_demo_events, args=(database_url, stop_demo), name="demo", daemon=True
        )
        cleanup.callback(thread.join, 5)
        cleanup.callback(stop_demo.set)
        thread.start()
        _say(f"demo: an ERC-8004 event every {DEMO_INTERVAL_S:.0f}s (feedback, registrations, …)")

    while (dead := _dead_child(children)) is None:
        time.sleep(WATCH_INTERVAL_S)
    _say(f"{dead.name} exited with status {dead.exit_code()}; stopping everything")
    return 1

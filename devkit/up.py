"""``engine up``: the whole stack on one machine, for trying the engine out (``make run``).

Starts, under ``ROOT/.engine/``: a private PostgreSQL and Redis (data kept between runs,
ports remembered in ``state.json`` and reused while free), the migrations, the local
webhook receiver and Telegram stand-in (in this process), the ``demo`` organization and
its key (devkit.demo_org), then ``engine run``, one ``engine worker`` and ``engine api`` as
child processes.  Ctrl-C or SIGTERM stops everything it started, in
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

from devkit.demo_org import demo_org_key, local_secrets_key, tenant_flow_text, write_tenant_rules
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
    api: int | None = None

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
    api_port: int,
    secrets_key: str,
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
        "api": {"listen": f"127.0.0.1:{api_port}"},
        "secrets_key": secrets_key,
        "telegram": telegram,
        "network": {"allow_private": True},
        # What the example rules read; nothing else of this environment reaches them.
        "rules_env": [EXAMPLE_WEBHOOK_ENV, DEMO_WEBHOOK_ENV, "TELEGRAM_CHAT_ID"],
    }
    path = home / "config.yaml"
    header = "# Written by `engine up` on every start; pass --config to use your own.\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(health_urls: list[str], children: list[Child]) -> bool:
    """Until every /healthz answers 200, a child exits, or the deadline passes."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    waiting = list(health_urls)
    while time.monotonic() < deadline:
        if _dead_child(children) is not None:
            return False
        waiting = [url for url in waiting if not _healthy(url)]
        if not waiting:
            return True
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


def _other_free_port(taken: int) -> int:
    while (port := free_port()) == taken:
        pass
    return port


def _local_url(listen: str) -> str:
    """The URL this machine reaches a ``host:port`` listen address at."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def _users_endpoints(config: Path, env: dict[str, str], secrets_key: str) -> tuple[str | None, str]:
    """With the user's config: where its ``engine run`` and ``engine api`` listen; and the
    local ``secrets_key`` when the config has none, so tenant secrets work on our servers."""
    from engine.config import load_config

    settings = load_config(config, environ=env)
    if settings.secrets_key is None:
        env["ENGINE_SECRETS_KEY"] = secrets_key
    http_url = None if settings.http_listen is None else _local_url(settings.http_listen)
    return http_url, _local_url(settings.api.listen)


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
    api_port = _reusable(ports.api) or _other_free_port(http_port)
    Ports(postgres.port, redis_server.port, http_port, receiver.port, api_port).save(state)

    from engine.migrate import apply_migrations

    database_url = postgres.create_database(DATABASE_NAME, exist_ok=True)
    applied = apply_migrations(database_url)
    _say(f"migrations applied: {', '.join(applied) or 'none new'}")
    secrets_key = local_secrets_key(home)
    demo_key = demo_org_key(database_url, home)
    tenant_rules = write_tenant_rules(
        home, webhook_url=receiver.webhook_url, chat_id=os.environ.get("TELEGRAM_CHAT_ID")
    )

    env = {**os.environ, "PYTHONUNBUFFERED": "1", DEMO_WEBHOOK_ENV: receiver.webhook_url}
    env.setdefault(EXAMPLE_WEBHOOK_ENV, receiver.webhook_url)
    if config_path is None:
        config = _write_config(
            home,
            root,
            database_url=database_url,
            redis_url=redis_server.url(),
            http_port=http_port,
            api_port=api_port,
            secrets_key=secrets_key,
            receiver=receiver,
        )
        emit_prefix = ""
        http_url: str | None = f"http://127.0.0.1:{http_port}"
        api_url = f"http://127.0.0.1:{api_port}"
    else:
        # ENGINE_* variables win over the file: the user's rules, our servers.
        config = config_path.resolve()
        env |= {"ENGINE_DATABASE_URL": database_url, "ENGINE_REDIS_URL": redis_server.url()}
        emit_prefix = f"ENGINE_DATABASE_URL={database_url} "
        http_url, api_url = _users_endpoints(config, env, secrets_key)

    engine_cmd = [sys.executable, "-m", "engine", "--config", str(config)]
    children = [
        Child("engine run", [*engine_cmd, "run"]),
        Child("worker", [*engine_cmd, "worker"]),
        Child("engine api", [*engine_cmd, "api"]),
    ]
    cleanup.callback(_stop_children, children)
    for child in children:
        child.start(env=env, cwd=root)

    health = [f"{url}/healthz" for url in (http_url, api_url) if url is not None]
    ready = _wait_ready(health, children)
    if (dead := _dead_child(children)) is not None:
        _say(f"{dead.name} exited with status {dead.exit_code()} while starting; stopping")
        return 1
    engine = Path(sys.executable).parent / "engine"
    emit = (
        f"{emit_prefix}{engine} --config {config} emit reputation NewFeedback agent_id=42 score=12"
    )
    where = {
        "postgres": f"{database_url}  (data in {home / 'postgres'})",
        "redis": f"{redis_server.url()}  (data in {home / 'redis'})",
        "engine": f"pid {_pid(children[0])}, {http_url or '(http.listen is off)'}/healthz",
        "worker": f"pid {_pid(children[1])}",
        "api": f"pid {_pid(children[2])}, {api_url}  (interactive docs: {api_url}/docs)",
        "demo key": f"{demo_key.text}  (organization demo, editor; kept in {home})",
        "receiver": f"{receiver.webhook_url}  (deliveries are printed below)",
        "telegram": f"{receiver.telegram_api_base_url}  (a stand-in that prints messages)",
        "config": str(config),
    }
    # The stand-in answers any bot token; the real Bot API needs the user's own.
    bot_token = "YOUR_BOT_TOKEN" if os.environ.get("TELEGRAM_BOT_TOKEN") else STAND_IN_BOT_TOKEN
    flow = tenant_flow_text(
        engine=str(engine),
        emit=emit,
        api_url=api_url,
        key=demo_key,
        rules_dir=tenant_rules,
        bot_token=bot_token,
    )
    print(
        _banner(**where),
        f"Emit a demo event:\n  {emit}",
        flow,
        "Stop: Ctrl-C\n",
        sep="\n\n",
        flush=True,
    )
    _say("ready" if ready else f"not healthy after {READY_TIMEOUT_S:.0f}s; still waiting")

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

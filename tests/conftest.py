"""Shared fixtures: private PostgreSQL and Redis for the session, a fresh database per test.

The servers are started lazily (a unit-only run starts nothing) in a directory of our
own under /tmp, readable by the ``postgres`` user when we run as root, and stopped at
the end of the session.  A test's database is a copy of a migrated template, which
costs tens of milliseconds; it is dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from hypothesis import settings as hypothesis_settings
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `from tests.fakes... import` without installing tests
    sys.path.insert(0, str(ROOT))

from devkit.localstack import PostgresServer, RedisServer, pid_alive, stop_abandoned  # noqa: E402
from tests.fakes.webhook import WebhookReceiver  # noqa: E402

# CI runs the property tests with a fixed seed: a run must not turn red by chance.
# Locally they explore afresh each time (and replay what failed from .hypothesis/).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

TEMPLATE_DATABASE = "engine_template"
STACK_DIR_PREFIX = "engine-tests-"
OWNER_FILE = "owner.pid"


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (a CI timeout) would skip finalizers and atexit: make it a Ctrl-C, which
    # pytest turns into an orderly stop that shuts our servers down.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def _remove_abandoned_stacks() -> None:
    """Servers and directories of earlier sessions that were killed (SIGKILL: no cleanup)."""
    for directory in Path("/tmp").glob(f"{STACK_DIR_PREFIX}*"):
        try:
            owner = int((directory / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not pid_alive(owner):
            stop_abandoned(directory)
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def stack_dir() -> Iterator[Path]:
    """A session directory for server data; /tmp/pytest-of-root is 0700, postgres can't enter."""
    _remove_abandoned_stacks()
    path = Path(tempfile.mkdtemp(prefix=STACK_DIR_PREFIX, dir="/tmp"))
    path.chmod(0o755)
    (path / OWNER_FILE).write_text(f"{os.getpid()}\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(stack_dir: Path) -> Iterator[PostgresServer]:
    """A private PostgreSQL (fsync off) for the whole session."""
    server = PostgresServer(stack_dir / "postgres", fast_unsafe=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(stack_dir: Path) -> Iterator[RedisServer]:
    """A private redis-server (no persistence) for the whole session."""
    server = RedisServer(stack_dir / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template_database(pg_server: PostgresServer) -> str:
    """The name of a database with every migration applied, copied for each test."""
    from engine.migrate import apply_migrations

    dsn = pg_server.create_database(TEMPLATE_DATABASE)
    apply_migrations(dsn)
    # A stray connection to the template would make every copy fail; forbid them.
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true").format(
                sql.Identifier(TEMPLATE_DATABASE)
            )
        )
    return TEMPLATE_DATABASE


@pytest.fixture
def database_url(pg_server: PostgresServer, template_database: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex}"
    dsn = pg_server.create_database(name, template=template_database)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def empty_database_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh database with no migrations applied (for migration tests)."""
    name = f"e_{uuid.uuid4().hex}"
    dsn = pg_server.create_database(name)
    try:
        yield dsn
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied (FLUSHALL) before the test."""
    url = redis_server.url()
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()
    return url


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """An HTTP endpoint on 127.0.0.1 recording requests; ``.url`` is its base URL."""
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()

"""The private servers and the fixtures built on them behave as the rest of the suite assumes."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest
import redis

from devkit.localstack import PostgresServer, RedisServer, pid_alive, port_is_free
from tests.fakes.webhook import WebhookReceiver


def _answer(dsn: str) -> int:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT 41 + 1").fetchone()
        assert row is not None
        return int(row[0])


def test_postgres_starts_restarts_on_same_port_and_stops_without_leftovers(stack_dir: Path) -> None:
    server = PostgresServer(stack_dir / "pg-lifecycle", fast_unsafe=True)
    server.start()
    try:
        assert server.running
        assert _answer(server.dsn()) == 42
        port, first_pid = server.port, server.pid
        assert first_pid is not None and pid_alive(first_pid)

        server.restart()
        assert server.port == port
        assert server.pid != first_pid
        assert not pid_alive(first_pid)
        assert _answer(server.dsn()) == 42
        last_pid = server.pid
    finally:
        server.stop()
    assert last_pid is not None and not pid_alive(last_pid)
    assert port_is_free(port)
    assert not server.running
    server.stop()  # idempotent


def test_postgres_keeps_data_between_runs(stack_dir: Path) -> None:
    datadir = stack_dir / "pg-keeps"
    server = PostgresServer(datadir, fast_unsafe=True)
    server.start()
    try:
        dsn = server.create_database("kept")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE marker (x int)")
    finally:
        server.stop()

    again = PostgresServer(datadir, fast_unsafe=True)
    again.start()
    try:
        with psycopg.connect(again.dsn("kept")) as conn:
            assert conn.execute("SELECT count(*) FROM marker").fetchone() == (0,)
            assert conn.execute("SHOW max_connections").fetchone() == ("300",)
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
    finally:
        again.stop()


def test_redis_with_persistence_keeps_a_key_across_restarts(stack_dir: Path) -> None:
    server = RedisServer(stack_dir / "redis-persist", persistence=True)
    server.start()
    try:
        client = redis.Redis.from_url(server.url())
        client.set("kept", "yes")
        client.close()
        port, pid = server.port, server.pid
        server.stop()
        assert pid is not None and not pid_alive(pid)
        server.start()
        assert server.port == port
        client = redis.Redis.from_url(server.url())
        assert client.get("kept") == b"yes"
        client.close()
    finally:
        server.stop()


def test_redis_persistence_survives_a_kill(stack_dir: Path) -> None:
    server = RedisServer(stack_dir / "redis-kill", persistence=True)
    server.start()
    try:
        client = redis.Redis.from_url(server.url())
        client.set("kept", "after-kill")
        client.close()
        server.stop(kill=True)
        server.start()
        client = redis.Redis.from_url(server.url())
        assert client.get("kept") == b"after-kill"
        client.close()
    finally:
        server.stop()


def test_a_table_made_in_one_database_is_absent_from_the_next(
    pg_server: PostgresServer, template_database: str
) -> None:
    first = pg_server.create_database("iso_a", template=template_database)
    second = pg_server.create_database("iso_b", template=template_database)
    try:
        with psycopg.connect(first, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_here (x int)")
        with psycopg.connect(second) as conn:
            row = conn.execute("SELECT to_regclass('only_here')").fetchone()
            assert row == (None,)
    finally:
        pg_server.drop_database("iso_a")
        pg_server.drop_database("iso_b")


@pytest.mark.parametrize("turn", [1, 2])
def test_each_test_gets_its_own_migrated_database(database_url: str, turn: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('leak_check')").fetchone() == (None,)
        assert conn.execute("SELECT to_regclass('events')").fetchone() == ("events",)
        conn.execute("CREATE TABLE leak_check (turn int)")


def test_empty_database_has_no_tables(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert row == (0,)


@pytest.mark.parametrize("turn", [1, 2])
def test_redis_url_is_flushed_before_each_test(redis_url: str, turn: int) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        client.set("leak", turn)
    finally:
        client.close()


def _post(url: str, body: dict[str, object], timeout: float = 5) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_webhook_receiver_records_and_follows_its_behaviour(
    webhook_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.set_behaviour(fail_first=2, fail_status=503)
    statuses = [_post(f"{webhook_receiver.url}/hook", {"n": n}) for n in range(3)]
    assert statuses == [503, 503, 200]
    received = webhook_receiver.wait_for(3, timeout=1)
    assert [r.json for r in received] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert received[0].method == "POST" and received[0].path == "/hook"
    assert received[0].header("Content-Type") == "application/json"

    webhook_receiver.set_behaviour(delay_s=0.3)
    started = time.monotonic()
    assert _post(webhook_receiver.url, {}) == 200
    assert time.monotonic() - started >= 0.3

    with pytest.raises(AssertionError, match="got 4"):
        webhook_receiver.wait_for(5, timeout=0.1)


def test_webhook_receiver_goes_down_and_comes_back_on_the_same_port(
    webhook_receiver: WebhookReceiver,
) -> None:
    url = webhook_receiver.url
    webhook_receiver.stop()
    with pytest.raises(urllib.error.URLError):
        _post(url, {"down": True}, timeout=2)
    webhook_receiver.start()
    assert webhook_receiver.url == url
    assert _post(url, {"up": True}) == 200
    assert [r.json for r in webhook_receiver.wait_for(1)] == [{"up": True}]

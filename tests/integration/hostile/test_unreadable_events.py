"""Text that is not UTF-8 cannot stall evaluation: `engine migrate` refuses a database
that would store it (SQL_ASCII), and when such a row is there anyway, `engine run` skips
it, counts and logs it, and evaluates the events after it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as pgsql

import sql
from tests.fakes.webhook import WebhookReceiver
from tests.processes import engine_processes, query_all, run_engine, wait_until, write_config

RULES = """
rules:
  - id: echo-tag
    on: {{registry: reputation, event_type: NewFeedback}}
    actions:
      - rest: {{url: "{url}/hook", body: {{tag: "{{{{ event.tag1 }}}}"}}}}
"""
INSERT = """INSERT INTO events (id, chain_id, block_number, block_hash, transaction_hash,
                                log_index, registry, event_type, agent_id, "timestamp", tag1)
            VALUES ({id}, 84532, 1, '0xb', '0xt', {log_index}, 'reputation', 'NewFeedback',
                    7, 1764000000, {tag})"""


@pytest.fixture
def sql_ascii_database(pg_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty database created with the SQL_ASCII encoding on the test server."""
    name = f"a_{uuid.uuid4().hex}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(
            pgsql.SQL(
                "CREATE DATABASE {} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'"
                " TEMPLATE template0"
            ).format(pgsql.Identifier(name))
        )
    try:
        yield pg_server.dsn(name)
    finally:
        pg_server.drop_database(name)


def test_migrate_refuses_a_sql_ascii_database(
    tmp_path: Path, sql_ascii_database: str, redis_url: str
) -> None:
    config = write_config(tmp_path, database_url=sql_ascii_database, redis_url=redis_url, rules=[])
    migrated = run_engine(config, "migrate")
    assert migrated.returncode == 1
    assert "uses the SQL_ASCII encoding; the engine needs UTF8" in migrated.stderr
    assert "ENCODING 'UTF8' TEMPLATE template0" in migrated.stderr
    assert "Traceback" not in migrated.stderr
    tables = query_all(sql_ascii_database, "SELECT to_regclass('events')::text")
    assert tables == [(None,)]  # nothing was applied


def _apply_schema_anyway(dsn: str) -> None:
    """What `engine migrate` would do, without its encoding check (an old deployment)."""
    with sql.connect(dsn) as conn:
        sql.run(conn, "migrations_table")
        for migration in sql.migrations():
            sql.run_script(conn, migration.sql)
            sql.run(conn, "record_migration", migration.name)
        sql.run(conn, "doorbell_on")


def test_the_daemon_skips_a_row_it_cannot_read_and_goes_on(
    tmp_path: Path, sql_ascii_database: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    _apply_schema_anyway(sql_ascii_database)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(url=webhook_receiver.url), encoding="utf-8")
    config = write_config(
        tmp_path, database_url=sql_ascii_database, redis_url=redis_url, rules=str(rules)
    )
    with psycopg.connect(sql_ascii_database, autocommit=True) as conn:
        # 0xfe and 0xff are never valid UTF-8; SQL_ASCII stores them as they are.
        conn.execute(INSERT.format(id="E'bad-\\xfe'", log_index=0, tag="E'caf\\xff'").encode())
        conn.execute(INSERT.format(id="'good'", log_index=1, tag="'fine'").encode())
    with engine_processes(config, tmp_path, ["run"]) as (engine,):
        rows = wait_until(
            lambda: query_all(sql_ascii_database, "SELECT event_id FROM action_results"),
            timeout=15,
            what="the event after the unreadable one to be evaluated",
        )
        assert rows == [(b"good",)]  # psycopg leaves SQL_ASCII text as bytes
        wait_until(
            lambda: "event skipped" in engine.output(), timeout=5, what="the skip in the log"
        )
    log = engine.output()
    assert "event_id=bad-\\xfe" in log, log  # the unreadable id, shown as its bytes
    assert query_all(sql_ascii_database, "SELECT events FROM engine_cursors") == [(2,)]

"""The servers the bench measures against: private ones in a temp dir, or given URLs."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from devkit.localstack import PostgresServer, RedisServer
from engine.migrate import migrate

BENCH_DATABASE = "engine_bench"

#: A bench-only trigger: the evaluator's commit of queued rows announces their id range,
#: so "INSERT commit -> action_results row queued" is measured at the commit itself.
QUEUED_PROBE_SQL = """
CREATE OR REPLACE FUNCTION bench_notify_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_queued', (SELECT min(id) || ',' || max(id) FROM new_rows));
    RETURN NULL;
END;
$$;
CREATE OR REPLACE TRIGGER bench_queued_probe AFTER INSERT ON action_results
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bench_notify_queued();
"""

RESET_SQL = """
TRUNCATE events, action_results, trigger_state, rule_stats;
DELETE FROM engine_cursors;
"""


@dataclass
class BenchStack:
    database_url: str
    redis_url: str
    workdir: Path


@contextlib.contextmanager
def bench_stack(database_url: str | None, redis_url: str | None) -> Iterator[BenchStack]:
    """Start what was not given; migrate; yield; stop what we started."""
    workdir = Path(tempfile.mkdtemp(prefix="engine-bench-", dir="/tmp"))
    workdir.chmod(0o755)
    pg: PostgresServer | None = None
    rd: RedisServer | None = None
    try:
        if database_url is None:
            pg = PostgresServer(workdir / "postgres", fast_unsafe=True)
            pg.start()
            database_url = pg.create_database(BENCH_DATABASE)
        if redis_url is None:
            rd = RedisServer(workdir / "redis")
            rd.start()
            redis_url = rd.url()
        migrate(database_url, timescaledb=False)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(QUEUED_PROBE_SQL)
        yield BenchStack(database_url, redis_url, workdir)
    finally:
        if rd is not None:
            rd.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def reset_database(database_url: str) -> None:
    """Empty the tables a measurement writes (never used on a given --database-url's data
    without the user asking for it: the bench only runs on a database it may empty)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(RESET_SQL)


def forget_queued(database_url: str, redis_url: str) -> None:
    """Mark what earlier live runs left queued (no worker ran) as done, and empty RQ: else
    the engine's sweep checks those rows every second, and workers started later would
    deliver them first, neither of which is what is measured."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE action_results SET status = 'success' WHERE status = 'queued'")
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    connection.close()

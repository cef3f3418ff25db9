"""The TimescaleDB path against a real TimescaleDB: migrations, chunk retention, statistics.

The server is PGlite's TimescaleDB build (tests/timescaledb_server.py says what differs
from a TimescaleDB server and how these tests allow for it).  Everything goes through
one connection at a time: ``engine migrate`` first, then one asyncpg pool of one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from engine.config import RetentionSettings
from engine.maintenance import apply_retention, events_is_hypertable, refresh_statistics
from engine.migrate import migrate
from tests.timescaledb_server import TimescaleServer, open_pool


@pytest.fixture
def timescale_dsn() -> Iterator[str]:
    """A fresh TimescaleDB (in memory) of this test's own, migrated."""
    server = TimescaleServer()
    server.start()
    try:
        report = migrate(server.dsn())
        assert report.timescaledb
        yield server.dsn()
    finally:
        server.stop()


@pytest.fixture
async def pool(timescale_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_pool(timescale_dsn)
    try:
        yield pool
    finally:
        pool.terminate()  # the server does not answer a Terminate message: no close()


async def _insert_event(pool: asyncpg.Pool, name: str, days_ago: float, chain: int = 1) -> None:
    """One event, in its own transaction (so a cursor can stand between two of them)."""
    await pool.execute(
        """INSERT INTO events (id, chain_id, block_number, block_hash, transaction_hash,
                               log_index, registry, event_type, agent_id, "timestamp",
                               score, created_at)
           VALUES ($1, $3, 1, '0xb', '0xt', 0, 'reputation', 'NewFeedback', 7, 0, 50,
                   now() - make_interval(secs => $2 * 86400))""",
        name,
        days_ago,
        chain,
    )


async def _cursor_past(pool: asyncpg.Pool, name: str) -> None:
    """The engine's cursor, as if it had evaluated everything up to event `name`."""
    await pool.execute(
        """INSERT INTO engine_cursors (name, txid, seq)
           SELECT 'main', txid, seq FROM events WHERE id = $1
           ON CONFLICT (name) DO UPDATE SET txid = EXCLUDED.txid, seq = EXCLUDED.seq""",
        name,
    )


async def _event_ids(pool: asyncpg.Pool) -> list[str]:
    return [row["id"] for row in await pool.fetch("SELECT id FROM events ORDER BY id")]


async def test_migrations_build_the_hypertable_and_the_continuous_aggregate_with_its_policy(
    timescale_dsn: str,
) -> None:
    again = migrate(timescale_dsn)  # on a hypertable with its aggregate already there
    assert (again.applied, again.timescaledb) == ([], True)
    pool = await open_pool(timescale_dsn)
    try:
        await _check_aggregate_and_its_policy(pool)
    finally:
        pool.terminate()  # the server does not answer a Terminate message: no close()


async def _check_aggregate_and_its_policy(pool: asyncpg.Pool) -> None:
    assert await events_is_hypertable(pool)
    aggregate = await pool.fetchrow(
        """SELECT materialization_hypertable_schema AS schema,
                  materialization_hypertable_name AS name
             FROM timescaledb_information.continuous_aggregates
            WHERE view_name = 'events_hourly'"""
    )
    assert aggregate is not None, "events_hourly is not a continuous aggregate"
    job = await pool.fetchrow(
        """SELECT job_id, schedule_interval FROM timescaledb_information.jobs
            WHERE proc_name = 'policy_refresh_continuous_aggregate'
              AND hypertable_name = 'events_hourly'"""
    )
    assert job is not None, "events_hourly has no refresh policy"
    assert job["schedule_interval"].total_seconds() == 30 * 60

    for i in range(3):  # inside the policy's window: 3 days back to 1 hour back
        await _insert_event(pool, f"1-{i}-0", days_ago=2)
    # The engine refreshes only the plain views; the aggregate is the policy's.
    assert await refresh_statistics(pool) == ["action_metrics_hourly"]
    materialized = f'SELECT count(*) FROM "{aggregate["schema"]}"."{aggregate["name"]}"'
    assert await pool.fetchval(materialized) == 0

    await pool.execute("CALL run_job($1)", job["job_id"])  # what its schedule would do

    assert await pool.fetchval(materialized) == 1  # one hour, one chain, one type
    row = await pool.fetchrow("SELECT events, max_score FROM events_hourly")
    assert (row["events"], row["max_score"]) == (3, 50)


async def test_chunk_retention_spares_events_a_cursor_has_not_passed_and_held_events(
    pool: asyncpg.Pool,
) -> None:
    # One event per 7-day chunk, oldest first; `recent` is inside the retention period.
    # h is of chain 2, whose events wait for confirmations.
    for name, days_ago in [("a", 400), ("h", 390), ("b", 380), ("c", 370), ("recent", 1)]:
        await _insert_event(pool, name, days_ago, chain=2 if name == "h" else 1)
    settings = RetentionSettings(events_days=365)
    chunks = "SELECT count(*) FROM show_chunks('events')"
    assert await pool.fetchval(chunks) == 5

    no_cursor_yet = await apply_retention(pool, settings)
    assert no_cursor_yet.event_chunks_dropped == 0
    assert await _event_ids(pool) == ["a", "b", "c", "h", "recent"]

    # a, h and b evaluated; h held for confirmations; c not evaluated yet.
    await _cursor_past(pool, "b")
    await pool.execute(  # chain 2's cursor (engine.confirmations), waiting for h
        """INSERT INTO engine_cursors (name, chain_id, txid, seq)
           SELECT 'main@chain:2', 2, txid, seq - 1 FROM events WHERE id = 'h'"""
    )
    report = await apply_retention(pool, settings)
    assert report.event_chunks_dropped == 1
    assert await _event_ids(pool) == ["b", "c", "h", "recent"]

    # h confirmed and evaluated: its chain cursor reached the main one and went.
    await pool.execute("DELETE FROM engine_cursors WHERE chain_id = 2")
    report = await apply_retention(pool, settings)
    assert report.event_chunks_dropped == 2
    assert await _event_ids(pool) == ["c", "recent"]

    await _cursor_past(pool, "recent")
    report = await apply_retention(pool, settings)
    assert report.event_chunks_dropped == 1
    assert await _event_ids(pool) == ["recent"]
    assert await pool.fetchval(chunks) == 1

"""Retention (batched deletes on plain PostgreSQL) and the hourly statistics views."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import psycopg
import pytest

from engine.config import RetentionSettings
from engine.maintenance import apply_retention, events_is_hypertable, refresh_statistics
from tests.processes import engine_processes, insert_events, query_value, wait_until, write_config

OLD = "now() - interval '400 days'"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        yield pool
    finally:
        await pool.close()


HELD_CHAIN = 84532  # a chain whose events wait for confirmations
OTHER_CHAIN = 8453


def _events(n: int, *, agent: int, chain: int = OTHER_CHAIN) -> list[dict[str, object]]:
    return [
        {
            "registry": "reputation",
            "event_type": "NewFeedback",
            "agent_id": agent,
            "score": i,
            "chain_id": chain,
        }
        for i in range(n)
    ]


def _age_events(database_url: str, agent: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"UPDATE events SET created_at = {OLD} WHERE agent_id = %s", (agent,))


def _advance_cursor_past_everything(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO engine_cursors (name, txid, seq)
               SELECT 'main', max(txid), max(seq) FROM events
               ON CONFLICT (name) DO UPDATE SET txid = EXCLUDED.txid, seq = EXCLUDED.seq"""
        )


def _action_rows(database_url: str, rows: list[tuple[str, bool]]) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for i, (status, old) in enumerate(rows):
            conn.execute(
                f"""INSERT INTO action_results (trigger_id, event_id, action_index, action_type,
                                                status, spec, context, created_at)
                    VALUES ('r', %s, 0, 'rest', %s, '{{}}', '{{}}',
                            {OLD if old else "now()"})""",
                (f"e{i}", status),
            )


async def test_batched_retention_spares_unevaluated_events_and_pending_actions(
    database_url: str, pool: asyncpg.Pool
) -> None:
    insert_events(database_url, _events(20, agent=1))  # old and evaluated: deleted
    _age_events(database_url, 1)
    settings = RetentionSettings(action_results_days=90, events_days=365, delete_batch_size=7)
    before_any_cursor = await apply_retention(pool, settings)
    assert before_any_cursor.events_deleted == 0  # nothing evaluated yet: nothing goes
    _advance_cursor_past_everything(database_url)
    insert_events(database_url, _events(5, agent=2))  # old, not evaluated yet: kept
    _age_events(database_url, 2)
    insert_events(database_url, _events(4, agent=3))  # recent: kept
    _action_rows(
        database_url,
        [("success", True)] * 6
        + [("failed", True)] * 3
        + [("quota_exceeded", True)]  # an outcome too: held back, never to be sent
        + [("queued", True), ("retrying", True), ("running", True)]
        + [("success", False)] * 3,
    )

    assert not await events_is_hypertable(pool)
    report = await apply_retention(pool, settings)

    assert report.events_deleted == 20
    assert report.event_chunks_dropped == 0
    assert report.action_results_deleted == 10
    assert query_value(database_url, "SELECT count(*) FROM events WHERE agent_id = 1") == 0
    assert query_value(database_url, "SELECT count(*) FROM events WHERE agent_id = 2") == 5
    assert query_value(database_url, "SELECT count(*) FROM events WHERE agent_id = 3") == 4
    assert query_value(
        database_url, "SELECT string_agg(status, ',' ORDER BY id) FROM action_results"
    ) == ",".join(["queued", "retrying", "running", "success", "success", "success"])

    again = await apply_retention(pool, settings)  # nothing left to delete
    assert (again.events_deleted, again.action_results_deleted) == (0, 0)


async def test_statistics_views_are_populated_then_refreshed_concurrently(
    database_url: str, pool: asyncpg.Pool
) -> None:
    insert_events(database_url, _events(3, agent=1))
    _action_rows(database_url, [("success", False), ("failed", False)])

    assert sorted(await refresh_statistics(pool)) == ["action_metrics_hourly", "events_hourly"]
    assert query_value(database_url, "SELECT sum(events) FROM events_hourly") == 3
    assert query_value(database_url, "SELECT max_score FROM events_hourly") == 2
    assert query_value(database_url, "SELECT sum(actions) FROM action_metrics_hourly") == 2

    insert_events(database_url, _events(2, agent=2))
    await refresh_statistics(pool)  # populated now: the CONCURRENTLY form
    assert query_value(database_url, "SELECT sum(events) FROM events_hourly") == 5


def test_engine_run_refreshes_statistics_and_applies_retention(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    _action_rows(database_url, [("success", True), ("failed", False)])
    config = write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=[],
        extra={"retention": {"stats_refresh_s": 0.5, "interval_s": 0.5}},
    )
    with engine_processes(config, tmp_path, ["run"]) as (engine,):
        insert_events(database_url, _events(4, agent=9))
        wait_until(
            lambda: query_value(database_url, "SELECT sum(events) FROM events_hourly") == 4,
            timeout=20,
            what="events_hourly to count the new events",
        )
        wait_until(
            lambda: query_value(database_url, "SELECT count(*) FROM action_results") == 1,
            what="the old audit row to go",
        )
        assert engine.alive()
    assert "retention applied" in engine.output()


async def test_batched_retention_spares_held_events_and_is_not_stopped_by_rows_it_keeps(
    database_url: str, pool: asyncpg.Pool
) -> None:
    insert_events(database_url, _events(3, agent=2, chain=HELD_CHAIN))  # old, held: kept
    insert_events(database_url, _events(5, agent=1))  # old, evaluated: deleted
    _advance_cursor_past_everything(database_url)
    insert_events(database_url, _events(3, agent=3))  # old, not evaluated yet: kept
    with psycopg.connect(database_url, autocommit=True) as conn:
        # The chain cursor of engine.confirmations, waiting just before agent 2's rows; the
        # rows of other chains after it are the main cursor's, passed.
        conn.execute(
            """INSERT INTO engine_cursors (name, chain_id, txid, seq)
               SELECT 'main@chain:' || chain_id, chain_id, min(txid), min(seq) - 1
                 FROM events WHERE agent_id = 2 GROUP BY chain_id"""
        )
        # The rows that must stay are the oldest: they come first in every batch.
        conn.execute(f"UPDATE events SET created_at = {OLD} WHERE agent_id = 1")
        conn.execute(
            f"UPDATE events SET created_at = {OLD} - interval '9 days' WHERE agent_id <> 1"
        )

    report = await apply_retention(pool, RetentionSettings(events_days=365, delete_batch_size=2))

    assert report.events_deleted == 5
    assert query_value(database_url, "SELECT count(*) FROM events WHERE agent_id = 1") == 0
    assert query_value(database_url, "SELECT count(*) FROM events WHERE agent_id = 2") == 3
    assert query_value(database_url, "SELECT count(*) FROM events WHERE agent_id = 3") == 3


async def test_old_rule_changes_go_but_the_newest_is_kept(
    database_url: str, pool: asyncpg.Pool
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE trigger_changes")
        for i in range(5):
            conn.execute(
                "INSERT INTO trigger_changes (trigger_id, op, at) VALUES (%s, 'upsert', %s)",
                (f"r{i}", "2020-01-01" if i != 2 else "now"),
            )
        newest = conn.execute("SELECT max(seq) FROM trigger_changes").fetchone()
    settings = RetentionSettings(trigger_changes_days=7, delete_batch_size=2)

    report = await apply_retention(pool, settings)

    # r0, r1, r3 are old; r4 is old too but the newest: where a new leader starts
    assert report.trigger_changes_deleted == 3
    left = query_value(
        database_url, "SELECT string_agg(trigger_id, ',' ORDER BY seq) FROM trigger_changes"
    )
    assert left == "r2,r4"
    assert query_value(database_url, "SELECT max(seq) FROM trigger_changes") == newest[0]


async def test_reorg_records_go_with_the_events_age(database_url: str, pool: asyncpg.Pool) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE event_reorgs")
        for event_id, seen in (("old-1", OLD), ("old-2", OLD), ("old-3", OLD), ("new", "now()")):
            conn.execute(
                "INSERT INTO event_reorgs (event_id, kind, seen_at)"
                f" VALUES (%s, 'retraction', {seen})",
                (event_id,),
            )

    report = await apply_retention(pool, RetentionSettings(events_days=365, delete_batch_size=2))

    assert report.event_reorgs_deleted == 3
    assert query_value(database_url, "SELECT string_agg(event_id, ',') FROM event_reorgs") == "new"

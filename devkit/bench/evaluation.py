"""Figures 1 and 6: catch-up evaluation throughput against reading the same rows.

The backlog is committed once; each repetition resets the cursor, the state, the queued
rows and the RQ queue, and times the daemon's own drain (read, evaluate, one commit per
batch, enqueue) from the first read to the last queued row.  The baseline reads the
same rows through the same gap-safe cursor query and batch size, doing nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import redis

from devkit.bench.data import COLUMNS
from engine.config import EngineTunables, Settings
from engine.daemon import Daemon
from engine.evaluator import Evaluator
from engine.event_rows import read_batch_query
from engine.rulebook import RuleBook
from rules import RuleIndex, load_rules_text


def load_index(texts: list[str]) -> tuple[RuleIndex, float]:
    """Compile rule files' texts; returns the index and the seconds it took."""
    started = time.perf_counter()
    rules = []
    for i, text in enumerate(texts):
        loaded = load_rules_text(text, f"bench-{i}.yaml", environ={})
        if loaded.errors:
            raise RuntimeError(f"bench rules do not load: {loaded.errors[0]}")
        rules.extend(loaded.rules)
    return RuleIndex(rules), time.perf_counter() - started


async def insert_backlog(dsn: str, rows: Sequence[tuple[Any, ...]]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE events")
        for start in range(0, len(rows), 5000):
            await conn.copy_records_to_table(
                "events", records=rows[start : start + 5000], columns=list(COLUMNS)
            )
        await conn.execute("ANALYZE events")
    finally:
        await conn.close()


async def reset(conn: asyncpg.Connection, redis_url: str) -> None:
    await conn.execute(
        "TRUNCATE action_results, trigger_state, rule_stats; DELETE FROM engine_cursors"
    )
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


async def read_rate(dsn: str, batch_size: int, columns: tuple[str, ...] | None = None) -> float:
    """Rows/s read through the cursor query alone (the baseline): the engine's own query,
    selecting the columns it reads for the same rules (``RuleIndex.event_fields``), without
    the per-row rewrite probe (what the evaluation adds to a plain read)."""
    conn = await asyncpg.connect(dsn)
    try:
        txid, seq, total = "0", 0, 0
        started = time.perf_counter()
        while True:
            async with conn.transaction():
                rows = await conn.fetch(
                    read_batch_query(columns, probe_rewrites=False), txid, seq, batch_size, None
                )
            if not rows:
                break
            total += len(rows)
            txid, seq = rows[-1]["_txid"], rows[-1]["_seq"]
        return total / (time.perf_counter() - started)
    finally:
        await conn.close()


async def engine_rate(
    dsn: str, redis_url: str, index: RuleIndex, batch_size: int
) -> tuple[float, int, int]:
    """Events/s through the daemon's drain; returns (rate, events, fired)."""
    settings = Settings(
        database_url=dsn,
        redis_url=redis_url,
        http_listen=None,
        engine=EngineTunables(cursor_name="bench", batch_size=batch_size),
    )
    daemon = Daemon(settings, rulebook=RuleBook(paths=()))
    daemon.rulebook.index = index
    daemon.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with daemon.pool.acquire() as conn:
            await reset(conn, redis_url)
        daemon.evaluator = Evaluator("bench", batch_size)
        started = time.perf_counter()
        while True:
            before = daemon.stats.events
            await daemon._drain()
            if daemon.stats.events == before:
                break
        elapsed = time.perf_counter() - started
        return daemon.stats.events / elapsed, daemon.stats.events, daemon.stats.fired
    finally:
        await daemon.pool.close()
        daemon.dispatcher.close()

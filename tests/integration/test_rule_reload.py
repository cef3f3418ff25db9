"""A slow rule reload inside a real daemon: evaluation and /healthz go on while the rules
compile, and the new rules come in between two batches, never during one.

The reload is made slow the way a user makes it slow: many rules in the file.  The
daemon runs in this process so that the test can hold a batch open (a row lock on the
cursor, taken through PostgreSQL) while the compiled rules wait for the boundary.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from devkit.localstack import free_port
from engine.config import EngineTunables, Settings
from engine.daemon import Daemon
from tests.processes import insert_events

BATCH_SIZE = 10
FILLER_RULES = 12_000  # a few seconds of compiling: the window the test works in

TAGGED = """
  - id: tagged
    on: {{registry: reputation, event_type: NewFeedback}}
    actions:
      - rest: {{url: "http://127.0.0.1:9/{version}"}}
"""
FILLER = """
  - id: filler-{n}
    on: {{registry: reputation, event_type: NewFeedback}}
    where: {{agent_id: {agent}}}
    actions:
      - rest: {{url: "http://127.0.0.1:9/filler"}}
"""


def write_rules(path: Path, version: str, fillers: int) -> None:
    """Replace the file in one rename: the watch never sees half of it."""
    parts = ["rules:", TAGGED.format(version=version)]
    parts += [FILLER.format(n=n, agent=1_000_000 + n) for n in range(fillers)]
    partial = path.with_suffix(".tmp")
    partial.write_text("".join(parts), encoding="utf-8")
    os.replace(partial, path)


def feedback(count: int) -> list[dict[str, object]]:
    return [
        {"registry": "reputation", "event_type": "NewFeedback", "agent_id": n, "score": 1}
        for n in range(count)
    ]


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def healthz_seconds(port: int) -> float:
    """Time of one GET /healthz answered with 200."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return time.monotonic() - started


async def action_versions(conn: asyncpg.Connection) -> list[str]:
    """The url of each firing of ``tagged``, in the order the cursor evaluated the events."""
    rows = await conn.fetch(
        "SELECT a.spec->>'url' AS url FROM action_results a"
        " JOIN events e ON e.id = a.event_id WHERE a.trigger_id = 'tagged'"
        " ORDER BY e.txid, e.seq"
    )
    return [row["url"].rsplit("/", 1)[-1] for row in rows]


async def test_slow_reload_keeps_evaluating_and_swaps_between_batches(
    tmp_path: Path, database_url: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine")
    rules = tmp_path / "rules.yaml"
    write_rules(rules, "v1", fillers=0)
    port = free_port()
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        rules=(str(rules),),
        http_listen=f"127.0.0.1:{port}",
        engine=EngineTunables(
            poll_interval_s=0.2, batch_size=BATCH_SIZE, rules_watch_interval_s=0.1
        ),
    )
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run())
    conn = await asyncpg.connect(database_url)
    blocker = await asyncpg.connect(database_url)
    try:

        async def loads(n: int) -> bool:
            return daemon.rulebook.loads == n

        async def evaluated(n: int) -> bool:
            return daemon.stats.events == n

        def logged(message: str) -> bool:
            return any(r.getMessage() == message for r in caplog.records)

        await wait_for(lambda: loads(1), "the first load")

        # 1. A reload of many rules compiles while events are evaluated and /healthz answers.
        await asyncio.to_thread(write_rules, rules, "v2", FILLER_RULES)

        async def reloading() -> bool:
            return logged("rule files changed; reloading")

        await wait_for(reloading, "the reload to start")
        await asyncio.to_thread(insert_events, database_url, feedback(3 * BATCH_SIZE))
        await wait_for(lambda: evaluated(3 * BATCH_SIZE), "events evaluated during the reload")
        assert await healthz_seconds(port) < 1.0
        assert daemon.rulebook.loads == 1, "the reload finished too soon to show anything"

        # 2. Hold the next batch open (its cursor advance waits for this table lock, which
        # takes no transaction id and so hides no event) until the reload is compiled:
        # the new rules must wait for that batch to end.
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE engine_cursors IN SHARE MODE")
        await asyncio.to_thread(insert_events, database_url, feedback(2 * BATCH_SIZE))

        async def batch_waits() -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            )

        await wait_for(batch_waits, "the batch to wait on the cursor lock")
        assert daemon.rulebook.loads == 1, "the reload finished too soon to show anything"

        await wait_for(
            lambda: _count(caplog, "rules compiled", 2), "the reload to be compiled", 120
        )
        await asyncio.sleep(0.5)  # time enough for a swap that did not wait
        assert daemon.rulebook.loads == 1
        assert await conn.fetchval("SELECT count(*) FROM triggers") == 1
        await tx.rollback()

        await wait_for(lambda: evaluated(5 * BATCH_SIZE), "every event evaluated")
        await wait_for(lambda: loads(2), "the swap")
        assert await conn.fetchval("SELECT count(*) FROM triggers") == 1 + FILLER_RULES
        # The held batch was evaluated whole with the old rules, the next with the new.
        versions = await action_versions(conn)
        assert versions == ["v1"] * (4 * BATCH_SIZE) + ["v2"] * BATCH_SIZE
        assert not running.done()
    finally:
        await blocker.close()
        await conn.close()
        daemon.stopping.set()
        await asyncio.wait_for(running, 30)


async def _count(caplog: pytest.LogCaptureFixture, message: str, n: int) -> bool:
    return sum(r.getMessage() == message for r in caplog.records) >= n

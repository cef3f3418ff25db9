"""Organizations' rules inside a real daemon: written with SQL as the API writes them,
live for every event committed after the write, gone after a delete, held to a quota.

The daemon runs in this process (as in test_rule_reload) so that the test can watch its
batch transaction from PostgreSQL and commit writes inside the window it must cover.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from engine.config import EngineTunables, Settings
from engine.daemon import Daemon
from rules import load_rules_text
from sql import query
from tests.processes import insert_events

HOOK = "http://127.0.0.1:9/hook"


def rule_document(rule_id: str, agent_id: int, **extra: object) -> dict[str, object]:
    return {
        "id": rule_id,
        "on": {"registry": "reputation", "event_type": "NewFeedback"},
        "where": {"agent_id": agent_id},
        "actions": [{"rest": {"url": HOOK}}],
        **extra,
    }


def stored_rows(org_id: int, documents: list[dict[str, object]]) -> list[tuple[object, ...]]:
    """The triggers rows the API writes for ``documents``: hashes from the rules compiler."""
    loaded = load_rules_text(json.dumps({"rules": documents}), "api", environ={})
    assert [str(e) for e in loaded.errors] == []
    return [
        (
            f"{org_id}/{rule.id}",
            org_id,
            rule.id,
            rule.document_json,
            rule.content_hash,
            rule.logic_hash,
        )
        for rule in loaded.rules
    ]


async def put_rules(
    conn: asyncpg.Connection, org_id: int, documents: list[dict[str, object]]
) -> None:
    """Write rules in one transaction, as `PUT /v1/rules/{id}` does one."""
    await conn.executemany(
        "INSERT INTO triggers (id, org_id, rule_id, document, content_hash, logic_hash)"
        " VALUES ($1, $2, $3, $4::jsonb, $5, $6)"
        " ON CONFLICT (id) DO UPDATE SET document = EXCLUDED.document,"
        " content_hash = EXCLUDED.content_hash, logic_hash = EXCLUDED.logic_hash",
        stored_rows(org_id, documents),
    )


def feedback(agent_id: int) -> dict[str, object]:
    return {"registry": "reputation", "event_type": "NewFeedback", "agent_id": agent_id}


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def org(conn: asyncpg.Connection) -> int:
    org_id: int = await conn.fetchval(
        "INSERT INTO organizations (name) VALUES ('acme') RETURNING id"
    )
    return org_id


async def start_daemon(
    tmp_path: Path, database_url: str, redis_url: str, **tunables: float
) -> tuple[Daemon, asyncio.Task[None]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n", encoding="utf-8")
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        rules=(str(rules),),
        http_listen=None,
        engine=EngineTunables(poll_interval_s=0.2, batch_size=50, **tunables),
    )
    daemon = Daemon(settings)
    running = asyncio.create_task(daemon.run())

    async def leading() -> bool:
        return daemon.rulebook.index is not None and daemon.tenants.last_seq is not None

    await wait_for(leading, "the daemon to lead")
    return daemon, running


async def stop_daemon(daemon: Daemon, running: asyncio.Task[None]) -> None:
    daemon.stopping.set()
    await asyncio.wait_for(running, 30)


async def fired_agents(conn: asyncpg.Connection, trigger_id: str) -> list[int]:
    rows = await conn.fetch(
        "SELECT (a.context->'event'->>'agent_id')::int AS agent FROM action_results a"
        " JOIN events e ON e.id = a.event_id WHERE a.trigger_id = $1 ORDER BY e.txid, e.seq",
        trigger_id,
    )
    return [row["agent"] for row in rows]


async def test_a_tenant_rule_fires_with_its_organization_and_stops_when_deleted(
    tmp_path: Path, database_url: str, redis_url: str, conn: asyncpg.Connection, org: int
) -> None:
    await put_rules(conn, org, [rule_document("low-feedback", 7)])
    daemon, running = await start_daemon(tmp_path, database_url, redis_url)
    try:
        await asyncio.to_thread(insert_events, database_url, [feedback(7), feedback(8)])

        async def evaluated(n: int) -> bool:
            return daemon.stats.events >= n

        await wait_for(lambda: evaluated(2), "the events")
        row = await conn.fetchrow(
            "SELECT trigger_id, org_id, status FROM action_results ORDER BY id"
        )
        assert dict(row) == {"trigger_id": f"{org}/low-feedback", "org_id": org, "status": "queued"}
        assert (
            await conn.fetchval(
                "SELECT org_id FROM rule_stats WHERE trigger_id = $1", f"{org}/low-feedback"
            )
            == org
        )

        # Written while running: live for the very next event, no reload needed.
        await put_rules(conn, org, [rule_document("second", 8)])
        await asyncio.to_thread(insert_events, database_url, [feedback(8)])
        await wait_for(lambda: evaluated(3), "the event after the write")
        assert await fired_agents(conn, f"{org}/second") == [8]

        await conn.execute("DELETE FROM triggers WHERE id = $1", f"{org}/second")
        await asyncio.to_thread(insert_events, database_url, [feedback(8), feedback(7)])
        await wait_for(lambda: evaluated(5), "the events after the delete")
        assert await fired_agents(conn, f"{org}/second") == [8]
        assert await fired_agents(conn, f"{org}/low-feedback") == [7, 7]
    finally:
        await stop_daemon(daemon, running)


async def test_a_rule_committed_while_its_changes_compile_is_applied_to_events_after_it(
    tmp_path: Path, database_url: str, redis_url: str, conn: asyncpg.Connection, org: int
) -> None:
    """The boundary.  Many changes take a while to compile (off the evaluation loop; the
    test sees the compile running).  Meanwhile a rule is committed, then an event it
    matches.  That event must be evaluated with the rule: a batch that read it with only
    the changes compiled so far (or below a horizon taken after them) would miss it."""
    # Compiled only when a batch asks (every poll_interval_s), never ahead.
    daemon, running = await start_daemon(
        tmp_path, database_url, redis_url, rules_watch_interval_s=3600.0
    )
    writer = await asyncpg.connect(database_url)
    try:
        many = [rule_document(f"filler-{n}", 1_000_000 + n) for n in range(6000)]
        async with writer.transaction():  # one commit: one compile of them all
            await put_rules(writer, org, many)

        async def compiling() -> bool:
            return daemon.tenants.compiling

        await wait_for(compiling, "the changes to compile")
        # With more changes, so that their compile leaves a batch time to run before it.
        more = [rule_document(f"filler-{n}", 1_000_000 + n) for n in range(6000, 7000)]
        async with writer.transaction():
            await put_rules(writer, org, [rule_document("late", 7), *more])
        await asyncio.to_thread(insert_events, database_url, [feedback(7)])
        assert daemon.tenants.compiling, "the compile ended too soon to show anything"
        assert daemon.stats.events == 0

        async def evaluated() -> bool:
            return daemon.stats.events >= 1

        await wait_for(evaluated, "both events")
        assert await fired_agents(conn, f"{org}/late") == [7]
        assert len(daemon.tenants.ids) == 7001
        assert daemon.stats.restarts == 0
    finally:
        await writer.close()
        await stop_daemon(daemon, running)


async def test_firings_over_the_quota_are_recorded_and_never_enqueued(
    tmp_path: Path, database_url: str, redis_url: str, conn: asyncpg.Connection, org: int
) -> None:
    await conn.execute("UPDATE organizations SET max_firings_per_minute = 3 WHERE id = $1", org)
    await put_rules(conn, org, [rule_document("noisy", 7)])
    daemon, running = await start_daemon(tmp_path, database_url, redis_url)
    try:
        await asyncio.to_thread(insert_events, database_url, [feedback(7)] * 5)

        async def evaluated() -> bool:
            return daemon.stats.events >= 5

        await wait_for(evaluated, "the events")
        rows = await conn.fetch("SELECT id, status FROM action_results ORDER BY id")
        assert [r["status"] for r in rows] == ["queued"] * 3 + ["quota_exceeded"] * 2
        assert daemon.stats.quota_exceeded == 2
        queued = await asyncio.to_thread(daemon.dispatcher.queue_for(org).get_job_ids)
        assert len(queued) == 3  # only the rows within the quota became jobs
    finally:
        await stop_daemon(daemon, running)


async def test_a_thousand_rule_changes_while_events_flow(
    tmp_path: Path, database_url: str, redis_url: str, conn: asyncpg.Connection, org: int
) -> None:
    """Evaluation goes on while many changes land: the longest gap between two batches
    stays small (the 50 ms figure is the bench's; here loosely, on a shared machine)."""
    daemon, running = await start_daemon(
        tmp_path, database_url, redis_url, rules_watch_interval_s=0.05
    )
    gaps: list[float] = []
    try:
        stop = asyncio.Event()

        async def feed() -> None:
            while not stop.is_set():
                await asyncio.to_thread(insert_events, database_url, [feedback(5)])
                await asyncio.sleep(0.01)

        async def watch() -> None:
            last_count, last_at = daemon.stats.batches, time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                if daemon.stats.batches != last_count:
                    now = time.monotonic()
                    gaps.append(now - last_at)
                    last_count, last_at = daemon.stats.batches, now

        feeding = asyncio.create_task(feed())
        watching = asyncio.create_task(watch())
        for start in range(0, 1000, 100):
            docs = [
                rule_document(f"r-{n}", 5 if n == 999 else 2_000_000 + n)
                for n in range(start, start + 100)
            ]
            await put_rules(conn, org, docs)
            await asyncio.sleep(0.05)
        await asyncio.to_thread(insert_events, database_url, [feedback(5)])
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(feeding, watching)

        async def all_in() -> bool:
            return len(daemon.tenants.ids) == 1000

        await wait_for(all_in, "every change applied")
        assert gaps and max(gaps) < 1.0, f"longest gap between batches {max(gaps):.3f}s"
        assert await fired_agents(conn, f"{org}/r-999"), "the last rule written never fired"
    finally:
        await stop_daemon(daemon, running)


async def test_the_batch_applying_a_logic_change_deletes_the_rules_state_again(
    tmp_path: Path, database_url: str, redis_url: str, conn: asyncpg.Connection, org: int
) -> None:
    """A state left behind after the API's reset (a batch stepping the old rule wrote it
    back, here: a write that skips the API's delete) is gone once the change is applied;
    a change of the actions only keeps the state."""
    trigger_id = f"{org}/counting"

    def counting(at_least: int, hook: str = HOOK) -> dict[str, object]:
        return rule_document(
            "counting",
            7,
            per="agent_id",
            when={"count": {"within": "1h", "at_least": at_least}},
            actions=[{"rest": {"url": hook}}],
        )

    async def states() -> int:
        found: int = await conn.fetchval(
            "SELECT count(*) FROM trigger_state WHERE trigger_id = $1", trigger_id
        )
        return found

    await put_rules(conn, org, [counting(5)])
    daemon, running = await start_daemon(tmp_path, database_url, redis_url)
    try:

        async def evaluated(n: int) -> bool:
            return daemon.stats.events >= n

        await asyncio.to_thread(insert_events, database_url, [feedback(7)])
        await wait_for(lambda: evaluated(1), "the first event")
        assert await states() == 1

        await put_rules(conn, org, [counting(5, hook="http://127.0.0.1:9/other")])
        await asyncio.to_thread(insert_events, database_url, [feedback(8)])
        await wait_for(lambda: evaluated(2), "the event after the actions changed")
        assert await states() == 1, "a change of the actions only must keep the state"

        await put_rules(conn, org, [counting(6)])
        await asyncio.to_thread(insert_events, database_url, [feedback(8)])
        await wait_for(lambda: evaluated(3), "the event after the logic changed")
        assert await states() == 0, "the old rule's state outlived the change of its logic"
    finally:
        await stop_daemon(daemon, running)


def _scans(plan: object) -> list[str]:
    """The relations a JSON plan reads by a sequential scan."""
    if isinstance(plan, list):
        return [name for item in plan for name in _scans(item)]
    if not isinstance(plan, dict):
        return []
    found = [plan["Relation Name"]] if plan.get("Node Type") == "Seq Scan" else []
    return found + [name for value in plan.values() for name in _scans(value)]


async def test_each_batchs_probe_of_rule_changes_reads_one_entry_of_the_log(
    conn: asyncpg.Connection,
) -> None:
    """Every batch asks whether a rule change is newer than the last one compiled.  The log
    keeps days of changes; once PostgreSQL plans the prepared probe generically (after five
    runs), a `seq > $1` test read all of it each batch.  Generic plans are forced here."""
    await conn.execute(
        "INSERT INTO trigger_changes (trigger_id, op)"
        " SELECT 'r' || g, 'upsert' FROM generate_series(1, 20000) g"
    )
    await conn.execute("ANALYZE trigger_changes")
    newest: int = await conn.fetchval("SELECT max(seq) FROM trigger_changes")
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    await conn.execute(f"PREPARE probe(bigint) AS {query('tenant_changes_probe')}")

    plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE probe({newest})"))
    assert _scans(plan) == []
    assert (await conn.fetchrow(f"EXECUTE probe({newest})"))["pending"] is False
    assert (await conn.fetchrow(f"EXECUTE probe({newest - 1})"))["pending"] is True

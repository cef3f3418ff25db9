"""Each organization's action jobs go on an RQ queue of its own, whichever way they are
enqueued (after a batch, by the sweep, by a dead letter's replay), written as RQ itself
writes them there; workers find organizations' new queues while they run."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import redis
from rq import Queue

from actions.rq_internals import queue_key
from engine.config import Settings, WorkerTunables
from engine.deadletters import retry_failed
from engine.dispatcher import Dispatcher, sweep_actions
from engine.worker import make_worker
from tests.integration.test_rq_enqueue_script import (  # noqa: F401 (pair: a fixture)
    Pair,
    assert_same,
    pair,
    rq_enqueue,
)
from tests.processes import query_all, query_value, run_engine, write_config

TUNABLES = WorkerTunables()

INSERT_ACTION = """
INSERT INTO action_results (trigger_id, org_id, action_index, action_type, status, spec,
                            context, created_at)
VALUES ($1, $2, 0, 'rest', $3, $4::jsonb, '{}'::jsonb, now() - interval '1 minute')
RETURNING id
"""


def test_organizations_jobs_are_what_enqueue_many_writes_on_their_own_queues(
    pair: Pair,  # noqa: F811
) -> None:
    started = datetime.now(UTC)
    ids = list(range(1, 11))
    org_of = {2: 7, 3: 7, 5: 9, 9: None}
    pair.dispatcher.enqueue(ids, org_of)
    for org_id in (None, 7, 9):
        mine = [a for a in ids if org_of.get(a) == org_id]
        queue = Queue(TUNABLES.queue_of(org_id), connection=pair.reference)
        rq_enqueue(queue, pair.dispatcher.timeout_s, mine)
    keys = assert_same(pair, started)
    assert keys[queue_key(f"{TUNABLES.queue}:org:7").encode()][3] == [b"action-2", b"action-3"]
    assert keys[queue_key(TUNABLES.queue).encode()][3] == [
        f"action-{a}".encode() for a in (1, 4, 6, 7, 8, 9, 10)
    ]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    connections = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert connections is not None
    yield connections
    await connections.close()


def waiting(client: redis.Redis, org_id: int | None) -> list[int]:
    ids = client.lrange(queue_key(TUNABLES.queue_of(org_id)), 0, -1)
    return [int(raw.decode().removeprefix("action-")) for raw in ids]


async def test_the_sweep_and_a_replayed_dead_letter_enqueue_on_the_organization_s_queue(
    database_url: str, redis_url: str, pool: asyncpg.Pool
) -> None:
    org = query_value(database_url, "INSERT INTO organizations (name) VALUES ('a') RETURNING id")
    spec = json.dumps({"url": "http://127.0.0.1:9/"})

    def insert(trigger_id: str, org_id: int | None, status: str) -> int:
        action_id: int = query_value(database_url, INSERT_ACTION, trigger_id, org_id, status, spec)
        return action_id

    operator = insert("file-rule", None, "queued")
    tenant = insert(f"{org}/r", org, "queued")
    dead = insert(f"{org}/r", org, "failed")
    dispatcher = Dispatcher(redis_url, TUNABLES)
    client = redis.Redis.from_url(redis_url)
    try:
        swept = await sweep_actions(dispatcher, pool, grace_s=1.0, batch_size=100, crash_attempts=2)
        assert swept == 2
        assert waiting(client, None) == [operator]
        assert waiting(client, org) == [tenant]

        settings = Settings(database_url=database_url, redis_url=redis_url, rules=())
        assert retry_failed(settings, [dead], all_failed=False) == [dead]
        assert waiting(client, org) == [tenant, dead]
        assert waiting(client, None) == [operator]
        status = query_all(database_url, "SELECT status FROM action_results WHERE id = $1", dead)
        assert status == [("queued",)]
    finally:
        client.close()
        dispatcher.close()


def test_a_running_worker_listens_on_organizations_queues_as_they_appear(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    dispatcher = Dispatcher(redis_url, TUNABLES)
    try:
        worker = make_worker(client, TUNABLES, "fairness-test")
        assert worker.queue_names() == [TUNABLES.queue]
        assert worker.listen_on_new_queues() == []
        dispatcher.enqueue([1, 2], {1: 41, 2: 42})
        Queue("another-application", connection=client).enqueue(print, "not ours")
        assert worker.listen_on_new_queues() == [TUNABLES.queue_of(41), TUNABLES.queue_of(42)]
        assert worker.queue_names() == [
            TUNABLES.queue,
            TUNABLES.queue_of(41),
            TUNABLES.queue_of(42),
        ]
        assert worker.listen_on_new_queues() == []
    finally:
        dispatcher.close()
        client.close()


def test_engine_status_shows_the_organizations_waiting_jobs(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n", encoding="utf-8")
    config = write_config(
        tmp_path, database_url=database_url, redis_url=redis_url, rules=str(rules)
    )
    dispatcher = Dispatcher(redis_url, TUNABLES)
    try:
        dispatcher.enqueue([1, 2, 3, 4], {1: 5, 2: 5, 3: 6})
    finally:
        dispatcher.close()
    status = json.loads(run_engine(config, "status", "--json").stdout)
    assert status["queue"]["depth"] == 1
    assert status["queue"]["organizations"] == [
        {"org_id": 5, "depth": 2},
        {"org_id": 6, "depth": 1},
    ]
    text = run_engine(config, "status").stdout
    assert "organizations' queues: 3 waiting in 2 queue(s)" in text

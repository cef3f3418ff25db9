"""Figure 4: webhooks delivered and recorded per second by W ``engine worker`` processes,
against RQ's no-op job throughput with W SimpleWorker processes, same run.

Workers are started and registered first; the clock starts when the jobs are enqueued
(all at once) and stops when the last one is done, so process start-up is not counted.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import asyncpg
import psycopg
import redis
from rq import Queue, Worker
from rq.registry import FinishedJobRegistry

from devkit.bench.data import EventGenerator
from devkit.bench.evaluation import insert_backlog
from devkit.bench.inserter import LIVE
from devkit.bench.processes import engine_command, scalar, spawned, wait_for
from engine.config import WorkerTunables
from engine.dispatcher import Dispatcher
from engine.evaluator import Evaluator
from rules import RuleIndex

NOOP_QUEUE = "bench-noop"


def workers_up(connection: redis.Redis, queue: Queue, count: int) -> bool:
    return len(Worker.all(connection=connection, queue=queue)) >= count


def noop_rate(redis_url: str, workers: int, jobs: int, logdir: Path) -> float:
    from devkit.bench.noop import noop

    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    queue = Queue(NOOP_QUEUE, connection=connection)
    command = [sys.executable, "-m", "devkit.bench.noop", redis_url, NOOP_QUEUE]
    with spawned([command] * workers, logdir):
        wait_for(lambda: workers_up(connection, queue, workers), "no-op workers")
        prepared = [Queue.prepare_data(noop, result_ttl=600) for _ in range(jobs)]
        registry = FinishedJobRegistry(queue=queue)
        started = time.perf_counter()
        queue.enqueue_many(prepared)
        wait_for(lambda: registry.count >= jobs, "no-op jobs", interval_s=0.01)
        elapsed = time.perf_counter() - started
    connection.close()
    return jobs / elapsed


async def queue_actions(dsn: str, index: RuleIndex, jobs: int) -> list[int]:
    """``jobs`` queued action rows made by the real evaluator (no RQ job yet)."""
    await insert_backlog(dsn, EventGenerator(prefix="T").rows(jobs, **LIVE))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "TRUNCATE action_results, trigger_state, rule_stats; DELETE FROM engine_cursors"
        )
        evaluator = Evaluator("bench-actions", 5000)
        ids: list[int] = []
        while True:
            result = await evaluator.run_batch(conn, index)
            if result.events == 0:
                return ids
            ids += result.action_ids
    finally:
        await conn.close()


def engine_rate(
    dsn: str, redis_url: str, config: Path, workers: int, ids: list[int], logdir: Path
) -> float:
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    tunables = WorkerTunables()
    queue = Queue(tunables.queue, connection=connection)
    dispatcher = Dispatcher(redis_url, tunables)
    pending = "SELECT count(*) FROM action_results WHERE status IN ('queued', 'running')"
    # One connection for the polling: a new one every 10 ms (a PostgreSQL backend forked
    # each time) took CPU from the workers being measured, more so when forks are slow.
    with (
        spawned([engine_command(config, "worker")] * workers, logdir),
        psycopg.connect(dsn, autocommit=True) as poll,
    ):
        wait_for(lambda: workers_up(connection, queue, workers), "engine workers")
        started = time.perf_counter()
        dispatcher.enqueue(ids)
        wait_for(lambda: scalar(poll, pending) == 0, "actions delivered", interval_s=0.01)
        elapsed = time.perf_counter() - started
    dispatcher.close()
    connection.close()
    return len(ids) / elapsed

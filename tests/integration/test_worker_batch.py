"""A worker runs the action jobs waiting behind its RQ job as one concurrent batch
(actions/rq_internals.py: take_waiting_actions): each action still runs exactly once, and a
worker that dies after taking jobs loses none of them (the sweep re-enqueues them)."""

from __future__ import annotations

from pathlib import Path

import redis

from actions.rq_internals import ACTION_JOB_PREFIX, JOB_KEY_PREFIX, queue_key, take_waiting
from engine.config import WorkerTunables
from tests.fakes.webhook import WebhookReceiver
from tests.integration.test_pipeline import feedback, setup_engine
from tests.processes import engine_processes, insert_events, query_value, wait_until

QUEUE_KEY = queue_key(WorkerTunables().queue)


def _queued(database_url: str, n: int) -> bool:
    rows = query_value(database_url, "SELECT count(*) FROM action_results WHERE status = 'queued'")
    return bool(rows == n)


def test_a_backlog_of_jobs_runs_in_batches_each_action_once(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    total = 120
    config = setup_engine(tmp_path, database_url, redis_url, webhook_receiver)
    client = redis.Redis.from_url(redis_url)
    insert_events(database_url, [feedback(agent_id=i, score=10) for i in range(total)])
    with engine_processes(config, tmp_path, ["run"]):
        wait_until(lambda: client.llen(QUEUE_KEY) == total, what="all jobs enqueued")
    with engine_processes(config, tmp_path, ["worker"]):
        webhook_receiver.wait_for(total, timeout=60)
        wait_until(
            lambda: (
                query_value(
                    database_url, "SELECT count(*) FROM action_results WHERE status = 'success'"
                )
                == total
            ),
            what="every row recorded",
        )
    ids = [r.header("webhook-id") for r in webhook_receiver.requests]
    assert len(ids) == total and len(set(ids)) == total
    assert query_value(database_url, "SELECT max(attempts) FROM action_results") == 1
    assert client.llen(QUEUE_KEY) == 0
    assert not list(client.scan_iter(f"{JOB_KEY_PREFIX}{ACTION_JOB_PREFIX}*"))
    client.close()


def test_jobs_taken_by_a_worker_that_died_are_re_enqueued(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    total = 20
    config = setup_engine(tmp_path, database_url, redis_url, webhook_receiver)
    client = redis.Redis.from_url(redis_url)
    insert_events(database_url, [feedback(agent_id=i, score=10) for i in range(total)])
    with engine_processes(config, tmp_path, ["run"]):
        wait_until(lambda: client.llen(QUEUE_KEY) == total, what="all jobs enqueued")
        # A worker takes 8 waiting jobs, then dies before claiming their rows.
        taken = take_waiting(client, WorkerTunables().queue, 8)
        assert len(taken) == 8
        assert _queued(database_url, total)
        with engine_processes(config, tmp_path, ["worker"]):
            webhook_receiver.wait_for(total, timeout=60)
    ids = [r.header("webhook-id") for r in webhook_receiver.requests]
    assert len(ids) == total and len(set(ids)) == total
    client.close()

"""The dispatcher's script (actions.rq_internals) writes exactly what RQ's
``Queue.enqueue_many`` writes.

Each test enqueues the same ids both ways, the dispatcher into database 0 and RQ itself
(the dispatcher's code before the script) into database 1 of the session's real
redis-server, and compares every key of the two databases: type, TTL and content, the
job hashes field by field and in RQ's order, with only ``created_at``/``enqueued_at``
normalised (they must still be RQ timestamps).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import rq
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.utils import utcparse

import engine.dispatcher as dispatcher_module
from actions.job import run_action
from actions.rq_internals import QUEUES_KEY, job_id, job_key, queue_key
from devkit.localstack.common import free_port
from engine.config import WorkerTunables
from engine.dispatcher import Dispatcher

TUNABLES = WorkerTunables()
TIMESTAMP_FIELDS = (b"created_at", b"enqueued_at")
# 1-, 2-, 4- and 8-byte ints in the pickled job data, and a few ordinary ids.
ODD_IDS = [0, 1, 255, 256, 65_535, 65_536, 2**31 - 1, 2**31, 2**40, 2**63, 2**70]


def rq_enqueue(queue: Queue, timeout_s: int, action_ids: Sequence[int]) -> None:
    """The dispatcher's ``enqueue`` before the script, verbatim: the reference."""
    jobs = [
        Queue.prepare_data(
            run_action,
            args=(action_id,),
            job_id=job_id(action_id),
            timeout=timeout_s,
            result_ttl=0,  # the audit table keeps the result; Redis keeps nothing
            failure_ttl=24 * 3600,
            description=f"action {action_id}",
        )
        for action_id in action_ids
    ]
    queue.enqueue_many(jobs)


class Pair:
    """The dispatcher on database 0, RQ's own enqueue_many on database 1."""

    def __init__(self, url0: str, url1: str) -> None:
        self.dispatcher = Dispatcher(url0, TUNABLES)
        self.fast = redis.Redis.from_url(url0)
        self.reference = redis.Redis.from_url(url1)
        self.queue = Queue(TUNABLES.queue, connection=self.reference)

    def enqueue(self, action_ids: Sequence[int]) -> None:
        self.dispatcher.enqueue(action_ids)
        rq_enqueue(self.queue, self.dispatcher.timeout_s, action_ids)

    def both(self) -> tuple[redis.Redis, redis.Redis]:
        return self.fast, self.reference

    def close(self) -> None:
        self.dispatcher.close()
        self.fast.close()
        self.reference.close()


@pytest.fixture
def pair(redis_server, redis_url) -> Iterator[Pair]:  # redis_url: FLUSHALL first
    p = Pair(redis_server.url(0), redis_server.url(1))
    assert p.dispatcher._writes is not None, "the script path is off: nothing would be tested"
    try:
        yield p
    finally:
        p.close()


def normalised_hash(fields: dict[bytes, bytes], started: datetime) -> list[tuple[bytes, bytes]]:
    stamps = [utcparse(fields[name].decode()) for name in TIMESTAMP_FIELDS if name in fields]
    for stamp in stamps:  # an RQ timestamp of this test's run
        assert started - timedelta(seconds=1) <= stamp.replace(tzinfo=UTC) <= datetime.now(UTC)
    assert stamps == sorted(stamps)  # created_at <= enqueued_at
    return [(k, b"<timestamp>" if k in TIMESTAMP_FIELDS else v) for k, v in fields.items()]


def snapshot(client: redis.Redis, started: datetime) -> dict[bytes, tuple[Any, ...]]:
    """Every key: type, TTL, encoding and content (hash fields in their stored order)."""
    out: dict[bytes, tuple[Any, ...]] = {}
    for key in sorted(client.keys("*")):
        kind = client.type(key)
        value: Any
        if kind == b"hash":
            value = normalised_hash(client.hgetall(key), started)
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"set":
            value = sorted(client.smembers(key))
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = client.dump(key)
        out[key] = (kind, client.ttl(key), client.object("encoding", key), value)
    return out


def assert_same(pair: Pair, started: datetime) -> dict[bytes, tuple[Any, ...]]:
    fast = snapshot(pair.fast, started)
    reference = snapshot(pair.reference, started)
    assert fast.keys() == reference.keys()
    for key in reference:
        assert fast[key] == reference[key], key
    return fast


def test_same_keys_fields_and_queue_as_enqueue_many(pair: Pair, monkeypatch) -> None:
    monkeypatch.setattr(dispatcher_module, "CHUNK", 7)  # several chunks, a partial last one
    ids = ODD_IDS + list(range(1000, 1040))
    random.Random(5).shuffle(ids)
    started = datetime.now(UTC)
    pair.enqueue(ids)
    keys = assert_same(pair, started)
    the_queue = queue_key(TUNABLES.queue).encode()
    expected = {QUEUES_KEY.encode(), the_queue} | {job_key(a).encode() for a in ids}
    assert keys.keys() == expected  # no registry, nothing else
    assert keys[the_queue][3] == [job_id(a).encode() for a in ids]  # in the given order
    assert keys[QUEUES_KEY.encode()][3] == [the_queue]


def test_a_large_batch_with_the_real_chunk_size(pair: Pair) -> None:
    ids = list(range(5000, 5000 + 2 * dispatcher_module.CHUNK + 123))
    started = datetime.now(UTC)
    pair.enqueue(ids)
    assert_same(pair, started)
    assert pair.dispatcher.enqueued == len(ids)


def test_enqueuing_again_over_old_jobs(pair: Pair) -> None:
    """The sweep re-enqueues jobs whose hash is left from a run: HSET keeps other fields."""
    started = datetime.now(UTC)
    pair.enqueue([1, 2, 3])
    for client in pair.both():
        client.hset(
            job_key(1),
            mapping={"status": "failed", "worker_name": "w1", "exc_info": "x", "started_at": "t"},
        )
        client.hset(job_key(2), mapping={"status": "started", "meta": "m"})
        client.expire(job_key(2), 300)
        client.delete(queue_key(TUNABLES.queue))
    pair.enqueue([2, 1, 4])
    assert_same(pair, started)


def test_a_failing_write_fails_like_the_transaction(pair: Pair) -> None:
    """MULTI/EXEC runs the other commands and raises the first error: so does the script."""
    for client in pair.both():
        client.set(job_key(3), "not a hash")
    started = datetime.now(UTC)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        pair.dispatcher.enqueue([1, 2, 3, 4])
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        rq_enqueue(pair.queue, pair.dispatcher.timeout_s, [1, 2, 3, 4])
    assert_same(pair, started)
    assert pair.dispatcher.enqueued == 0


def test_rq_reads_the_jobs_as_its_own(pair: Pair) -> None:
    """What a worker, ``rq info`` and the registries see of a job the script wrote."""
    ids = [11, 2**40, 13]
    pair.dispatcher.enqueue(ids)
    queue = Queue(TUNABLES.queue, connection=pair.fast)
    assert [q.name for q in Queue.all(connection=pair.fast)] == [TUNABLES.queue]
    assert queue.count == 3
    assert queue.get_job_ids() == [job_id(a) for a in ids]
    for action_id in ids:
        job = Job.fetch(job_id(action_id), connection=pair.fast)
        assert job.func_name == "actions.job.run_action"
        assert job.func is run_action
        assert (job.args, job.kwargs, job.instance) == ((action_id,), {}, None)
        assert job.get_status() == JobStatus.QUEUED
        assert (job.timeout, job.result_ttl, job.failure_ttl, job.ttl) == (120, 0, 86400, None)
        assert job.description == f"action {action_id}"
        assert job.origin == TUNABLES.queue
        assert job.created_at is not None and job.enqueued_at is not None
        assert job.dependency_ids == [] and job.meta == {}
        assert job.get_position() == ids.index(action_id)
    for registry in (
        StartedJobRegistry,
        FinishedJobRegistry,
        FailedJobRegistry,
        DeferredJobRegistry,
        ScheduledJobRegistry,
    ):
        assert registry(queue=queue).count == 0
    assert pair.dispatcher.not_pending(ids) == []
    pair.fast.delete(job_key(13))
    assert pair.dispatcher.not_pending([*ids, 99]) == [13, 99]


def test_a_repeated_id_is_refused_as_by_enqueue_many(pair: Pair) -> None:
    with pytest.raises(ValueError, match="appears more than once"):
        pair.dispatcher.enqueue([1, 2, 1])
    with pytest.raises(ValueError, match="appears more than once"):
        rq_enqueue(pair.queue, pair.dispatcher.timeout_s, [1, 2, 1])
    assert pair.fast.keys("*") == [] == pair.reference.keys("*")


def test_nothing_to_enqueue_writes_nothing(pair: Pair) -> None:
    pair.dispatcher.enqueue([])
    assert pair.fast.keys("*") == []


def test_redis_errors_are_raised() -> None:
    dispatcher = Dispatcher(f"redis://127.0.0.1:{free_port()}/0", TUNABLES)
    try:
        assert dispatcher._writes is not None  # learning the writes needs no server
        with pytest.raises(redis.ConnectionError):
            dispatcher.enqueue([1, 2])
    finally:
        dispatcher.close()


def test_the_script_is_loaded_again_after_a_script_flush(pair: Pair) -> None:
    started = datetime.now(UTC)
    pair.dispatcher.enqueue([1])
    pair.fast.script_flush()
    pair.dispatcher.enqueue([2])
    rq_enqueue(pair.queue, pair.dispatcher.timeout_s, [1])
    rq_enqueue(pair.queue, pair.dispatcher.timeout_s, [2])
    assert_same(pair, started)


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "engine.dispatcher" and r.levelno == logging.WARNING
    ]


@pytest.fixture
def unwarned(monkeypatch, caplog) -> pytest.LogCaptureFixture:
    monkeypatch.setattr(dispatcher_module, "_warned", False)
    caplog.set_level(logging.WARNING, logger="engine.dispatcher")
    return caplog


def test_another_rq_release_falls_back_to_enqueue_many(
    redis_server, redis_url, monkeypatch, unwarned
) -> None:
    monkeypatch.setattr(rq, "__version__", "3.1.0")
    p = Pair(redis_server.url(0), redis_server.url(1))
    try:
        assert p.dispatcher._writes is None
        Dispatcher(redis_url, TUNABLES).close()  # a second one says nothing more
        (record,) = fallback_warnings(unwarned)
        assert "3.1.0" in record.reason  # type: ignore[attr-defined]
        started = datetime.now(UTC)
        p.enqueue([1, 2, 2**40])
        assert_same(p, started)
        assert p.dispatcher.enqueued == 3
    finally:
        p.close()


def test_rq_writing_something_else_falls_back(
    redis_server, redis_url, monkeypatch, unwarned
) -> None:
    """Same release, but a job's hash gains a per-job field the script does not know."""
    to_dict = Job.to_dict

    def with_extra_field(self: Job, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**to_dict(self, *args, **kwargs), "extra": self.id}

    monkeypatch.setattr(Job, "to_dict", with_extra_field)
    p = Pair(redis_server.url(0), redis_server.url(1))
    try:
        assert p.dispatcher._writes is None
        (record,) = fallback_warnings(unwarned)
        assert "constant fields" in record.reason  # type: ignore[attr-defined]
        started = datetime.now(UTC)
        p.enqueue([1, 2])
        assert_same(p, started)
        assert p.fast.hget(job_key(2), "extra") == job_id(2).encode()
    finally:
        p.close()


def test_rq_writing_an_extra_command_falls_back(
    redis_server, redis_url, monkeypatch, unwarned
) -> None:
    """Same release, but enqueuing touches one more key (a registry, say)."""
    push_job_id = Queue.push_job_id

    def and_a_registry(self: Queue, job_id: str, pipeline: Any = None, at_front: bool = False):
        (pipeline or self.connection).zadd("rq:some-registry", {job_id: 1})
        return push_job_id(self, job_id, pipeline=pipeline, at_front=at_front)

    monkeypatch.setattr(Queue, "push_job_id", and_a_registry)
    p = Pair(redis_server.url(0), redis_server.url(1))
    try:
        assert p.dispatcher._writes is None
        assert len(fallback_warnings(unwarned)) == 1
        started = datetime.now(UTC)
        p.enqueue([1, 2])
        assert_same(p, started)
    finally:
        p.close()


def test_rq_moving_its_job_keys_falls_back(redis_server, redis_url, monkeypatch, unwarned) -> None:
    """Same release, but job hashes under another prefix: ``not_pending`` would look in
    the wrong place, so the layout is refused as a whole."""
    monkeypatch.setattr(Job, "redis_job_namespace_prefix", "rq:j:")
    p = Pair(redis_server.url(0), redis_server.url(1))
    try:
        assert p.dispatcher._writes is None
        (record,) = fallback_warnings(unwarned)
        assert "job key" in record.reason  # type: ignore[attr-defined]
    finally:
        p.close()

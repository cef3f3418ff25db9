"""The dispatcher: after a batch commits, one RQ job per queued action row.

The row exists before the job (guarantee 3), and the job id is derived from the row id,
so enqueuing twice is harmless: the job claims its row atomically and a job whose row
is already claimed does nothing.  The sweep re-enqueues what a crash, a Redis outage or
an expired worker lease left behind, and retries whose time has come.

Why the jobs are not written by ``Queue.enqueue_many``
------------------------------------------------------
``enqueue_many`` cost ~100 µs of CPU a job on the evaluation thread, the largest cost of
a firing.  Its own profile (RQ 3.0.0, redis-py 8.1, 1,000 jobs): ~60% is redis-py's
pure-Python command packer (three commands a job, one of them an HSET of 16 fields, ~45
arguments a job, each through ``Encoder.encode``), ~30% is building ``Job`` objects
(``typing.Protocol`` isinstance checks in ``resolve_serializer``, ``parse_timeout``,
``to_dict``), the rest reading 3,000 replies.  Using RQ's API differently cannot get
under the packer's cost (~60 µs a job even with the jobs built in advance), so the
same writes are made by one Lua script per chunk of jobs, which gets ~3 arguments a job.

What the script writes is what ``enqueue_many`` writes for these jobs (a job without
dependencies, ``ttl`` None, not at front, on an async queue), in the same order:
``SADD rq:queues <queue key>``, then for each job ``HSET <job key> status queued``,
``HSET <job key> <to_dict() fields>`` and ``RPUSH <queue key> <job id>``.  It touches no
registry (``enqueue_many`` touches none for such jobs).  Like MULTI/EXEC, the script is
atomic and a failing command does not stop the others; the first error is raised.  Only
timestamps differ: ``created_at`` and ``enqueued_at`` are taken once a chunk, not once a
job.

That is not assumed: a ``Dispatcher`` learns the writes from RQ itself.  It runs
``enqueue_many`` for sample ids into a pipeline that is never executed, checks that the
recorded commands have exactly the shape above, that two jobs differ only in
``created_at``, ``enqueued_at``, ``description`` and ``data``, and that it computes those
exactly as RQ did; the constant fields are then RQ's own recorded values.  If the
installed RQ is not the verified major.minor (``VERIFIED_RQ``), or any check fails, it
logs one warning and uses ``enqueue_many``.  tests/unit/engine/test_dispatcher_fast.py
enqueues the same ids both ways into two Redis databases and compares every key.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import rq
from rq import Queue
from rq.utils import now, utcformat

from actions.job import job_id, run_action
from engine.config import WorkerTunables

log = logging.getLogger(__name__)

# RQ job states in which the job will still run: the sweep leaves those alone.
# Not "started": the sweep only asks about rows nobody has claimed (queued/retrying),
# and a started job claims its row first thing.  A job left "started" with its row
# unclaimed lost its worker (or Redis) between dequeue and claim, and RQ would keep it
# "started" until its registry cleanup, minutes later: the row would wait that long.
# Enqueuing again is harmless: of two jobs for one row, one claims it, the other skips.
_PENDING_JOB_STATES = {b"queued", b"deferred", b"scheduled"}

#: The RQ release (major, minor) whose ``enqueue_many`` writes were verified (RQ 3.0.0).
VERIFIED_RQ = (3, 0)
#: Jobs per script call: bounds how long one call holds Redis (~6 ms for 1,000 jobs, less
#: than the EXEC of enqueue_many's transaction for as many, ~7 ms).
CHUNK = 1000
#: Action ids for learning the writes: 1-, 4- and 8-byte ids in the pickled job data.
_SAMPLE_IDS = (1, 70_000, 2**40)
_PER_JOB_FIELDS = (b"created_at", b"enqueued_at", b"description", b"data")

# KEYS: rq:queues, the queue list, then the job hashes.  ARGV: [1] length of the job key
# prefix, [2] [3] the status field and value, [4] n, [5] [6] the positions of the
# description and data values in the template, [7 .. 6+n] the template (field, value,
# ...), then the description and data of each job, in KEYS order.
_ENQUEUE_LUA = """
local first_error = nil
local function call(...)
    local reply = redis.pcall(...)
    if type(reply) == 'table' and reply.err ~= nil and first_error == nil then
        first_error = reply.err
    end
end
local prefix_len = tonumber(ARGV[1])
local status_field, status = ARGV[2], ARGV[3]
local n = tonumber(ARGV[4])
local description_at, data_at = tonumber(ARGV[5]), tonumber(ARGV[6])
local fields = {}
for i = 1, n do fields[i] = ARGV[6 + i] end
call('SADD', KEYS[1], KEYS[2])
local a = 7 + n
for k = 3, #KEYS do
    local key = KEYS[k]
    fields[description_at] = ARGV[a]
    fields[data_at] = ARGV[a + 1]
    a = a + 2
    call('HSET', key, status_field, status)
    call('HSET', key, unpack(fields))
    call('RPUSH', KEYS[2], string.sub(key, prefix_len + 1))
end
if first_error ~= nil then return redis.error_reply(first_error) end
return #KEYS - 2
"""


def _description(action_id: int) -> str:
    return f"action {action_id}"


def _job_data(action_id: int, timeout_s: int) -> Any:
    """The ``enqueue_many`` entry of one action (the fallback, and what is learnt from)."""
    return Queue.prepare_data(
        run_action,
        args=(action_id,),
        job_id=job_id(action_id),
        timeout=timeout_s,
        result_ttl=0,  # the audit table keeps the result; Redis keeps nothing
        failure_ttl=24 * 3600,
        description=_description(action_id),
    )


class _Unverified(Exception):
    """The installed RQ does not write what the script writes."""


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise _Unverified(what)


@dataclass(frozen=True)
class _Writes:
    """What ``enqueue_many`` writes for an action job, as recorded from RQ."""

    queues_key: str  # rq:queues
    queue_key: str
    key_prefix: str  # of a job hash, before the job id
    status_field: bytes
    status: bytes
    template: tuple[bytes, ...]  # the to_dict() HSET: field, value, ... in RQ's order
    created_at: int  # indexes of the per-job values in the template
    enqueued_at: int
    description: int
    data: int
    func_name: str
    dumps: Any  # the queue's serializer

    def job_data(self, action_id: int) -> bytes:
        """The ``data`` field: as ``Job.to_dict`` makes it for ``run_action(action_id)``."""
        return zlib.compress(self.dumps((self.func_name, None, (action_id,), {})))


def _learn_writes(queue: Queue, timeout_s: int) -> _Writes:
    """Record what ``enqueue_many`` sends for sample jobs (nothing is sent) and check it."""
    version = tuple(int(part) for part in str(rq.__version__).split(".")[:2])
    _expect(version == VERIFIED_RQ, f"rq {rq.__version__} is not the verified {VERIFIED_RQ}")
    probe = Queue(queue.name, connection=queue.connection, serializer=queue.serializer)
    probe.redis_server_version = (7, 0, 0)  # it would ask the server; only the job keeps it
    pipe = queue.connection.pipeline()
    try:
        jobs = probe.enqueue_many([_job_data(a, timeout_s) for a in _SAMPLE_IDS], pipeline=pipe)
        encode: Callable[[Any], bytes] = queue.connection.get_encoder().encode
        recorded = [tuple(encode(arg) for arg in args) for args, _ in pipe.command_stack]
    finally:
        pipe.reset()
    queues_key, queue_key = str(Queue.redis_queues_keys), str(queue.key)
    _expect(len(recorded) == 1 + 3 * len(_SAMPLE_IDS), f"{len(recorded)} commands")
    _expect(recorded[0] == (b"SADD", queues_key.encode(), queue_key.encode()), "SADD")
    hashes = []
    for n, action_id in enumerate(_SAMPLE_IDS):
        status_cmd, hset, rpush = recorded[1 + 3 * n : 4 + 3 * n]
        jid = job_id(action_id).encode()
        _expect(rpush == (b"RPUSH", queue_key.encode(), jid), "RPUSH")
        key = status_cmd[1]
        _expect(key.endswith(jid) and hset[:2] == (b"HSET", key), "job key")
        _expect(status_cmd[0] == b"HSET" and len(status_cmd) == 4, "status HSET")
        fields = dict(zip(hset[2::2], hset[3::2], strict=True))
        _expect(len(fields) * 2 == len(hset) - 2, "duplicate fields")
        _expect(fields[status_cmd[2]] == status_cmd[3], "status value")
        created, enqueued = jobs[n].created_at, jobs[n].enqueued_at
        if created is None or enqueued is None:
            raise _Unverified("timestamps")
        expected = {
            b"created_at": utcformat(created).encode(),
            b"enqueued_at": utcformat(enqueued).encode(),
            b"description": _description(action_id).encode(),
        }
        for name, value in expected.items():
            _expect(fields.get(name) == value, name.decode())
        hashes.append((key[: -len(jid)], status_cmd[2:], hset[2:]))
    prefix, status, template = hashes[0]
    names = template[::2]
    _expect(all(name in names for name in _PER_JOB_FIELDS), "per-job fields")
    at = {name: 2 * names.index(name) + 1 for name in _PER_JOB_FIELDS}  # of the value
    writes = _Writes(
        queues_key=queues_key,
        queue_key=queue_key,
        key_prefix=prefix.decode(),
        status_field=status[0],
        status=status[1],
        template=template,
        created_at=at[b"created_at"],
        enqueued_at=at[b"enqueued_at"],
        description=at[b"description"],
        data=at[b"data"],
        func_name=str(jobs[0].func_name),
        dumps=queue.serializer.dumps,
    )
    per_job = set(at.values())
    for action_id, (other_prefix, other_status, other) in zip(_SAMPLE_IDS, hashes, strict=True):
        _expect((other_prefix, other_status) == (prefix, status), "job key prefix or status")
        _expect(other[::2] == names, "field names or order")
        _expect(other[writes.data] == writes.job_data(action_id), "data")
        constant = [i for i in range(1, len(other), 2) if i not in per_job]
        _expect(all(other[i] == template[i] for i in constant), "constant fields")
    return writes


class Dispatcher:
    """Enqueues action jobs into RQ (synchronous: call it from a thread in async code)."""

    def __init__(self, redis_url: str, tunables: WorkerTunables) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.queue = Queue(tunables.queue, connection=self.redis)
        self.timeout_s = int(tunables.job_timeout_s)
        self.enqueued = 0
        self.failures = 0
        self._writes: _Writes | None = None
        try:
            self._writes = _learn_writes(self.queue, self.timeout_s)
        except Exception as exc:  # any surprise: RQ's own path is always right
            _warn_fallback(exc)
        self._script = self.redis.register_script(_ENQUEUE_LUA)

    def enqueue(self, action_ids: Sequence[int]) -> None:
        """One job per row; raises redis errors (the rows stay 'queued' for the sweep)."""
        if not action_ids:
            return
        # enqueue_many refuses a repeated id (ValueError): let it say so.
        if self._writes is None or len(set(action_ids)) != len(action_ids):
            self.queue.enqueue_many([_job_data(a, self.timeout_s) for a in action_ids])
            self.enqueued += len(action_ids)
            return
        for start in range(0, len(action_ids), CHUNK):
            chunk = action_ids[start : start + CHUNK]
            self._enqueue_chunk(self._writes, chunk)
            self.enqueued += len(chunk)

    def _enqueue_chunk(self, w: _Writes, action_ids: Sequence[int]) -> None:
        """``enqueue_many`` of these jobs, as one script call (see the module docstring)."""
        template: list[bytes | str] = list(w.template)
        template[w.created_at] = utcformat(now())
        keys = [w.queues_key, w.queue_key]
        per_job: list[bytes | str] = []
        for action_id in action_ids:
            keys.append(w.key_prefix + job_id(action_id))
            per_job.append(_description(action_id))
            per_job.append(w.job_data(action_id))
        template[w.enqueued_at] = utcformat(now())
        at = (w.description + 1, w.data + 1)  # Lua counts from 1
        head: list[bytes | str | int] = [
            len(w.key_prefix.encode()),
            w.status_field,
            w.status,
            len(template),
            *at,
        ]
        self._script(keys=keys, args=[*head, *template, *per_job])

    def not_pending(self, action_ids: Sequence[int]) -> list[int]:
        """The ids whose job is not waiting or running in RQ (lost, finished or failed)."""
        if not action_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for action_id in action_ids:
            pipe.hget(f"rq:job:{job_id(action_id)}", "status")
        states = pipe.execute()
        return [a for a, s in zip(action_ids, states, strict=True) if s not in _PENDING_JOB_STATES]

    def close(self) -> None:
        self.redis.close()


_warned = False


def _warn_fallback(exc: Exception) -> None:
    """Once a process: the fast path is off, jobs go through ``enqueue_many``."""
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "rq enqueue fast path disabled: using Queue.enqueue_many (slower)",
            extra={"reason": f"{type(exc).__name__}: {exc}", "rq": rq.__version__},
        )

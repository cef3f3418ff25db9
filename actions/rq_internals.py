"""Everything that depends on RQ's Redis key layout or internals, and nothing else.

Four places go under RQ's public API: the dispatcher writes action jobs with one Lua
script per chunk (``ENQUEUE_LUA``), the sweep reads job statuses straight from the job
hashes (``not_pending``), a worker pops the action jobs waiting behind its own, from the
same queue (``take_waiting_actions``), and a running worker is given organizations'
new queues (``listen_on``).  They rely on RQ's key names, its job hash fields and the
order ``Queue.enqueue_many`` writes them in, all verified against the RQ release
``VERIFIED_RQ`` (pyproject pins ``rq`` to it).  Tests use these constants and functions
rather than spelling ``rq:job:`` themselves.

Why the dispatcher does not call ``Queue.enqueue_many``: its CPU cost per job, on the
evaluation thread, is mostly redis-py packing about 45 arguments a job; the script
makes the same writes with about 3 arguments a job.  What the script writes is what
``enqueue_many`` writes for these jobs (no dependencies, ``ttl`` None, not at front, on
an async queue), in the same order: ``SADD rq:queues <queue key>``, then per job ``HSET
<job key> status queued``, ``HSET <job key> <to_dict() fields>`` and ``RPUSH <queue key>
<job id>``; no registry.  Like MULTI/EXEC, the script is atomic and a failing command
does not stop the others; the first error is raised.  Only ``created_at`` and
``enqueued_at`` are taken once a chunk instead of once a job.

That is not assumed: ``learn_writes`` records what ``enqueue_many`` sends for sample
jobs into a pipeline that is never executed, checks that the commands have exactly that
shape and that two jobs differ only in the per-job fields, which it computes exactly as
RQ did; the constant fields are then RQ's own recorded values.  Any other RQ release, or
any failed check, raises ``UnverifiedRQError`` and the dispatcher uses ``enqueue_many``.

This module must never hold policy (what to enqueue, when to sweep): only RQ's layout.
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
from rq.job import Job
from rq.utils import now, utcformat
from rq.worker import BaseWorker

log = logging.getLogger(__name__)

#: The RQ release (major, minor) whose key layout and ``enqueue_many`` writes were verified.
VERIFIED_RQ = (3, 0)

#: The RQ job id of an action is this prefix and its action_results id.
ACTION_JOB_PREFIX = "action-"
#: RQ's key names, from RQ itself.
QUEUES_KEY = str(Queue.redis_queues_keys)
QUEUE_KEY_PREFIX = str(Queue.redis_queue_namespace_prefix)
JOB_KEY_PREFIX = str(Job.redis_job_namespace_prefix)

# RQ job states in which the job will still run: the sweep leaves those alone.
# Not "started": the sweep only asks about rows nobody has claimed (queued/retrying),
# and a started job claims its row first thing.  A job left "started" with its row
# unclaimed lost its worker (or Redis) between dequeue and claim, and RQ would keep it
# "started" until its registry cleanup, minutes later: the row would wait that long.
# Enqueuing again is harmless: of two jobs for one row, one claims it, the other skips.
PENDING_JOB_STATES = frozenset({b"queued", b"deferred", b"scheduled"})


def job_id(action_id: int) -> str:
    """The RQ job id of action ``action_id`` (stable: enqueuing twice is harmless)."""
    return f"{ACTION_JOB_PREFIX}{action_id}"


def job_description(action_id: int) -> str:
    """The description RQ shows for the job of action ``action_id``."""
    return f"action {action_id}"


def job_key(action_id: int) -> str:
    """The Redis hash RQ keeps the job of action ``action_id`` in."""
    return JOB_KEY_PREFIX + job_id(action_id)


def queue_key(queue_name: str) -> str:
    """The Redis list RQ keeps the waiting job ids of queue ``queue_name`` in."""
    return QUEUE_KEY_PREFIX + queue_name


def rq_release() -> tuple[int, ...]:
    """The installed RQ's (major, minor)."""
    return tuple(int(part) for part in str(rq.__version__).split(".")[:2])


def not_pending(client: redis.Redis, action_ids: Sequence[int]) -> list[int]:
    """The ids whose job is not waiting or running in RQ (lost, finished or failed)."""
    if not action_ids:
        return []
    pipe = client.pipeline(transaction=False)
    for action_id in action_ids:
        pipe.hget(job_key(action_id), "status")
    states = pipe.execute()
    return [a for a, s in zip(action_ids, states, strict=True) if s not in PENDING_JOB_STATES]


def listen_on(worker: BaseWorker, queues: Sequence[Queue]) -> None:
    """Have a running ``worker`` take jobs from ``queues`` too, last in its current turn.

    RQ fixes a worker's queues when it is made; its dequeue reads ``_ordered_queues``
    (which the round-robin strategy rotates) and its maintenance ``queues``."""
    worker.queues.extend(queues)
    worker._ordered_queues.extend(queues)


# Atomically pop up to ARGV[1] waiting action jobs from the queue list KEYS[1] and delete
# their job hashes.  RQ's per-job bookkeeping (about 20 Redis commands) is paid once per
# batch instead of once per action.  Crash-safe with the sweep: a row whose job hash is
# gone counts as lost (``not_pending``) and is re-enqueued, and a claimed row is
# re-enqueued when its lease expires; the claim keeps every action to one execution.
TAKE_WAITING_LUA = """
local taken = {}
for i = 1, tonumber(ARGV[1]) do
    local id = redis.call('LPOP', KEYS[1])
    if not id then break end
    if string.sub(id, 1, string.len(ARGV[2])) ~= ARGV[2] then
        redis.call('LPUSH', KEYS[1], id)
        break
    end
    redis.call('DEL', ARGV[3] .. id)
    taken[#taken + 1] = id
end
return taken
"""


def take_waiting(client: redis.Redis, queue_name: str, limit: int) -> list[int]:
    """Pop up to ``limit`` action jobs from the head of ``queue_name``; their action ids."""
    taken = client.eval(
        TAKE_WAITING_LUA, 1, queue_key(queue_name), limit, ACTION_JOB_PREFIX, JOB_KEY_PREFIX
    )
    ids = []
    for raw in taken:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        ids.append(int(text.removeprefix(ACTION_JOB_PREFIX)))
    return ids


def take_waiting_actions(limit: int) -> list[int]:
    """Ids of up to ``limit`` action jobs waiting behind the current RQ job (none outside
    a worker, or when Redis fails: they then run as their own jobs)."""
    from rq import get_current_job

    job = get_current_job()
    if limit <= 0 or job is None or not job.id.startswith(ACTION_JOB_PREFIX):
        return []
    try:
        return take_waiting(job.connection, job.origin, limit)
    except Exception as exc:  # redis errors: run just this job
        log.warning("could not take waiting actions", extra={"error": repr(exc)})
        return []


# KEYS: rq:queues, the queue list, then the job hashes.  ARGV: [1] length of the job key
# prefix, [2] [3] the status field and value, [4] n, [5] [6] the positions of the
# description and data values in the template, [7 .. 6+n] the template (field, value,
# ...), then the description and data of each job, in KEYS order.
ENQUEUE_LUA = """
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

#: Action ids for learning the writes: 1-, 4- and 8-byte ids in the pickled job data.
_SAMPLE_IDS = (1, 70_000, 2**40)
_PER_JOB_FIELDS = (b"created_at", b"enqueued_at", b"description", b"data")


class UnverifiedRQError(Exception):
    """The installed RQ does not write what ``ENQUEUE_LUA`` writes."""


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise UnverifiedRQError(what)


@dataclass(frozen=True)
class LearnedWrites:
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

    def script_call(self, action_ids: Sequence[int]) -> tuple[list[str], list[bytes | str | int]]:
        """The keys and arguments of the ``ENQUEUE_LUA`` call that enqueues these jobs."""
        template: list[bytes | str] = list(self.template)
        template[self.created_at] = utcformat(now())
        keys = [self.queues_key, self.queue_key]
        per_job: list[bytes | str] = []
        for action_id in action_ids:
            keys.append(self.key_prefix + job_id(action_id))
            per_job.append(job_description(action_id))
            per_job.append(self.job_data(action_id))
        template[self.enqueued_at] = utcformat(now())
        at = (self.description + 1, self.data + 1)  # Lua counts from 1
        head: list[bytes | str | int] = [
            len(self.key_prefix.encode()),
            self.status_field,
            self.status,
            len(template),
            *at,
        ]
        return keys, [*head, *template, *per_job]


def learn_writes(queue: Queue, prepare_job: Callable[[int], Any]) -> LearnedWrites:
    """Record what ``enqueue_many`` sends for sample jobs (nothing is sent) and check it.

    ``prepare_job(action_id)`` is the ``Queue.prepare_data`` entry the dispatcher would
    give ``enqueue_many``.  Raises ``UnverifiedRQError`` when anything differs.
    """
    _expect(rq_release() == VERIFIED_RQ, f"rq {rq.__version__} is not the verified {VERIFIED_RQ}")
    probe = Queue(queue.name, connection=queue.connection, serializer=queue.serializer)
    probe.redis_server_version = (7, 0, 0)  # it would ask the server; only the job keeps it
    pipe = queue.connection.pipeline()
    try:
        jobs = probe.enqueue_many([prepare_job(a) for a in _SAMPLE_IDS], pipeline=pipe)
        encode: Callable[[Any], bytes] = queue.connection.get_encoder().encode
        recorded = [tuple(encode(arg) for arg in args) for args, _ in pipe.command_stack]
    finally:
        pipe.reset()
    queues_key, the_queue_key = QUEUES_KEY, str(queue.key)
    _expect(len(recorded) == 1 + 3 * len(_SAMPLE_IDS), f"{len(recorded)} commands")
    _expect(recorded[0] == (b"SADD", queues_key.encode(), the_queue_key.encode()), "SADD")
    hashes = []
    for n, action_id in enumerate(_SAMPLE_IDS):
        status_cmd, hset, rpush = recorded[1 + 3 * n : 4 + 3 * n]
        jid = job_id(action_id).encode()
        _expect(rpush == (b"RPUSH", the_queue_key.encode(), jid), "RPUSH")
        key = status_cmd[1]
        _expect(key == job_key(action_id).encode() and hset[:2] == (b"HSET", key), "job key")
        _expect(status_cmd[0] == b"HSET" and len(status_cmd) == 4, "status HSET")
        fields = dict(zip(hset[2::2], hset[3::2], strict=True))
        _expect(len(fields) * 2 == len(hset) - 2, "duplicate fields")
        _expect(fields[status_cmd[2]] == status_cmd[3], "status value")
        created, enqueued = jobs[n].created_at, jobs[n].enqueued_at
        if created is None or enqueued is None:
            raise UnverifiedRQError("timestamps")
        expected = {
            b"created_at": utcformat(created).encode(),
            b"enqueued_at": utcformat(enqueued).encode(),
            b"description": job_description(action_id).encode(),
        }
        for name, value in expected.items():
            _expect(fields.get(name) == value, name.decode())
        hashes.append((key[: -len(jid)], status_cmd[2:], hset[2:]))
    prefix, status, template = hashes[0]
    names = template[::2]
    _expect(all(name in names for name in _PER_JOB_FIELDS), "per-job fields")
    at = {name: 2 * names.index(name) + 1 for name in _PER_JOB_FIELDS}  # of the value
    writes = LearnedWrites(
        queues_key=queues_key,
        queue_key=the_queue_key,
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

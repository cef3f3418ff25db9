"""The fairness figure: organization B's single firings, delivered to the local receiver,
while organization A's flood of firings drains through the same workers; the baseline is
B's firings with no flood.

The flood is one COPY of events that all fire A's ``flood`` rule (A's quota admits it
all: what is measured is the queue, not the quota).  B's probes are single events, one
every ``interval_s`` from the flood's commit on, each timed from its commit to the
receiver reading its POST.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TextIO

import redis
from rq import Queue

from devkit.bench.processes import Receiver, wait_for
from devkit.bench.report import Figure, percentile, print_figure
from devkit.bench.tenant_setup import EventWriter
from devkit.bench.throughput import workers_up
from engine.config import WorkerTunables

FLOOD_RULE = "flood"
FLOOD_TAG = "bench-flood"
PROBE_RULE = "fair"
PROBE_TAG = "bench-fair"
#: How long a probe or the flood may take to arrive before the bench gives up.
DELIVERY_TIMEOUT_S = 180.0


@dataclass
class FairnessRun:
    redis_url: str
    writer: EventWriter
    receiver: Receiver
    workers: int
    flood: int
    probes: int
    interval_s: float


@dataclass
class _Probed:
    latencies_ms: list[float]
    during_flood: int  # probes committed before the flood's last delivery
    flood_s: float  # from the flood's commit to its last delivery


async def _probe(run: FairnessRun, *, flood: int) -> _Probed:
    """Write the flood (if any) and the probes; wait until all of it arrived."""
    run.receiver.take()
    flood_ids: set[str] = set()
    flood_committed = time.time()
    if flood:
        flood_ids, flood_committed = await run.writer.copy(FLOOD_TAG, flood)
    committed: dict[str, float] = {}
    for i in range(run.probes):
        due = flood_committed + i * run.interval_s
        await asyncio.sleep(max(0.0, due - time.time()))
        event_id, at = await run.writer.write(PROBE_TAG)
        committed[event_id] = at
    arrived: dict[str, float] = {}
    flood_last = flood_committed
    flood_seen = 0
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while len(arrived) < len(committed) or flood_seen < flood:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"bench: fairness: {len(arrived)}/{len(committed)} probes and "
                f"{flood_seen}/{flood} flood firings delivered"
            )
        await asyncio.sleep(0.05)
        for at, body in run.receiver.take():
            event_id = str(body.get("event"))
            if event_id in committed:
                arrived.setdefault(event_id, at)
            elif event_id in flood_ids:
                flood_seen += 1
                flood_last = max(flood_last, at)
    return _Probed(
        latencies_ms=[(arrived[e] - committed[e]) * 1000 for e in committed],
        during_flood=sum(1 for at in committed.values() if at < flood_last),
        flood_s=flood_last - flood_committed,
    )


async def measure(run: FairnessRun, out: TextIO) -> None:
    connection = redis.Redis.from_url(run.redis_url)
    queue = Queue(WorkerTunables().queue, connection=connection)
    try:
        await asyncio.to_thread(_wait_workers, connection, queue, run.workers)
    finally:
        connection.close()
    alone = await _probe(run, flood=0)
    flooded = await _probe(run, flood=run.flood)
    print_figure(
        Figure(
            "t-fairness-p99",
            f"org B's firing delivered while org A's {run.flood:,} firings drain, p99",
            percentile(flooded.latencies_ms, 99),
            "ms",
            "org B alone, p99",
            percentile(alone.latencies_ms, 99),
            higher_is_better=False,
            note=f"{len(flooded.latencies_ms)} probes, {flooded.during_flood} before the "
            f"flood's last delivery; the flood drained in {flooded.flood_s:.1f}s "
            f"by {run.workers} workers; the first probe (committed with the flood, so "
            f"evaluated after it) {flooded.latencies_ms[0]:.0f} ms, the others p99 "
            f"{percentile(flooded.latencies_ms[1:], 99):.0f} ms",
        ),
        out,
    )


def _wait_workers(connection: redis.Redis, queue: Queue, count: int) -> None:
    wait_for(lambda: workers_up(connection, queue, count), "engine workers")

"""The fairness figures: organization B's single firings, delivered to the local receiver,
while organization A's flood of firings drains through the same workers; the baseline is
B's firings with no flood.

The flood is one COPY of events that all fire A's ``flood`` rule (A's quota admits it
all: what is measured is the queue, not the quota).  One B event is committed right
after the flood: the engine evaluates events in commit order, so it is queued only once
the whole flood is, and its delivery marks the moment the flood is queued and draining
(``t-fairness-behind-flood``: what an event committed behind such a flood waits).  From
then on, B's probes, one every ``interval_s``, each timed from its commit to the
receiver reading its POST (``t-fairness-p99``: a firing while the flood drains).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
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
class _Deliveries:
    """What the receiver read of the flood and of B's probes, as it arrives."""

    receiver: Receiver
    flood_ids: set[str]
    committed: dict[str, float] = field(default_factory=dict)  # probe id -> its commit
    arrived: dict[str, float] = field(default_factory=dict)
    flood_seen: int = 0
    flood_last: float = 0.0

    def take(self) -> None:
        for at, body in self.receiver.take():
            event_id = str(body.get("event"))
            if event_id in self.flood_ids:
                self.flood_seen += 1
                self.flood_last = max(self.flood_last, at)
            else:
                self.arrived.setdefault(event_id, at)

    async def until(self, probe: str | None = None) -> None:
        """Until ``probe`` arrived, or (no probe) every probe and the whole flood did."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while True:
            self.take()
            if probe is not None and probe in self.arrived:
                return
            everything = self.committed.keys() <= self.arrived.keys() and self.flood_seen >= len(
                self.flood_ids
            )
            if probe is None and everything:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"bench: fairness: {len(self.arrived)}/{len(self.committed)} probes and "
                    f"{self.flood_seen}/{len(self.flood_ids)} flood firings delivered"
                )
            await asyncio.sleep(0.005)

    def latency_ms(self, probe: str) -> float:
        return (self.arrived[probe] - self.committed[probe]) * 1000


@dataclass
class _Probed:
    behind_ms: float  # the probe committed right after the flood
    latencies_ms: list[float]  # the probes sent once the flood was queued
    during_flood: int  # of those, committed before the flood's last delivery
    flood_s: float  # from the flood's commit to its last delivery


async def _probe(run: FairnessRun, *, flood: int) -> _Probed:
    """Write the flood (if any) and a probe behind it; once that probe arrived, the
    timed probes; wait until all of it arrived."""
    run.receiver.take()
    flood_ids: set[str] = set()
    flood_committed = time.time()
    if flood:
        flood_ids, flood_committed = await run.writer.copy(FLOOD_TAG, flood)
    seen = _Deliveries(run.receiver, flood_ids, flood_last=flood_committed)
    behind, seen.committed[behind] = await run.writer.write(PROBE_TAG)
    await seen.until(behind)
    began = time.time()
    probes = []
    for i in range(run.probes):
        await asyncio.sleep(max(0.0, began + i * run.interval_s - time.time()))
        event_id, seen.committed[event_id] = await run.writer.write(PROBE_TAG)
        probes.append(event_id)
        seen.take()
    await seen.until()
    return _Probed(
        behind_ms=seen.latency_ms(behind),
        latencies_ms=[seen.latency_ms(e) for e in probes],
        during_flood=sum(1 for e in probes if seen.committed[e] < seen.flood_last),
        flood_s=seen.flood_last - flood_committed,
    )


async def measure(run: FairnessRun, out: TextIO) -> None:
    connection = redis.Redis.from_url(run.redis_url)
    queue = Queue(WorkerTunables().queue, connection=connection)
    try:
        await asyncio.to_thread(_wait_workers, connection, queue, run.workers)
    finally:
        connection.close()
    # B's first job ever: the workers hear of B's queue within worker.queue_refresh_s.
    # Paid here, untimed, so that neither run below counts it.
    await _probe(dataclasses.replace(run, probes=0), flood=0)
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
            note=f"{len(flooded.latencies_ms)} probes from the flood's being queued on, "
            f"{flooded.during_flood} of them before its last delivery; the flood drained in "
            f"{flooded.flood_s:.1f}s by {run.workers} workers",
        ),
        out,
    )
    print_figure(
        Figure(
            "t-fairness-behind-flood",
            f"org B's firing committed right after org A's {run.flood:,}, delivered",
            flooded.behind_ms,
            "ms",
            "the same with no flood",
            alone.behind_ms,
            higher_is_better=False,
            note="evaluated in commit order: after the whole flood",
        ),
        out,
    )


def _wait_workers(connection: redis.Redis, queue: Queue, count: int) -> None:
    wait_for(lambda: workers_up(connection, queue, count), "engine workers")

"""Figures 2 and 3 and the doorbell's cost: latencies of a running ``engine run``.

A separate process inserts (``devkit.bench.inserter``); the bench process holds a bare
asyncpg listener that hears both the doorbell (``new_event``: the baseline) and the
bench-only ``bench_queued`` notification sent by the commit of the engine's queued rows.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from devkit.bench.processes import Receiver
from engine.action_rows import ACTION_COLUMNS, ActionRow, copy_action_rows


@dataclass
class Probe:
    """A bare listener: notification arrival times (wall clock)."""

    dsn: str
    doorbell: list[float] = field(default_factory=list)
    queued: list[tuple[float, int, int]] = field(default_factory=list)
    _conn: asyncpg.Connection | None = None

    def _on(self, _c: Any, _pid: int, channel: str, payload: str) -> None:
        now = time.time()
        if channel == "new_event":
            self.doorbell.append(now)
        elif payload:
            low, _, high = payload.partition(",")
            self.queued.append((now, int(low), int(high)))

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self.dsn)
        await self._conn.add_listener("new_event", self._on)
        await self._conn.add_listener("bench_queued", self._on)

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()


@dataclass
class LiveRun:
    commits: list[list[Any]]  # [event_ids, commit_time, commit_seconds] per statement
    doorbell_ms: list[float]
    queued_ms: list[float]
    delivered_ms: list[float]

    @property
    def rows(self) -> int:
        return sum(len(ids) for ids, _, _ in self.commits)

    @property
    def commit_ms(self) -> list[float]:
        return [c[2] * 1000 for c in self.commits]


async def run_inserter(
    dsn: str,
    out: Path,
    *,
    rate: float,
    seconds: float,
    batch: int = 1,
    writers: int = 1,
    fire_every: int = 1,
) -> list[list[Any]]:
    command = [sys.executable, "-m", "devkit.bench.inserter", dsn, str(out)]
    command += ["--rate", str(rate), "--seconds", str(seconds), "--batch", str(batch)]
    command += ["--writers", str(writers), "--fire-every", str(fire_every)]
    proc = await asyncio.create_subprocess_exec(*command, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"inserter failed: {err.decode()[-2000:]}")
    data: list[list[Any]] = json.loads(out.read_text())
    return sorted(data, key=lambda c: c[1])


async def _queued_times(dsn: str, probe: Probe, commit_of: dict[str, float]) -> list[float]:
    """Per live event: its queued row's commit notification minus its INSERT commit."""
    if not probe.queued:
        return []
    low = min(q[1] for q in probe.queued)
    high = max(q[2] for q in probe.queued)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, event_id FROM action_results"
            " WHERE trigger_id = 'bench-live' AND id BETWEEN $1 AND $2",
            low,
            high,
        )
    finally:
        await conn.close()
    ranges = sorted(probe.queued, key=lambda q: q[1])
    starts = [q[1] for q in ranges]
    latencies = []
    for row in rows:
        committed = commit_of.get(row["event_id"])
        if committed is None:
            continue
        i = bisect.bisect_right(starts, row["id"]) - 1
        if i >= 0 and ranges[i][1] <= row["id"] <= ranges[i][2]:
            latencies.append((ranges[i][0] - committed) * 1000)
    return latencies


async def measure_live(
    dsn: str,
    workdir: Path,
    *,
    rate: float,
    seconds: float,
    batch: int = 1,
    receiver: Receiver | None = None,
    settle_s: float = 1.0,
    fire_every: int = 1,
    all_queued_within_s: float = 0.0,
) -> LiveRun:
    """``all_queued_within_s``: after the inserter, wait up to that long for every firing
    row to be queued (an engine held up would otherwise lose its slowest rows from the
    figure), then ``settle_s``."""
    probe = Probe(dsn)
    await probe.start()
    if receiver is not None:
        receiver.take()
    try:
        out = workdir / f"insert-{time.monotonic_ns()}.json"
        commits = await run_inserter(
            dsn, out, rate=rate, seconds=seconds, batch=batch, fire_every=fire_every
        )
        if all_queued_within_s:
            firing = [eid for c in commits for eid in c[0]][::fire_every]
            await _wait_queued(dsn, firing, all_queued_within_s)
        await asyncio.sleep(settle_s)
    finally:
        await probe.stop()
    commit_of = {eid: c[1] for c in commits for eid in c[0]}
    # One notification per statement, in commit order (one writer): pair them up.
    doorbell = [(t - c[1]) * 1000 for t, c in zip(probe.doorbell, commits, strict=False)]
    queued = await _queued_times(dsn, probe, commit_of)
    delivered: list[float] = []
    if receiver is not None:
        for t, body in receiver.take():
            committed = commit_of.get(str(body.get("event")))
            if committed is not None:
                delivered.append((t - committed) * 1000)
    return LiveRun(commits, doorbell, queued, delivered)


async def _wait_queued(dsn: str, event_ids: list[str], within_s: float) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            queued = await conn.fetchval(
                "SELECT count(*) FROM action_results"
                " WHERE trigger_id = 'bench-live' AND event_id = ANY($1::text[])",
                event_ids,
            )
            if queued >= len(event_ids):
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def ingest(dsn: str, workdir: Path, *, writers: int, seconds: float) -> LiveRun:
    """``writers`` concurrent single-row writers as fast as they go (no probe)."""
    out = workdir / f"ingest-{time.monotonic_ns()}.json"
    commits = await run_inserter(dsn, out, rate=0, seconds=seconds, writers=writers)
    return LiveRun(commits, [], [], [])


async def write_floor(dsn: str, *, trigger_id: str, rows: int = 1000, runs: int = 5) -> list[float]:
    """ms for PostgreSQL alone to write ``rows`` action rows like the last ones of
    ``trigger_id`` (ids taken, COPY, commit: the engine's way), the floor under a batch
    where every event fires.  The rows are deleted again."""
    conn = await asyncpg.connect(dsn)
    try:
        sample = await conn.fetch(
            "SELECT " + ", ".join(ACTION_COLUMNS[1:]) + " FROM action_results"
            " WHERE trigger_id = $1 ORDER BY id DESC LIMIT $2",
            trigger_id,
            rows,
        )
        if not sample:
            return []
        times = []
        for run in range(runs):
            records = [
                ActionRow(*row)._replace(trigger_id="bench-floor", event_id=f"{run}-{i}")
                for i, row in enumerate(sample)
            ]
            started = time.perf_counter()
            async with conn.transaction():
                await copy_action_rows(conn, records)  # the evaluator's own write
            times.append((time.perf_counter() - started) * 1000)
        await conn.execute("DELETE FROM action_results WHERE trigger_id = 'bench-floor'")
        return times
    finally:
        await conn.close()

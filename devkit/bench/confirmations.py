"""Figure 7: evaluation throughput with confirmations on, beside off, in the same run.

The same backlog, rules and batch size as figure 1, drained by the daemon three ways:
confirmations off (the baseline); on with every chain's checkpoint far ahead, so no event
waits and each batch only pays for the check; and on as on a live chain, where every
event is at the head when read: before each batch the checkpoints move to the highest
block read so far, so each batch holds all it reads and releases what the one before it
held.  Time runs from the first read to the last queued row, checkpoint writes included.
"""

from __future__ import annotations

import asyncio
import time
from typing import TextIO

import asyncpg

from devkit.bench import evaluation
from devkit.bench.data import CHAINS, EventGenerator, chunked, rule_set_yaml
from devkit.bench.report import Figure, median, print_figure, print_section
from devkit.bench.stack import reset_database
from engine.chains_config import ChainSettings, ChainsSettings
from engine.config import EngineTunables, Settings
from engine.daemon import Daemon
from engine.evaluator import Evaluator
from engine.rulebook import RuleBook
from rules import RuleIndex

CONFIRMATIONS = 3
RULES = 1000
#: A head below every generated block (all held) and one above them (none held).
LOW_HEAD, HIGH_HEAD = 0, 10**12


def measure_confirmations(
    events: int, runs: int, batch: int, dsn: str, redis_url: str, url: str, out: TextIO
) -> None:
    print_section(
        f"7. confirmations: evaluation with {CONFIRMATIONS} confirmations, on beside off", out
    )
    reset_database(dsn)
    asyncio.run(evaluation.insert_backlog(dsn, EventGenerator().rows(events)))
    index, _ = evaluation.load_index(chunked(rule_set_yaml, RULES, url))
    off, deep, held = [], [], []
    for _ in range(runs):
        off.append(asyncio.run(_rate(dsn, redis_url, index, batch, None, events)))
        deep.append(asyncio.run(_rate(dsn, redis_url, index, batch, HIGH_HEAD, events)))
        held.append(asyncio.run(_rate(dsn, redis_url, index, batch, LOW_HEAD, events)))
    note = f"{events:,} events on {len(CHAINS)} chains, {RULES:,} rules"
    for key, label, rates in (
        ("7-confirmations-deep", "confirmations on, every event already deep", deep),
        ("7-confirmations-held", "confirmations on, every event held, then released", held),
    ):
        print_figure(
            Figure(
                key, label, median(rates), "events/s", "confirmations off", median(off), note=note
            ),
            out,
        )


async def _rate(
    dsn: str, redis_url: str, index: RuleIndex, batch: int, head: int | None, events: int
) -> float:
    """Events/s through the daemon's drain; ``head``: every chain's checkpoint at first
    (None: confirmations off).  With the low head, the checkpoints then move past every
    block and the held events are drained too."""
    on = ChainsSettings(default=ChainSettings(confirmations=CONFIRMATIONS))
    chains = ChainsSettings() if head is None else on
    settings = Settings(
        database_url=dsn,
        redis_url=redis_url,
        http_listen=None,
        engine=EngineTunables(cursor_name="bench", batch_size=batch),
        chains=chains,
    )
    daemon = Daemon(settings, rulebook=RuleBook(paths=()))
    daemon.rulebook.index = index
    daemon.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with daemon.pool.acquire() as conn:
            await evaluation.reset(conn, redis_url)
            await conn.execute("TRUNCATE chain_heads_seen, checkpoints")
            await _set_heads(conn, LOW_HEAD if head is None else head)
        daemon.evaluator = Evaluator("bench", batch, chains=chains)
        started = time.perf_counter()
        if head == LOW_HEAD:
            await _drain_live(daemon, batch)
        else:
            await _drain(daemon)
        elapsed = time.perf_counter() - started
        assert daemon.stats.events == events, (daemon.stats.events, events)
        return events / elapsed
    finally:
        await daemon.pool.close()
        daemon.dispatcher.close()


async def _drain(daemon: Daemon) -> None:
    """Until a drain finds nothing to read and nothing to release."""
    s = daemon.stats
    while True:
        before = (s.events, s.held, s.released)
        await daemon._drain()
        if (s.events, s.held, s.released) == before:
            return


async def _drain_live(daemon: Daemon, batch: int) -> None:
    """Batch by batch, the checkpoints at the highest block read before each (then past
    every block, for the last ones held)."""
    assert daemon.pool is not None
    async with daemon.pool.acquire() as conn:
        while True:
            head = await conn.fetchval("SELECT max(highest_block) FROM chain_heads_seen")
            await _set_heads(conn, LOW_HEAD if head is None else head)
            result = await daemon.evaluator.run_batch(conn, daemon.rulebook.index)  # type: ignore[arg-type]
            daemon.stats.add(result)
            await daemon._dispatch(result.action_ids, result.action_orgs)
            if result.read < batch:
                break
        await _set_heads(conn, HIGH_HEAD)
    await _drain(daemon)


async def _set_heads(conn: asyncpg.Connection, head: int) -> None:
    await conn.executemany(
        "INSERT INTO checkpoints (chain_id, last_block_number, last_block_hash)"
        " VALUES ($1, $2, '0x') ON CONFLICT (chain_id) DO UPDATE"
        " SET last_block_number = EXCLUDED.last_block_number",
        [(chain, head) for chain in CHAINS],
    )

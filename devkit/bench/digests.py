"""Figures d1 and d2: digests (`group:`).

d1: a burst of firings of one group, spread over a window, through a digest rule: how
many messages (action rows) it became, beside the one per `interval` expected.  The
daemon's own drain and flush run in this process at their live pace (a drain and a
flush every ``TICK_S``), so the digests go out on the wall clock as in `engine run`.

d2: the catch-up evaluation rate of the rule mix of figure 1 with `group` added to every
rule, beside the same mix without it, over the same backlog in the same run.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import TextIO

import asyncpg

from devkit.bench import evaluation
from devkit.bench.data import COLUMNS, EventGenerator, chunked, rule_set_yaml
from devkit.bench.report import Figure, median, print_figure, print_section
from engine.config import EngineTunables, Settings
from engine.daemon import Daemon
from engine.rulebook import RuleBook

TICK_S = 0.2


@dataclass(frozen=True)
class DigestSizes:
    firings: int  # the burst, all of one group
    window_s: float  # over which the burst is written
    interval_s: int  # the rule's `interval` (its `wait` is a fifth of it)
    rules: int  # figure d2's rule mix
    backlog: int

    @classmethod
    def of(cls, quick: bool) -> DigestSizes:
        if quick:
            return cls(firings=1000, window_s=4.0, interval_s=2, rules=1000, backlog=5000)
        return cls(firings=10_000, window_s=60.0, interval_s=10, rules=10_000, backlog=20_000)


def burst_rule(interval_s: int) -> str:
    wait_s = max(1, interval_s // 5)
    return f"""
rules:
  - id: burst-digest
    on: {{registry: reputation, event_type: NewFeedback}}
    group: {{by: [agent_id], wait: {wait_s}s, interval: {interval_s}s, max: 50}}
    actions:
      - rest:
          url: http://127.0.0.1:9/never-called
          body: {{agent: "{{{{ group.agent_id }}}}", count: "{{{{ count }}}}"}}
"""


def grouped(text: str) -> str:
    """The same rule file with every rule's firings grouped by agent."""
    return re.sub(
        r"^(  - id: \S+\n)",
        r"\1    group: {by: [agent_id], wait: 30s, interval: 5m}\n",
        text,
        flags=re.MULTILINE,
    )


async def _clear(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE digest_firings, digest_groups, open_alerts")
    finally:
        await conn.close()


async def burst_messages(dsn: str, redis_url: str, sizes: DigestSizes) -> tuple[int, int, float]:
    """Write the burst over the window while draining and flushing; returns (messages,
    firings they hold, seconds from the first write to the last digest)."""
    index, _ = evaluation.load_index([burst_rule(sizes.interval_s)])
    settings = Settings(
        database_url=dsn,
        redis_url=redis_url,
        http_listen=None,
        engine=EngineTunables(cursor_name="bench", batch_size=2000),
    )
    daemon = Daemon(settings, rulebook=RuleBook(paths=()))
    daemon.rulebook.index = index
    daemon.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    gen = EventGenerator()
    try:
        async with daemon.pool.acquire() as conn:
            await conn.execute("TRUNCATE events, action_results, trigger_state")
            await conn.execute("DELETE FROM engine_cursors")
        await _clear(dsn)
        ticks = max(1, int(sizes.window_s / TICK_S))
        per_tick = -(-sizes.firings // ticks)
        started = time.monotonic()
        written = 0
        while written < sizes.firings or daemon.stats.digests == 0 or await _pending(daemon):
            if written < sizes.firings:
                n = min(per_tick, sizes.firings - written)
                rows = [
                    gen.row(registry="reputation", event_type="NewFeedback", agent_id=1)
                    for _ in range(n)
                ]
                async with daemon.pool.acquire() as conn:
                    await conn.copy_records_to_table("events", records=rows, columns=list(COLUMNS))
                written += n
            await daemon._drain()
            await daemon._flush_due()
            await asyncio.sleep(TICK_S)
            if time.monotonic() - started > sizes.window_s + 3 * sizes.interval_s + 30:
                break
        elapsed = time.monotonic() - started
        async with daemon.pool.acquire() as conn:
            messages = await conn.fetchval(
                "SELECT count(*) FROM action_results WHERE trigger_id = 'burst-digest'"
            )
            counted = await conn.fetchval(
                "SELECT coalesce(sum((context->>'count')::int), 0) FROM action_results"
                " WHERE trigger_id = 'burst-digest'"
            )
        return messages, counted, elapsed
    finally:
        await daemon.pool.close()
        daemon.dispatcher.close()


async def _pending(daemon: Daemon) -> bool:
    assert daemon.pool is not None
    async with daemon.pool.acquire() as conn:
        return bool(await conn.fetchval("SELECT count(*) FROM digest_firings"))


def measure_digests(
    sizes: DigestSizes, dsn: str, redis_url: str, url: str, runs: int, out: TextIO
) -> None:
    print_section(
        f"d. digests: {sizes.firings:,} firings of one group within {sizes.window_s:.0f}s", out
    )
    messages, counted, elapsed = asyncio.run(burst_messages(dsn, redis_url, sizes))
    expected = elapsed // sizes.interval_s + 1
    print_figure(
        Figure(
            "d1-digest-messages",
            f"messages for {sizes.firings:,} firings (interval {sizes.interval_s}s)",
            messages,
            "messages",
            "one per interval",
            expected,
            higher_is_better=False,
            note=f"{counted:,} firings in the digests, last digest after {elapsed:.1f}s",
        ),
        out,
    )
    texts = chunked(rule_set_yaml, sizes.rules, url)
    asyncio.run(evaluation.insert_backlog(dsn, EventGenerator().rows(sizes.backlog)))
    plain, _ = evaluation.load_index(texts)
    digest, _ = evaluation.load_index([grouped(t) for t in texts])
    plain_rates: list[float] = []
    digest_rates: list[float] = []
    for _ in range(runs):
        for index, rates in ((plain, plain_rates), (digest, digest_rates)):
            asyncio.run(_clear(dsn))
            rate, events, _fired = asyncio.run(evaluation.engine_rate(dsn, redis_url, index, 2000))
            assert events == sizes.backlog, (events, sizes.backlog)
            rates.append(rate)
    print_figure(
        Figure(
            "d2-digest-eval",
            f"evaluation, {sizes.rules:,} rules, every one with group",
            median(digest_rates),
            "events/s",
            "the same rules without group",
            median(plain_rates),
            note=f"{sizes.backlog:,} events, same run",
        ),
        out,
    )

"""Figure 7: absence rules' ticks, and how long each keeps the evaluation waiting.

10,000 groups of one absence rule are seen, then all fall due at once.  ``engine run``
fires them between batches, one chunk (``engine.absence_tick_rows``) per transaction: the
next batch waits for one chunk at most.  The daemon's own loop steps are driven here —
a batch of fresh events (a plain rule fires on some), then a tick — until every group
has fired; the figure is the longest tick (one transaction: the due rows, their contexts
and action rows, the disarm, the commit, then the enqueue), the longest the evaluation
waited.  The baseline is a tick with nothing due, in the same loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg
import redis

from devkit.bench.data import COLUMNS, EventGenerator
from engine.absence import note_seen
from engine.config import EngineTunables, Settings
from engine.daemon import Daemon
from engine.rulebook import RuleBook
from rules import RuleIndex, load_rules_text

RULES = """
rules:
  - id: bench-absent
    on: {{registry: reputation, event_type: NewFeedback}}
    where: {{tag1: bench-absent}}
    per: agent_id
    when: {{absent: {{for: 1s}}}}
    actions:
      - rest:
          url: {url}/absent
          body: {{agent: "{{{{ group.agent_id }}}}", since: "{{{{ absent.last_seen_at }}}}"}}
  - id: bench-plain
    on: {{registry: reputation, event_type: NewFeedback}}
    where: {{score: {{lt: 30}}}}
    actions:
      - rest: {{url: "{url}/plain", body: {{agent: "{{{{ event.agent_id }}}}"}}}}
"""
#: Fresh events committed before each loop step: the live stream the ticks interrupt.
EVENTS_PER_STEP = 20
IDLE_STEPS = 20


@dataclass
class TickPauses:
    pauses_ms: list[float]  # each tick while groups were due
    idle_ms: list[float]  # ticks with nothing due
    fired: int
    events: int  # evaluated meanwhile
    elapsed_s: float  # from the first due tick to the last


async def measure(dsn: str, redis_url: str, url: str, *, groups: int) -> TickPauses:
    loaded = load_rules_text(RULES.format(url=url), "bench-absence.yaml", environ={})
    if loaded.errors:
        raise RuntimeError(f"bench rules do not load: {loaded.errors[0]}")
    absent = loaded.rules[0]
    tunables = EngineTunables(cursor_name="bench", absence_tick_interval_s=0.0)
    settings = Settings(database_url=dsn, redis_url=redis_url, http_listen=None, engine=tunables)
    daemon = Daemon(settings, rulebook=RuleBook(paths=()))
    daemon.rulebook.index = RuleIndex(loaded.rules)
    daemon.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    writer = await asyncpg.connect(dsn)
    stream = EventGenerator(prefix="absence")
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()

        async def step() -> float:
            """One loop turn: fresh events, a batch, then the tick (its duration)."""
            rows = [stream.row() for _ in range(EVENTS_PER_STEP)]
            await writer.copy_records_to_table("events", records=rows, columns=list(COLUMNS))
            await daemon._drain()
            started = time.perf_counter()
            await daemon._tick_absences()
            return (time.perf_counter() - started) * 1000

        idle = [await step() for _ in range(IDLE_STEPS)]
        async with daemon.pool.acquire() as conn, conn.transaction():
            seen = [({"agent_id": i}, absent, "") for i in range(groups)]
            await note_seen(conn, seen, time.time() - 2)
        pauses = []
        began = time.perf_counter()
        while daemon.stats.absence_fired < groups:
            pauses.append(await step())
        elapsed = time.perf_counter() - began
        return TickPauses(pauses, idle, daemon.stats.absence_fired, daemon.stats.events, elapsed)
    finally:
        client.flushdb()
        client.close()
        await writer.close()
        await daemon.pool.close()
        daemon.dispatcher.close()

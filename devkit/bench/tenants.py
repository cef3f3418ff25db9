"""The tenants figures: organizations' rules written through ``engine api`` and applied by
a running ``engine run`` holding 100,000 of them (quick: 3,000), each beside a baseline
measured in the same run.

Order, so that each step stands on the previous one: a cold start without organizations'
rules (the baseline), the rules stored in bulk, ``engine api`` started and its writes
timed, ``engine run`` started again (the cold start with the rules), rule changes timed
until live, a steady event stream with and without a burst of rule changes, then workers
and the fairness figure (tenant_fairness).  docs/performance.md says what each means.
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import httpx
import psycopg

from devkit.bench import live, tenant_fairness
from devkit.bench.data import (
    RULES_PER_FILE,
    live_rule_yaml,
    rule_set_documents,
    tag_rule_document,
)
from devkit.bench.processes import (
    Receiver,
    engine_command,
    scalar,
    spawned,
    wait_for,
    write_config,
)
from devkit.bench.report import Figure, percentile, print_figure, print_section
from devkit.bench.stack import forget_queued, reset_database
from devkit.bench.tenant_setup import (
    EventWriter,
    Org,
    QueuedWatch,
    api_client,
    create_org,
    free_port,
    put_rule,
    store_rules,
    wait_api_ready,
)

#: Organizations, their keys and rules, and the changes recorded: gone before each run.
TENANTS_RESET_SQL = "TRUNCATE organizations, trigger_changes CASCADE"
#: The file rule ``bench-live`` fires on the live inserter's events (devkit/bench/data.py).
FILE_RULE = "bench-live"
#: How long one event may take to be queued before the bench gives up (a cold start of
#: 100,000 rules included).
QUEUED_TIMEOUT_S = 300.0
#: How long the steady stream's rows may take to be queued after the stream ends.
STREAM_WAIT_S = 60.0
#: Whether ``engine run`` has evaluated every event (its cursor counts what it evaluated).
CAUGHT_UP_SQL = (
    "SELECT coalesce((SELECT max(events) FROM engine_cursors), 0) >= (SELECT count(*) FROM events)"
)
#: A changed rule's threshold: below every generated event's score of the stream (50),
#: so the changed rules fire no more than before.
CHANGED_SCORE_BELOW = 45


@dataclass(frozen=True)
class TenantSizes:
    rules: int  # organization A's stored rules
    writes: int  # API writes timed (half creations, half replacements), and as many reads
    live_samples: int  # rule changes timed until live, and as many baseline events
    changes: int  # rule changes during the steady stream
    changes_per_s: float  # their pace through the API
    stream_rate: float  # the steady stream, events/s
    flood: int  # organization A's firings at once, for the fairness figure
    probes: int  # organization B's single firings timed, with and without the flood
    probe_interval_s: float

    @classmethod
    def of(cls, quick: bool) -> TenantSizes:
        if quick:
            return cls(1000, 50, 10, 100, 100.0, 200.0, 500, 10, 0.05)
        return cls(100_000, 500, 50, 1000, 100.0, 200.0, 10_000, 20, 0.5)


@dataclass(frozen=True)
class _Bench:
    """What every step of the section needs."""

    dsn: str
    redis_url: str
    work: Path
    config: Path
    api_url: str
    url: str  # the receiver's
    a: Org  # many rules, and the flood
    b: Org  # one rule: the other organization of the fairness figure


def measure_tenants(
    sizes: TenantSizes,
    dsn: str,
    redis_url: str,
    work: Path,
    receiver: Receiver,
    workers: int,
    out: TextIO,
) -> None:
    print_section(f"tenants: organizations' rules, {sizes.rules:,} stored", out)
    reset_database(dsn)
    forget_queued(dsn, redis_url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TENANTS_RESET_SQL)
    port = free_port()
    bench = _Bench(
        dsn=dsn,
        redis_url=redis_url,
        work=work,
        config=write_config(
            work,
            database_url=dsn,
            redis_url=redis_url,
            rules_text=live_rule_yaml(receiver.url),
            name="tenants",
            sections={"api": {"listen": f"127.0.0.1:{port}"}},
        ),
        api_url=f"http://127.0.0.1:{port}",
        url=receiver.url,
        # The flood's organization may fire it all: the fairness figure is about the
        # queue, not about the quota holding most of the flood back.
        a=create_org(
            dsn,
            "bench-a",
            max_rules=sizes.rules + sizes.writes + 10,
            max_firings_per_minute=10 * sizes.flood,
        ),
        b=create_org(dsn, "bench-b"),
    )
    asyncio.run(_measure(bench, sizes, receiver, workers, out))


async def _measure(
    bench: _Bench, sizes: TenantSizes, receiver: Receiver, workers: int, out: TextIO
) -> None:
    watch = QueuedWatch(bench.dsn)
    await watch.start()
    writer = await EventWriter.open(bench.dsn, "tn-")
    try:
        run = engine_command(bench.config, "run")
        with spawned([run], bench.work):
            cold_empty = await _cold_start(watch, writer)
        stored_s = await _store(bench, sizes)
        with spawned([engine_command(bench.config, "api")], bench.work):
            await asyncio.to_thread(wait_api_ready, bench.api_url)
            async with api_client(bench.api_url, bench.a) as client:
                await _api_writes(client, bench, sizes, out)
                with spawned([run], bench.work):
                    cold_full = await _cold_start(watch, writer)
                    _cold_figure(sizes, cold_full, cold_empty, stored_s, out)
                    await _change_to_live(client, bench, sizes, watch, writer, out)
                    await _pause(client, bench, sizes, out)
                    # The flood and B's firings must not queue behind what is left.
                    await asyncio.to_thread(_wait_caught_up, bench.dsn)
                    forget_queued(bench.dsn, bench.redis_url)
                    with spawned([engine_command(bench.config, "worker")] * workers, bench.work):
                        await tenant_fairness.measure(
                            tenant_fairness.FairnessRun(
                                redis_url=bench.redis_url,
                                writer=writer,
                                receiver=receiver,
                                workers=workers,
                                flood=sizes.flood,
                                probes=sizes.probes,
                                interval_s=sizes.probe_interval_s,
                            ),
                            out,
                        )
    finally:
        await writer.close()
        await watch.stop()


async def _store(bench: _Bench, sizes: TenantSizes) -> float:
    docs = [
        doc
        for start in range(0, sizes.rules, RULES_PER_FILE)
        for doc in rule_set_documents(min(RULES_PER_FILE, sizes.rules - start), bench.url, start)
    ]
    docs += [
        tag_rule_document("ctl-base", "bench-ctl-base", bench.url),
        tag_rule_document(tenant_fairness.FLOOD_RULE, tenant_fairness.FLOOD_TAG, bench.url),
    ]
    seconds = await store_rules(bench.dsn, bench.a.id, docs)
    probe = tag_rule_document(tenant_fairness.PROBE_RULE, tenant_fairness.PROBE_TAG, bench.url)
    await store_rules(bench.dsn, bench.b.id, [probe])
    return seconds


async def _cold_start(watch: QueuedWatch, writer: EventWriter) -> float:
    """Seconds from ``engine run``'s start (just before: the caller spawned it) to the
    queued row of an event committed before it started."""
    started = time.time()
    event_id, _ = await writer.write("bench-live")
    queued = await watch.queued_at(FILE_RULE, event_id, QUEUED_TIMEOUT_S)
    return queued - started


def _cold_figure(
    sizes: TenantSizes, full: float, empty: float, stored_s: float, out: TextIO
) -> None:
    print_figure(
        Figure(
            "t-cold-start",
            f"engine run start -> first event queued, {sizes.rules:,} organizations' rules",
            full,
            "s",
            "with none",
            empty,
            higher_is_better=False,
            note=f"rules stored by COPY in {stored_s:.1f}s",
        ),
        out,
    )


def _changed(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (a per-agent score rule) with another threshold: a change of its logic,
    which the API answers by resetting its state."""
    changed = copy.deepcopy(doc)
    changed["where"]["score"] = {"lt": CHANGED_SCORE_BELOW}
    return changed


def _score_rules(sizes: TenantSizes, url: str, *, from_end: bool) -> list[dict[str, Any]]:
    """Stored per-agent score rules (60% of the mix), from the first or the last file."""
    start = (sizes.rules - 1) // RULES_PER_FILE * RULES_PER_FILE if from_end else 0
    docs = rule_set_documents(min(RULES_PER_FILE, sizes.rules - start), url, start)
    found = [doc for doc in docs if "score" in doc["where"]]
    return found[::-1] if from_end else found


async def _api_writes(
    client: httpx.AsyncClient, bench: _Bench, sizes: TenantSizes, out: TextIO
) -> None:
    replaced = _score_rules(sizes, bench.url, from_end=True)
    created = rule_set_documents(sizes.writes // 2, bench.url, sizes.rules)
    writes, reads = [], []
    for i in range(sizes.writes):
        doc = created[i // 2] if i % 2 == 0 else _changed(replaced[i // 2 % len(replaced)])
        started = time.perf_counter()
        await put_rule(client, doc)
        writes.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        answer = await client.get(f"/v1/rules/{doc['id']}")
        reads.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"GET /v1/rules/{doc['id']}: {answer.status_code} {answer.text}")
    for q in (50, 99):
        print_figure(
            Figure(
                f"t-api-write-p{q}",
                f"PUT /v1/rules/{{id}} p{q}, {sizes.rules:,} rules stored",
                percentile(writes, q),
                "ms",
                f"GET of one rule p{q}",
                percentile(reads, q),
                higher_is_better=False,
                note=f"{len(writes)} writes: new rules p{q} {percentile(writes[0::2], q):.2f} ms, "
                f"changed ones p{q} {percentile(writes[1::2], q):.2f} ms",
            ),
            out,
        )


async def _change_to_live(
    client: httpx.AsyncClient,
    bench: _Bench,
    sizes: TenantSizes,
    watch: QueuedWatch,
    writer: EventWriter,
    out: TextIO,
) -> None:
    """A rule changed through the API, then at once an event only the changed rule
    matches; the clock runs from the API's answer to that event's action row committed.
    The baseline: an event for a rule that did not change, timed the same way."""
    changed, unchanged = [], []
    for i in range(sizes.live_samples):
        tag = f"bench-ctl-{i}"
        await put_rule(client, tag_rule_document("ctl", tag, bench.url))
        changed.append(await _queued_ms(watch, writer, f"{bench.a.id}/ctl", tag))
        base = await _queued_ms(watch, writer, f"{bench.a.id}/ctl-base", "bench-ctl-base")
        unchanged.append(base)
    print_figure(
        Figure(
            "t-change-to-live-p99",
            "rule changed -> its first event queued, p99",
            percentile(changed, 99),
            "ms",
            "an unchanged rule's event, p99",
            percentile(unchanged, 99),
            higher_is_better=False,
            note=f"{len(changed)} changes; p50 {percentile(changed, 50):.2f} ms "
            f"vs {percentile(unchanged, 50):.2f} ms",
        ),
        out,
    )


async def _queued_ms(watch: QueuedWatch, writer: EventWriter, trigger_id: str, tag: str) -> float:
    watch.forget()
    started = time.time()
    event_id, _ = await writer.write(tag)
    return (await watch.queued_at(trigger_id, event_id, QUEUED_TIMEOUT_S) - started) * 1000


async def _pause(client: httpx.AsyncClient, bench: _Bench, sizes: TenantSizes, out: TextIO) -> None:
    """The longest commit -> queued latency of a steady stream while rule changes go
    through the API: a batch held up by the changes (applying them, or waiting for the
    compile of a change its events depend on) shows as the latency of the events behind
    it.  The baseline is the same stream while the same rules are PUT at the same pace
    unchanged (the API parses, compiles and compares them and answers ``changed: false``;
    nothing reaches the engine): what differs is the rule changes alone, not the API's
    CPU on the same cores.  The note adds the stream with no API traffic at all."""
    # Longer than the writes are planned to take: a loaded API falls behind its pace.
    seconds = 1.5 * sizes.changes / sizes.changes_per_s + 2.0
    stream = partial(
        live.measure_live,
        bench.dsn,
        bench.work,
        rate=sizes.stream_rate,
        seconds=seconds,
        all_queued_within_s=STREAM_WAIT_S,
    )
    targets = _score_rules(sizes, bench.url, from_end=False)

    async def put_rules(change: bool) -> tuple[int, float]:
        await asyncio.sleep(1.0)  # the inserter's start-up: the writes fall inside the stream
        began = time.monotonic()
        for i in range(sizes.changes):
            due = began + i / sizes.changes_per_s
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            doc = targets[i % len(targets)]
            await put_rule(client, _changed(doc) if change else doc, changed=change)
        return sizes.changes, time.monotonic() - began

    alone = await stream()
    unchanged, _ = await asyncio.gather(stream(), put_rules(change=False))
    busy, (done, took_s) = await asyncio.gather(stream(), put_rules(change=True))
    print_figure(
        Figure(
            "t-pause-max",
            f"longest queued latency, {sizes.stream_rate:.0f} events/s during {done:,} "
            "rule changes",
            _longest_ms(busy),
            "ms",
            "the same PUTs, unchanged",
            _longest_ms(unchanged),
            higher_is_better=False,
            note=f"changes took {took_s:.1f}s; p99 {percentile(busy.queued_ms, 99):.2f} vs "
            f"{percentile(unchanged.queued_ms, 99):.2f} ms; the stream with no PUT: longest "
            f"{_longest_ms(alone):.2f} ms, p99 {percentile(alone.queued_ms, 99):.2f} ms; "
            f"queued {len(busy.queued_ms)}/{busy.rows}, {len(unchanged.queued_ms)}/"
            f"{unchanged.rows}, {len(alone.queued_ms)}/{alone.rows} rows",
        ),
        out,
    )


def _longest_ms(run: live.LiveRun) -> float:
    """The longest latency; a row still not queued after STREAM_WAIT_S counts as that long
    (so the figure is then a lower bound, and the note says how many rows were missing)."""
    if len(run.queued_ms) < run.rows:
        return max([*run.queued_ms, STREAM_WAIT_S * 1000])
    return max(run.queued_ms, default=float("nan"))


def _wait_caught_up(dsn: str) -> None:
    """Until ``engine run`` has evaluated every event written so far."""
    wait_for(
        lambda: scalar(dsn, CAUGHT_UP_SQL),
        "engine run to evaluate every event",
        timeout_s=QUEUED_TIMEOUT_S,
        interval_s=0.1,
    )

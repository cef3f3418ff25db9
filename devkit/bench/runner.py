"""The order of the measurements, their sizes (full and ``--quick``) and the report."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TextIO

import psycopg
import redis
from rq import Queue

from devkit.bench import (
    absence,
    confirmations,
    digests,
    evaluation,
    live,
    memory,
    tenants,
    throughput,
)
from devkit.bench.data import (
    EventGenerator,
    chunked,
    live_rule_yaml,
    rule_set_yaml,
    shared_key_yaml,
)
from devkit.bench.processes import (
    Receiver,
    engine_command,
    rss_kib,
    spawned,
    wait_engine_ready,
    wait_for,
    write_config,
)
from devkit.bench.report import Figure, median, percentile, print_figure, print_section
from devkit.bench.stack import bench_stack, forget_queued, reset_database
from engine.config import WorkerTunables
from engine.event_rows import columns_read
from rules import RuleIndex
from rules.fields import EVENT_FIELDS
from sql import query


@dataclass(frozen=True)
class BenchOptions:
    rules: int | None = None  # figure 1 rule count; None: 1k/10k/100k (quick: 1k/3k)
    events: int | None = None  # catch-up backlog; None: 20,000 (quick: 5,000)
    rate: float = 1000.0  # the higher live rate (the lower is 100/s)
    workers: int = 2
    quick: bool = False
    database_url: str | None = None
    redis_url: str | None = None
    repeats: int | None = None
    only: tuple[str, ...] = ()  # sections to run (names in SECTIONS); empty: all of them

    @property
    def rule_counts(self) -> list[int]:
        if self.rules is not None:
            return [self.rules]
        return [1000, 3000] if self.quick else [1000, 10_000, 100_000]

    @property
    def backlog(self) -> int:
        return self.events or (5000 if self.quick else 20_000)

    @property
    def runs(self) -> int:
        return self.repeats or (3 if self.quick else 5)

    @property
    def live_s(self) -> float:
        return 1.5 if self.quick else 5.0

    @property
    def shared_rules(self) -> int:
        return 2000 if self.quick else 10_000

    @property
    def memory_rules(self) -> int:
        return 3000 if self.quick else 100_000

    @property
    def absence_groups(self) -> int:
        return 2000 if self.quick else 10_000

    @property
    def action_jobs(self) -> int:
        return 400 if self.quick else 3000


BATCH = 2000
DEFAULT_AGENTS = 5000  # the event generator's and rule generator's agent population
SCALED_ABOVE_RULES = 10_000  # larger rule sets are also measured with agents scaled up


def _eval_figure(
    opts: BenchOptions,
    stack_dsn: str,
    redis_url: str,
    key: str,
    label: str,
    texts: list[str],
    rows: int,
    out: TextIO,
) -> None:
    index, load_s = evaluation.load_index(texts)
    engine_rates, read_rates, fired = [], [], 0
    for _ in range(opts.runs):
        read_rates.append(asyncio.run(evaluation.read_rate(stack_dsn, BATCH, index.event_fields)))
        rate, events, fired = asyncio.run(
            evaluation.engine_rate(stack_dsn, redis_url, index, BATCH)
        )
        assert events == rows, (events, rows)
        engine_rates.append(rate)
    print_figure(
        Figure(
            key,
            label,
            median(engine_rates),
            "events/s",
            "cursor read",
            median(read_rates),
            note=f"{rows:,} events, {fired:,} firings, rules compiled in {load_s:.1f}s, "
            f"{_columns_read(index)} read",
        ),
        out,
    )


def _columns_read(index: RuleIndex) -> str:
    return f"{len(columns_read(index.event_fields))} of {len(EVENT_FIELDS)} columns"


def _latency_figures(
    key: str,
    label: str,
    run: live.LiveRun,
    values: list[float],
    base: list[float],
    base_label: str,
    out: TextIO,
) -> None:
    for q in (50, 99):
        print_figure(
            Figure(
                f"{key}-p{q}",
                f"{label} p{q}",
                percentile(values, q),
                "ms",
                f"{base_label} p{q}",
                percentile(base, q),
                higher_is_better=False,
                note=f"{len(values)}/{run.rows} rows",
            ),
            out,
        )


#: The sections of the bench, in the order they run.
SECTIONS = (
    "evaluation",
    "confirmations",
    "doorbell",
    "live",
    "actions",
    "memory",
    "tenants",
    "digests",
    "absence",
)


def run_bench(opts: BenchOptions, out: TextIO = sys.stdout) -> int:
    unknown = sorted(set(opts.only) - set(SECTIONS))
    if unknown:
        raise ValueError(f"bench: no section {', '.join(unknown)}; sections: {', '.join(SECTIONS)}")
    sections = set(opts.only or SECTIONS)
    began = time.monotonic()
    with bench_stack(opts.database_url, opts.redis_url) as stack:
        dsn, redis_url, work = stack.database_url, stack.redis_url, stack.workdir
        receiver = Receiver()
        receiver.start()
        try:
            print(f"engine bench{' --quick' if opts.quick else ''}: {dsn} {redis_url}", file=out)
            if "evaluation" in sections:
                _evaluation(opts, dsn, redis_url, receiver.url, out)
            if "confirmations" in sections:
                confirmations.measure_confirmations(
                    opts.backlog, opts.runs, BATCH, dsn, redis_url, receiver.url, out
                )
            if "doorbell" in sections:
                _doorbell_ingest(opts, dsn, work, out)
            if "live" in sections:
                _live(opts, dsn, redis_url, work, receiver, out)
            if "actions" in sections:
                _actions(opts, dsn, redis_url, work, receiver.url, out)
            if "memory" in sections:
                _memory(opts, dsn, redis_url, work, receiver.url, out)
            if "tenants" in sections:
                tenants.measure_tenants(
                    tenants.TenantSizes.of(opts.quick),
                    dsn,
                    redis_url,
                    work,
                    receiver,
                    opts.workers,
                    out,
                )
            if "digests" in sections:
                reset_database(dsn)
                sizes = digests.DigestSizes.of(opts.quick)
                digests.measure_digests(sizes, dsn, redis_url, receiver.url, opts.runs, out)
            if "absence" in sections:
                _absence(opts, dsn, redis_url, receiver.url, out)
        finally:
            receiver.stop()
    print(f"\nbench finished in {time.monotonic() - began:.0f}s", file=out, flush=True)
    return 0


def _evaluation(opts: BenchOptions, dsn: str, redis_url: str, url: str, out: TextIO) -> None:
    print_section(f"1. evaluation throughput, catch-up ({opts.backlog:,}-event backlog)", out)
    reset_database(dsn)
    asyncio.run(evaluation.insert_backlog(dsn, EventGenerator().rows(opts.backlog)))
    for n in opts.rule_counts:
        _eval_figure(
            opts,
            dsn,
            redis_url,
            f"1-eval-{n}",
            f"evaluation, {n:,} rules",
            chunked(rule_set_yaml, n, url),
            opts.backlog,
            out,
        )
    for n in (n for n in opts.rule_counts if n > SCALED_ABOVE_RULES):
        # The rule set above keeps 5,000 agents, so at 100k rules each event matches ten
        # times as many rules (and fires ten times as often) as at 10k: another workload.
        # Here agents grow with the rules, so an event matches as many rules as at 10k.
        agents = n * DEFAULT_AGENTS // SCALED_ABOVE_RULES
        reset_database(dsn)
        asyncio.run(
            evaluation.insert_backlog(dsn, EventGenerator(agents=agents).rows(opts.backlog))
        )
        _eval_figure(
            opts,
            dsn,
            redis_url,
            f"1-eval-{n}-scaled",
            f"evaluation, {n:,} rules over {agents:,} agents",
            chunked(partial(rule_set_yaml, agents=agents), n, url),
            opts.backlog,
            out,
        )
    print_section(f"6. rule-count sensitivity: {opts.shared_rules:,} rules on one key", out)
    # Every event on the shared key; agents uniform over ten times the rules' agents, so
    # about one event in ten has a rule (the figure is about finding it, not about firing).
    gen, pick = EventGenerator(), random.Random(6)
    rows = [
        gen.row(
            chain_id=8453,
            registry="reputation",
            event_type="NewFeedback",
            agent_id=pick.randrange(1, opts.shared_rules * 10 + 1),
        )
        for _ in range(opts.backlog)
    ]
    asyncio.run(evaluation.insert_backlog(dsn, rows))
    _eval_figure(
        opts,
        dsn,
        redis_url,
        "6-shared-key",
        f"evaluation, {opts.shared_rules:,} rules sharing "
        "(8453, reputation, NewFeedback) on agent_id",
        chunked(shared_key_yaml, opts.shared_rules, url),
        opts.backlog,
        out,
    )


def _set_doorbell(dsn: str, on: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query("doorbell_on" if on else "doorbell_off"))


def _doorbell_ingest(opts: BenchOptions, dsn: str, work: Path, out: TextIO) -> None:
    print_section("doorbell cost: 16 concurrent single-row writers", out)
    seconds = 1.5 if opts.quick else 5.0
    with_bell: list[float] = []
    without: list[float] = []
    p99_with: list[float] = []
    p99_without: list[float] = []
    for _ in range(1 if opts.quick else 3):
        for on, rates, p99s in ((True, with_bell, p99_with), (False, without, p99_without)):
            reset_database(dsn)
            _set_doorbell(dsn, on)
            run = asyncio.run(live.ingest(dsn, work, writers=16, seconds=seconds))
            rates.append(run.rows / seconds)
            p99s.append(percentile(run.commit_ms, 99))
    _set_doorbell(dsn, True)
    print_figure(
        Figure(
            "doorbell-ingest",
            "ingest with the NOTIFY trigger",
            median(with_bell),
            "rows/s",
            "without the trigger",
            median(without),
        ),
        out,
    )
    print_figure(
        Figure(
            "doorbell-commit-p99",
            "INSERT commit p99 with the trigger",
            median(p99_with),
            "ms",
            "without the trigger",
            median(p99_without),
            higher_is_better=False,
        ),
        out,
    )


def _live(
    opts: BenchOptions, dsn: str, redis_url: str, work: Path, receiver: Receiver, out: TextIO
) -> None:
    reset_database(dsn)
    text = live_rule_yaml(receiver.url) + rule_set_yaml(200, receiver.url).removeprefix("rules:\n")
    config = write_config(work, database_url=dsn, redis_url=redis_url, rules_text=text)
    print_section("2. live latency: INSERT commit -> action_results row queued", out)
    high = int(opts.rate)
    # (key, label, rows/s, rows per statement, every Nth row fires: the others are the
    # usual mix through the same 201 rules, of which about 5% fire)
    cases = [
        ("single", "single rows, all firing", 100.0, 1, 1),
        ("single", "single rows, all firing", float(high), 1, 1),
        ("copy", "COPY batches, all firing", float(high), min(1000, high), 1),
        ("copy-mix", "COPY batches, 1 in 20 firing", float(high), min(1000, high), 20),
    ]
    with spawned([engine_command(config, "run")], work) as (engine,):
        wait_engine_ready(dsn, 201, engine)
        for key, label, rate, batch, every in cases:
            forget_queued(dsn, redis_url)
            seconds = max(opts.live_s, 2 * batch / rate)
            run = asyncio.run(
                live.measure_live(
                    dsn, work, rate=rate, seconds=seconds, batch=batch, fire_every=every
                )
            )
            _latency_figures(
                f"2-live-{key}-{int(rate)}",
                f"queued, {label} at {int(rate)}/s",
                run,
                run.queued_ms,
                run.doorbell_ms,
                "NOTIFY to a bare listener",
                out,
            )
            if key == "copy":
                floor = asyncio.run(live.write_floor(dsn, trigger_id="bench-live", rows=batch))
                print_figure(
                    Figure(
                        f"2-live-copy-{int(rate)}-write-floor",
                        f"queued p50, {label}",
                        percentile(run.queued_ms, 50),
                        "ms",
                        f"PostgreSQL alone writing {batch:,} such action rows (COPY, commit)",
                        median(floor),
                        higher_is_better=False,
                    ),
                    out,
                )
        baseline_rss = rss_kib(engine.pid)[0] / 1024
        print_section("3. end-to-end: INSERT commit -> webhook received, 100 firings/s", out)
        forget_queued(dsn, redis_url)
        connection = redis.Redis.from_url(redis_url)
        with spawned([engine_command(config, "worker")] * opts.workers, work):
            queue = Queue(WorkerTunables().queue, connection=connection)
            wait_for(lambda: throughput.workers_up(connection, queue, opts.workers), "workers")
            run = asyncio.run(
                live.measure_live(dsn, work, rate=100, seconds=opts.live_s * 2, receiver=receiver)
            )
        _latency_figures(
            "3-e2e-100",
            f"webhook received, {opts.workers} workers",
            run,
            run.delivered_ms,
            run.doorbell_ms,
            "NOTIFY to a bare listener",
            out,
        )
    _live_polling(opts, dsn, redis_url, work, receiver, out)
    _BASELINE_RSS.append(baseline_rss)


_BASELINE_RSS: list[float] = []


def _live_polling(
    opts: BenchOptions, dsn: str, redis_url: str, work: Path, receiver: Receiver, out: TextIO
) -> None:
    print_section("doorbell off: the engine polls every 50 ms", out)
    reset_database(dsn)
    text = live_rule_yaml(receiver.url)
    polled = write_config(
        work,
        database_url=dsn,
        redis_url=redis_url,
        rules_text=text,
        poll_interval_s=0.05,
        name="poll",
    )
    rung = write_config(work, database_url=dsn, redis_url=redis_url, rules_text=text, name="bell")
    results = {}
    for name, config, bell in (("bell", rung, True), ("poll", polled, False)):
        _set_doorbell(dsn, bell)
        with spawned([engine_command(config, "run")], work) as (engine,):
            wait_engine_ready(dsn, 1, engine)
            results[name] = asyncio.run(live.measure_live(dsn, work, rate=100, seconds=opts.live_s))
    _set_doorbell(dsn, True)
    for q in (50, 99):
        print_figure(
            Figure(
                f"doorbell-poll-p{q}",
                f"queued p{q}, no doorbell, 50 ms poll, 100/s",
                percentile(results["poll"].queued_ms, q),
                "ms",
                "with the doorbell",
                percentile(results["bell"].queued_ms, q),
                higher_is_better=False,
            ),
            out,
        )


def _actions(
    opts: BenchOptions, dsn: str, redis_url: str, work: Path, url: str, out: TextIO
) -> None:
    print_section(f"4. action throughput, {opts.workers} workers", out)
    reset_database(dsn)
    config = write_config(
        work, database_url=dsn, redis_url=redis_url, rules_text=live_rule_yaml(url), name="act"
    )
    index, _ = evaluation.load_index([live_rule_yaml(url)])
    engine_rates, noop_rates = [], []
    for _ in range(1 if opts.quick else 3):
        noop_rates.append(throughput.noop_rate(redis_url, opts.workers, opts.action_jobs, work))
        ids = asyncio.run(throughput.queue_actions(dsn, index, opts.action_jobs))
        engine_rates.append(throughput.engine_rate(dsn, redis_url, config, opts.workers, ids, work))
    print_figure(
        Figure(
            "4-actions",
            "webhooks delivered and recorded",
            median(engine_rates),
            "jobs/s",
            f"RQ no-op, {opts.workers} SimpleWorkers",
            median(noop_rates),
            note=f"{opts.action_jobs} jobs",
        ),
        out,
    )


def _memory(
    opts: BenchOptions, dsn: str, redis_url: str, work: Path, url: str, out: TextIO
) -> None:
    n = opts.memory_rules
    print_section(f"5. memory: engine run with {n:,} rules and {n:,} state groups", out)
    rss, peak, groups = memory.engine_rss_mib(dsn, redis_url, work, rules=n, groups=n, url=url)
    baseline = _BASELINE_RSS[0] if _BASELINE_RSS else float("nan")
    print_figure(
        Figure(
            "5-memory",
            "RSS",
            rss,
            "MiB",
            "engine run with 201 rules",
            baseline,
            higher_is_better=False,
            note=f"peak {peak:.0f} MiB, {groups:,} groups",
        ),
        out,
    )


#: The most a tick may keep the evaluation waiting (issue 17).
ABSENCE_PAUSE_TARGET_MS = 50.0


def _absence(opts: BenchOptions, dsn: str, redis_url: str, url: str, out: TextIO) -> None:
    n = opts.absence_groups
    print_section(f"7. absence rules: {n:,} groups falling due at once", out)
    reset_database(dsn)
    run = asyncio.run(absence.measure(dsn, redis_url, url, groups=n))
    longest = max(run.pauses_ms)
    print_figure(
        Figure(
            "7-absence-pause",
            "longest tick (the evaluation's pause)",
            longest,
            "ms",
            "a tick with nothing due",
            median(run.idle_ms),
            higher_is_better=False,
            note=f"target <= {ABSENCE_PAUSE_TARGET_MS:.0f} ms:"
            f" {'met' if longest <= ABSENCE_PAUSE_TARGET_MS else 'NOT met'};"
            f" {run.fired:,} groups fired in {len(run.pauses_ms)} ticks over"
            f" {run.elapsed_s:.1f}s between batches of live events ({run.events:,}"
            f" evaluated), median tick {median(run.pauses_ms):.1f} ms",
        ),
        out,
    )

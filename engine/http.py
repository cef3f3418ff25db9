"""HTTP endpoints of ``engine run``: /metrics, /healthz, /readyz.

A deliberately tiny asyncio server (three GET routes need no framework).  Metrics are
collected at scrape time from the daemon's counters and the audit table, so the hot
path pays nothing for them and the workers' outcomes are visible without running a
metrics endpoint in every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from engine.tenant_rules import TIMING_BUCKETS_S, Timings
from sql import query

if TYPE_CHECKING:
    from engine.daemon import Daemon

log = logging.getLogger(__name__)

# Upper bounds (seconds) of engine_action_duration_seconds: a webhook takes tens of
# milliseconds, an MCP call or a rate-limited Telegram split can take a minute.
ACTION_DURATION_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Three GET routes need no more: a longer head is not a request this server answers.
MAX_REQUEST_BYTES = 8192


class DaemonCollector(Collector):
    """Reads the daemon's counters; the database figures are refreshed before each scrape."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.actions: list[Any] = []
        self.durations: list[Any] = []
        self.pending = 0
        self.oldest_age_s = 0
        self.blocker_pid = 0
        self.blocker_s = 0.0
        self.chains: list[Any] = []

    async def refresh(self) -> None:
        pool = self.daemon.pool
        if pool is None:
            return
        timeout_s = self.daemon.settings.engine.metrics_query_timeout_s
        self.actions = list(await pool.fetch(query("metrics_actions"), timeout=timeout_s))
        self.durations = list(
            await pool.fetch(
                query("metrics_action_durations"),
                self.daemon.stats.started_at,
                list(ACTION_DURATION_BUCKETS_S),
                timeout=timeout_s,
            )
        )
        row = await pool.fetchrow(
            query("metrics_lag"), self.daemon.settings.engine.cursor_name, timeout=timeout_s
        )
        if row is not None:
            self.pending, self.oldest_age_s = int(row["pending"]), int(row["oldest_age_s"])
        # The oldest transaction holding an xid bounds what the gap-safe cursor may read:
        # while it stays open, committed events wait. Its pid makes that lag explainable.
        blocker = await pool.fetchrow(query("metrics_blocker"), timeout=timeout_s)
        self.blocker_pid = 0 if blocker is None else int(blocker["pid"])
        self.blocker_s = 0.0 if blocker is None else float(blocker["running_for_s"])
        self.chains = list(
            await pool.fetch(
                query("status_chains"), self.daemon.settings.engine.cursor_name, timeout=timeout_s
            )
        )

    def collect(self) -> Iterator[Any]:
        d = self.daemon
        s = d.stats
        for name, doc, value in (
            ("engine_events_processed", "Events evaluated by this process", s.events),
            ("engine_rule_firings", "Rule firings (actions queued)", s.fired),
            ("engine_rule_suppressed", "Firings suppressed by throttle", s.suppressed),
            ("engine_rule_errors", "Rule evaluations that raised", s.errors),
            ("engine_unusual_events", "Rows that looked malformed (logged once each)", s.unusual),
            (
                "engine_future_events",
                "Events stamped more than engine.max_event_future_skew_s ahead of the clock",
                s.future_events,
            ),
            (
                "engine_absence_fired",
                "Absence rules' groups fired for going quiet (when.absent)",
                s.absence_fired,
            ),
            (
                "engine_skipped_events",
                "Rows skipped: their evaluation could not be recorded",
                s.skipped,
            ),
            (
                "engine_enqueue_failures",
                "Enqueues that failed (rows kept for the sweep)",
                s.enqueue_failures,
            ),
            ("engine_events_held", "Rows held for confirmations when read", s.held),
            (
                "engine_held_events_released",
                "Events evaluated once their confirmations were reached",
                s.released,
            ),
            ("engine_listener_reconnects", "Listener reconnects", d.listener.reconnects),
            (
                "engine_batches_restarted",
                "Batches rolled back and evaluated again (an event id written twice)",
                s.restarts,
            ),
            (
                "engine_events_rewritten",
                "Event ids written again after their evaluation: recorded, not evaluated again",
                s.rewrites,
            ),
            (
                "engine_events_retracted",
                "Evaluated events the indexer deleted (a reorg): on_retract actions queued",
                s.retractions,
            ),
            ("engine_digests_sent", "Digests queued (a rule's `group:`)", s.digests),
            (
                "engine_alerts_resolved_after",
                "Alerts resolved because `resolve.after` passed without a firing",
                s.resolved_by_after,
            ),
            (
                "engine_rule_changes_applied",
                "Organizations' rule changes put into the index",
                d.tenants.stats.applied,
            ),
            (
                "engine_batches_behind_rule_compile",
                "Batches that read only the events older than rule changes still compiling",
                d.tenants.stats.behind_compile,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield _timings_histogram(
            "engine_rule_change_apply_seconds",
            "Time a batch spent putting organizations' rule changes into the index, per batch"
            " that applied some",
            d.tenants.stats.apply,
        )
        yield _timings_histogram(
            "engine_rule_change_compile_seconds",
            "Time compiling organizations' rule changes off the evaluation loop, per compile",
            d.tenants.stats.compile,
        )
        yield GaugeMetricFamily(
            "engine_leader", "1 when this process evaluates", value=int(s.is_leader)
        )
        yield GaugeMetricFamily(
            "engine_lag_events", "Committed events not yet evaluated", value=self.pending
        )
        yield GaugeMetricFamily(
            "engine_lag_seconds",
            "Block-time age of the oldest unevaluated event",
            value=self.oldest_age_s,
        )
        yield GaugeMetricFamily(
            "engine_oldest_transaction_pid",
            "Backend pid of the oldest open transaction holding back the cursor (0: none)",
            value=self.blocker_pid,
        )
        yield GaugeMetricFamily(
            "engine_oldest_transaction_seconds",
            "How long the oldest open transaction (which holds back the cursor) has run",
            value=self.blocker_s,
        )
        yield GaugeMetricFamily(
            "engine_rules_loaded", "Rules in the index", value=len(d.rulebook.rules)
        )
        yield GaugeMetricFamily(
            "engine_rule_load_errors", "Errors of the last rule load", value=len(d.rulebook.errors)
        )
        actions = GaugeMetricFamily(
            "engine_actions", "action_results rows by type and status", labels=["type", "status"]
        )
        for row in self.actions:
            actions.add_metric([row["action_type"], row["status"]], row["n"])
        yield actions
        yield _duration_histogram(self.durations)
        yield from _chain_gauges(self.chains)


def _chain_gauges(rows: list[Any]) -> Iterator[GaugeMetricFamily]:
    """Per chain (engine.confirmations): held events, the confirmation lag, the head."""
    held = GaugeMetricFamily(
        "engine_held_events", "Events waiting for their confirmations", labels=["chain_id"]
    )
    lag = GaugeMetricFamily(
        "engine_confirmation_lag_seconds",
        "How long the oldest event held for confirmations has waited",
        labels=["chain_id"],
    )
    head = GaugeMetricFamily(
        "engine_chain_head",
        "The block confirmations count from: source checkpoints, or the highest block seen",
        labels=["chain_id", "source"],
    )
    for row in rows:
        chain = str(row["chain_id"])
        held.add_metric([chain], row["held"])
        lag.add_metric([chain], row["oldest_held_s"])
        head.add_metric([chain, row["head_source"]], row["head"])
    yield from (held, lag, head)


def _timings_histogram(name: str, doc: str, timings: Timings) -> HistogramMetricFamily:
    cumulative, buckets = 0, []
    for bound, n in zip(TIMING_BUCKETS_S, timings.counts, strict=False):
        cumulative += n
        buckets.append((str(bound), cumulative))
    buckets.append(("+Inf", sum(timings.counts)))
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], buckets, sum_value=timings.total_s)
    return family


def _duration_histogram(rows: list[Any]) -> HistogramMetricFamily:
    """Cumulative buckets from per-bucket counts (bucket i: i bounds at or below)."""
    family = HistogramMetricFamily(
        "engine_action_duration_seconds",
        "Duration of finished action attempts since this process started, by type and outcome",
        labels=["type", "status"],
    )
    counts: dict[tuple[str, str], list[int]] = {}
    sums: dict[tuple[str, str], float] = {}
    for row in rows:
        key = (row["action_type"], row["status"])
        per_bucket = counts.setdefault(key, [0] * (len(ACTION_DURATION_BUCKETS_S) + 1))
        per_bucket[int(row["bucket"])] += int(row["n"])
        sums[key] = sums.get(key, 0.0) + float(row["duration_ms"]) / 1000.0
    for key, per_bucket in sorted(counts.items()):
        cumulative, buckets = 0, []
        for bound, n in zip(ACTION_DURATION_BUCKETS_S, per_bucket, strict=False):
            cumulative += n
            buckets.append((str(bound), cumulative))
        buckets.append(("+Inf", sum(per_bucket)))
        family.add_metric(list(key), buckets, sum_value=sums[key])
    return family


class HttpServer:
    """Serves the three endpoints for one daemon."""

    def __init__(self, daemon: Daemon, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)
        self.daemon = daemon
        self.collector = DaemonCollector(daemon)
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        log.info("http listening", extra={"listen": f"{self.host}:{self.port}"})

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), self.daemon.settings.engine.http_request_timeout_s
            )
            if len(head) > MAX_REQUEST_BYTES:
                raise ValueError("request too large")
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            status, content_type, body = await self._route(method, path.split("?", 1)[0])
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, content_type, body = 400, "text/plain", b"bad request\n"
        header = (
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(header.encode() + body)
            await writer.drain()
        writer.close()

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "text/plain", b"GET only\n"
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            return await self._ready()
        if path == "/metrics":
            with contextlib.suppress(Exception):  # a down database still yields counters
                await self.collector.refresh()
            return 200, "text/plain; version=0.0.4", generate_latest(self.registry)
        return 404, "text/plain", b"not found\n"

    async def _ready(self) -> tuple[int, str, bytes]:
        """Ready = the database answers and a NOTIFY comes back through the listener."""
        pool = self.daemon.pool
        if pool is None:
            return 503, "text/plain", b"database pool not open\n"
        timeout_s = self.daemon.settings.engine.ready_probe_timeout_s
        try:
            await pool.fetchval(query("ping"), timeout=timeout_s)
        except Exception as exc:
            return 503, "text/plain", f"database unreachable: {exc}\n".encode()
        rtt = await self.daemon.listener.probe(pool, timeout_s)
        if rtt is None:
            return 503, "text/plain", b"listener did not receive the NOTIFY probe\n"
        return 200, "text/plain", f"ready (notify round trip {rtt * 1000:.1f} ms)\n".encode()

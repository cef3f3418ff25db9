"""Helpers for the fault-injection scenarios (tests/integration/test_faults.py).

A scenario = a known stream of events written by an ``Inserter`` thread while something is
being broken, a rule set whose correct outcome can be computed in Python, and
``verify()``, which checks that outcome in the database and at the webhook receiver:

- every event evaluated exactly once: the cursor counted each inserted event once and the
  ``count`` state of every agent holds exactly that agent's event times (an event
  evaluated twice would appear twice);
- one ``action_results`` row per expected firing (no more, no fewer);
- every row ends ``success`` (or ``failed`` where a test made the endpoint fail);
- the receiver saw every row's delivery at least once, and any duplicate carried the same
  ``webhook-id`` and the same body (a receiver can absorb it).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.fakes.webhook import WebhookReceiver
from tests.processes import EngineProcess, query_all, query_value, wait_until, write_config

CHAIN_ID = 84532
COUNT_RULE = "count-per-agent"
LOW_RULE = "low-score"
LOW_SCORE_BELOW = 20

RULES = """
rules:
  - id: count-per-agent
    description: every feedback, counted per agent within an hour
    on: {{registry: reputation, event_type: NewFeedback}}
    per: agent_id
    when:
      count: {{within: 1h, at_least: 1}}
    actions:
      - rest:
          url: {url}/hooks/count
          timeout: {timeout}
          body: {{event: "{{{{ event.id }}}}", agent: "{{{{ event.agent_id }}}}",
                  n: "{{{{ state.count }}}}"}}
        retry: {{attempts: {attempts}, backoff: 1s, max_backoff: 2s}}
  - id: low-score
    description: a score under {low}
    on: {{registry: reputation, event_type: NewFeedback}}
    where:
      score: {{lt: {low}}}
    actions:
      - rest:
          url: {url}/hooks/low
          timeout: {timeout}
          body: {{event: "{{{{ event.id }}}}", score: "{{{{ event.score }}}}"}}
        retry: {{attempts: {attempts}, backoff: 1s, max_backoff: 2s}}
"""


def plan_events(n: int, *, agents: int = 7, seed: int | None = None) -> list[dict[str, Any]]:
    """``n`` NewFeedback events with unique ids, all within the same hour of block time."""
    rng = random.Random(seed)
    block = rng.randint(10**9, 10**12)
    base = int(time.time()) - 600
    return [
        {
            "id": f"{CHAIN_ID}-{block}-{i}",
            "block_number": block,
            "log_index": i,
            "agent_id": 1 + i % agents,
            "score": (i * 37) % 100,
            "timestamp": base + i % 1800,
        }
        for i in range(n)
    ]


_INSERT = """
INSERT INTO events (id, chain_id, block_number, block_hash, transaction_hash, log_index,
                    registry, event_type, agent_id, "timestamp", score, client_address)
VALUES (%(id)s, 84532, %(block_number)s, '0xb', '0xt', %(log_index)s, 'reputation',
        'NewFeedback', %(agent_id)s, %(timestamp)s, %(score)s,
        '0xabc0000000000000000000000000000000000001')
"""


class Inserter(threading.Thread):
    """Writes the planned events in small transactions, as an indexer would.

    It survives a database restart: after a failed commit it reconnects and looks whether
    the rows made it before writing them again (the events table has no unique id: a blind
    retry could insert an event twice, which would be the indexer's bug, not the engine's).
    """

    def __init__(
        self,
        dsn: str,
        events: Sequence[dict[str, Any]],
        *,
        per_tx: int = 3,
        pause_s: float = 0.02,
    ) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.events = list(events)
        self.per_tx = per_tx
        self.pause_s = pause_s
        self.inserted: list[dict[str, Any]] = []
        self.retries = 0
        self.error: BaseException | None = None
        self._conn: psycopg.Connection[Any] | None = None

    def run(self) -> None:
        try:
            for start in range(0, len(self.events), self.per_tx):
                chunk = self.events[start : start + self.per_tx]
                self._write(chunk)
                self.inserted.extend(chunk)
                time.sleep(self.pause_s)
        except BaseException as exc:  # reported by join_checked
            self.error = exc
        finally:
            if self._conn is not None:
                self._conn.close()

    def _write(self, chunk: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.dsn, connect_timeout=3)
                with self._conn.transaction():
                    for event in chunk:
                        self._conn.execute(_INSERT, event)
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                self.retries += 1
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if self._committed(chunk, deadline):
                    return

    def _committed(self, chunk: list[dict[str, Any]], deadline: float) -> bool:
        """Whether the chunk's commit made it: asked again until the database answers."""
        ids = [e["id"] for e in chunk]
        while True:
            time.sleep(0.3)
            try:
                n = query_value(self.dsn, "SELECT count(*) FROM events WHERE id = ANY($1)", ids)
                return bool(n)
            except Exception:
                if time.monotonic() > deadline:
                    raise

    def join_checked(self, timeout: float = 120) -> list[dict[str, Any]]:
        self.join(timeout)
        assert not self.is_alive(), "the inserter did not finish"
        if self.error is not None:
            raise AssertionError(f"the inserter failed: {self.error!r}")
        return self.inserted


@dataclass
class Expected:
    """What the rule set must produce for a stream of events."""

    events: int
    firings: set[tuple[str, str]]  # (trigger_id, event_id)
    times: dict[str, list[int]]  # count state: group key -> event times

    @classmethod
    def of(cls, events: Iterable[dict[str, Any]]) -> Expected:
        firings: set[tuple[str, str]] = set()
        times: dict[str, list[int]] = defaultdict(list)
        n = 0
        for e in events:
            n += 1
            firings.add((COUNT_RULE, e["id"]))
            times[json.dumps([e["agent_id"]])].append(e["timestamp"])
            if e["score"] is not None and e["score"] < LOW_SCORE_BELOW:
                firings.add((LOW_RULE, e["id"]))
        return cls(n, firings, dict(times))


@dataclass
class Outcome:
    """The figures a scenario checked, printed for the closing report."""

    name: str
    events: int = 0
    firings: int = 0
    rows_success: int = 0
    rows_failed: int = 0
    deliveries: int = 0
    duplicates: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def report(self) -> None:
        extra = "".join(f", {k}={v}" for k, v in self.extra.items())
        print(
            f"\n[faults] {self.name}: events={self.events} firings={self.firings} "
            f"success={self.rows_success} failed={self.rows_failed} "
            f"deliveries={self.deliveries} duplicates_absorbed={self.duplicates}{extra}"
        )


class Scenario:
    """Rules, config and processes of one scenario, in ``tmp_path``."""

    def __init__(
        self,
        tmp_path: Path,
        database_url: str,
        redis_url: str,
        receiver: WebhookReceiver,
        *,
        attempts: int = 10,
        timeout: str = "5s",
        extra: dict[str, Any] | None = None,
        extra_rules: str | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.dsn = database_url
        self.receiver = receiver
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            RULES.format(url=receiver.url, attempts=attempts, timeout=timeout, low=LOW_SCORE_BELOW),
            encoding="utf-8",
        )
        paths = [str(rules)]
        self.n_rules = 2
        if extra_rules is not None:
            more = tmp_path / "more-rules.yaml"
            more.write_text(extra_rules, encoding="utf-8")
            paths.append(str(more))
            self.n_rules += extra_rules.count("\n  - id:")
        self.config = write_config(
            tmp_path, database_url=database_url, redis_url=redis_url, rules=paths, extra=extra
        )
        self.processes: list[EngineProcess] = []
        self._n = 0

    def start(self, *args: str) -> EngineProcess:
        self._n += 1
        name = "-".join(args)
        proc = EngineProcess(
            self.config, *args, log_path=self.tmp_path / f"{name}-{self._n}.log"
        ).start()
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.processes:
            proc.stop()

    def wait_rules_loaded(self, timeout: float = 30) -> None:
        wait_until(
            lambda: query_value(self.dsn, "SELECT count(*) FROM triggers") == self.n_rules,
            timeout=timeout,
            what="the rules to be loaded",
        )

    def logs(self) -> str:
        return "\n".join(p.output() for p in self.processes)


def cursor_events(dsn: str) -> int:
    return int(query_value(dsn, "SELECT coalesce(sum(events), 0) FROM engine_cursors") or 0)


def verify(
    name: str,
    dsn: str,
    receiver: WebhookReceiver,
    events: Sequence[dict[str, Any]],
    *,
    failed: set[tuple[str, str]] | None = None,
    timeout: float = 60,
    settle_s: float = 1.0,
) -> Outcome:
    """Wait for the pipeline to finish with ``events``, then check every guarantee.

    ``failed``: the firings whose row must end 'failed' (the endpoint was made to fail).
    """
    expected = Expected.of(events)
    failed = failed or set()
    wait_until(
        lambda: cursor_events(dsn) >= expected.events,
        timeout=timeout,
        what=f"the cursor to count {expected.events} events",
    )

    def finished() -> bool:
        n = query_value(
            dsn, "SELECT count(*) FROM action_results WHERE status IN ('success', 'failed')"
        )
        return int(n) >= len(expected.firings)

    wait_until(finished, timeout=timeout, what=f"{len(expected.firings)} finished actions")
    time.sleep(settle_s)  # anything doubled or late would show up now

    # Exactly once: the cursor, the state, the rows.
    assert cursor_events(dsn) == expected.events
    rows = query_all(
        dsn, "SELECT id, trigger_id, event_id, status, error_message FROM action_results"
    )
    keys = Counter((r[1], r[2]) for r in rows)
    assert set(keys) == expected.firings, (
        f"missing {sorted(expected.firings - set(keys))[:5]}, "
        f"unexpected {sorted(set(keys) - expected.firings)[:5]}"
    )
    assert max(keys.values()) == 1
    states = {
        r[0]: sorted(r[1]["when"]["count"]["times"])
        for r in query_all(
            dsn, "SELECT group_key, state FROM trigger_state WHERE trigger_id = $1", COUNT_RULE
        )
    }
    assert states == {k: sorted(v) for k, v in expected.times.items()}

    # Every row ended as it should.
    wrong = [r for r in rows if r[3] != ("failed" if (r[1], r[2]) in failed else "success")]
    assert not wrong, f"{len(wrong)} rows ended wrongly, e.g. {wrong[:3]}"

    # At least once, duplicates only with the same webhook-id (and the same body).
    requests = receiver.requests
    by_id: dict[str, list[Any]] = defaultdict(list)
    for req in requests:
        by_id[req.header("webhook-id") or ""].append(req)
    delivered = {str(r[0]) for r in rows if r[3] == "success"}
    assert delivered <= set(by_id), f"never delivered: {sorted(delivered - set(by_id))[:5]}"
    for webhook_id, copies in by_id.items():
        assert webhook_id, "a request without webhook-id"
        bodies = {c.body for c in copies if c.json is not None}
        assert len(bodies) <= 1, f"webhook-id {webhook_id} carried different bodies"
    successes = {str(r[0]) for r in rows if r[3] == "success"}
    duplicates = sum(len(v) - 1 for k, v in by_id.items() if k in successes)
    return Outcome(
        name=name,
        events=expected.events,
        firings=len(expected.firings),
        rows_success=sum(1 for r in rows if r[3] == "success"),
        rows_failed=sum(1 for r in rows if r[3] == "failed"),
        deliveries=len(requests),
        duplicates=duplicates,
    )


class HostileServer:
    """A raw HTTP endpoint that misbehaves on purpose, chosen by path:

    ``/trickle`` answers headers, then one body byte per second; ``/huge`` announces and
    streams a 1 GB body as fast as the client reads; ``/loop`` redirects to itself
    forever; ``/private`` redirects to the cloud metadata address.  ``hits`` counts the
    connections that sent a request, per path; ``sent`` the body bytes written per path.
    """

    GB = 1 << 30

    def __init__(self) -> None:
        import socket

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.hits: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: Any) -> None:
        try:
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            path = head.split(b" ", 2)[1].decode().split("?")[0]
            self.hits[path] += 1
            if path == "/trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                for _ in range(100):
                    if self._stop.wait(1.0):
                        return
                    conn.sendall(b"x")
                    self.sent[path] += 1
            elif path == "/huge":
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    + f"Content-Length: {self.GB}\r\n\r\n".encode()
                )
                block = b"\0" * 65536
                while self.sent[path] < self.GB and not self._stop.is_set():
                    conn.sendall(block)
                    self.sent[path] += len(block)
            elif path == "/loop":
                conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n")
            elif path == "/private":
                conn.sendall(
                    b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/"
                    b"\r\nContent-Length: 0\r\n\r\n"
                )
            else:
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass  # the client hung up: that is the point of most of these
        finally:
            conn.close()

"""Faults on purpose (issue 5): kills, restarts, outages, a blocking transaction, a standby,
and hostile input — with the real ``engine`` processes, PostgreSQL and Redis.

Every scenario writes a known stream of events while something breaks, then
``faults_support.verify`` checks: each event evaluated exactly once (cursor count and
per-agent ``count`` state equal the reference), one ``action_results`` row per expected
firing, every row ``success`` (or ``failed`` where the endpoint was made to fail), every
delivery seen at least once and duplicates only under the same ``webhook-id``.

``make test`` runs a short version of each scenario; ``make test-faults`` (marker
``faults``) the longer, repeated ones.  Run with ``-s`` to see the figures each checked.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from actions.rq_internals import job_id, job_key, queue_key
from devkit.localstack import PostgresServer, RedisServer, free_port
from engine.config import WorkerTunables
from tests.fakes.webhook import WebhookReceiver
from tests.faults_support import (
    CHAIN_ID,
    Expected,
    HostileServer,
    Inserter,
    Scenario,
    cursor_events,
    plan_events,
    verify,
)
from tests.processes import query_all, query_value, run_engine, wait_until, write_config

# -- 1. kill -9 of `engine run` ------------------------------------------------------------


def _kill_engine_repeatedly(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    receiver: WebhookReceiver,
    *,
    n_events: int,
    kills: int,
) -> None:
    sc = Scenario(tmp_path, database_url, redis_url, receiver)
    events = plan_events(n_events)
    sc.start("worker")
    engine = sc.start("run")
    sc.wait_rules_loaded()
    # Slow enough that the stream spans the kills (each kill lands mid-stream).
    inserter = Inserter(database_url, events, per_tx=2, pause_s=0.07)
    inserter.start()
    rng = random.Random()
    progress = []
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 1.2))
            engine.kill()
            progress.append(cursor_events(database_url))
            time.sleep(rng.uniform(0.0, 0.3))
            engine = sc.start("run")
        inserted = inserter.join_checked()
        outcome = verify("1 kill -9 engine run", database_url, receiver, inserted, timeout=60)
    finally:
        sc.stop_all()
    outcome.extra = {"kills": kills, "cursor_at_kills": progress}
    outcome.report()


def test_engine_killed_repeatedly_while_events_arrive(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    _kill_engine_repeatedly(
        tmp_path, database_url, redis_url, webhook_receiver, n_events=120, kills=4
    )


@pytest.mark.faults
def test_engine_killed_many_times_long(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    _kill_engine_repeatedly(
        tmp_path, database_url, redis_url, webhook_receiver, n_events=600, kills=15
    )


# -- 2. kill -9 of a worker in the middle of a job -------------------------------------------


def _kill_worker_mid_job(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    receiver: WebhookReceiver,
    *,
    n_events: int,
    kills: int,
) -> None:
    # A short lease (job timeout 3 s + 1 s) so the sweep takes the dead worker's row over
    # quickly; each request is held 0.2 s at the receiver so a kill lands inside a job.
    # The rule's timeout must fit in the job timeout, or the rule is refused.
    sc = Scenario(
        tmp_path,
        database_url,
        redis_url,
        receiver,
        timeout="2s",
        extra={"worker": {"job_timeout_s": 3, "lease_margin_s": 1}},
    )
    receiver.set_behaviour(delay_s=0.2)
    events = plan_events(n_events)
    worker = sc.start("worker")
    sc.start("run")
    sc.wait_rules_loaded()
    inserter = Inserter(database_url, events, per_tx=4, pause_s=0.02)
    inserter.start()
    killed_in_flight = []
    try:
        for k in range(kills):
            seen = len(receiver.requests)
            receiver.wait_for(seen + 2 + k, timeout=30)
            worker.kill()  # the request just received is still being answered: mid-job
            killed_in_flight.append(receiver.requests[-1].header("webhook-id"))
            worker = sc.start("worker")
        inserted = inserter.join_checked()
        outcome = verify("2 kill -9 worker mid-job", database_url, receiver, inserted, timeout=60)
    finally:
        sc.stop_all()
    # Each job killed mid-flight was delivered again, under the same webhook-id.
    by_id = [r.header("webhook-id") for r in receiver.requests]
    redelivered = [i for i in killed_in_flight if by_id.count(i) >= 2]
    assert len(redelivered) == kills, (killed_in_flight, redelivered)
    outcome.extra = {"worker_kills": kills, "redelivered_after_kill": len(redelivered)}
    outcome.report()


def test_worker_killed_mid_job(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    _kill_worker_mid_job(tmp_path, database_url, redis_url, webhook_receiver, n_events=24, kills=2)


@pytest.mark.faults
def test_worker_killed_mid_job_many_times(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    _kill_worker_mid_job(tmp_path, database_url, redis_url, webhook_receiver, n_events=120, kills=8)


# -- 5. the webhook receiver down, then up; 500 forever, then replayed -----------------------


def test_receiver_down_then_up_is_retried_to_success(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    sc = Scenario(tmp_path, database_url, redis_url, webhook_receiver, attempts=10)
    events = plan_events(20)
    sc.start("run")
    sc.start("worker")
    try:
        sc.wait_rules_loaded()
        webhook_receiver.stop()  # connections refused: retryable
        inserter = Inserter(database_url, events, per_tx=5)
        inserter.start()
        inserted = inserter.join_checked()
        wait_until(
            lambda: query_value(
                database_url,
                "SELECT count(*) FROM action_results WHERE status = 'retrying' AND attempts >= 2",
            ),
            timeout=20,
            what="retries while the receiver is down",
        )
        down_attempts = query_value(database_url, "SELECT sum(attempts) FROM action_results")
        webhook_receiver.start()  # same port
        outcome = verify("5a receiver down then up", database_url, webhook_receiver, inserted)
        retried = query_value(
            database_url, "SELECT count(*) FROM action_results WHERE attempts > 1"
        )
    finally:
        sc.stop_all()
    assert retried > 0
    outcome.extra = {"attempts_while_down": down_attempts, "rows_retried": retried}
    outcome.report()


def test_receiver_failing_forever_dead_letters_then_replays(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    attempts = 2
    sc = Scenario(tmp_path, database_url, redis_url, webhook_receiver, attempts=attempts)
    webhook_receiver.set_behaviour(status=500)
    events = plan_events(6)
    sc.start("run")
    sc.start("worker")
    try:
        sc.wait_rules_loaded()
        inserter = Inserter(database_url, events)
        inserter.start()
        inserted = inserter.join_checked()

        firings = Expected.of(inserted).firings
        outcome = verify(
            "5b receiver 500 forever (dead letters)",
            database_url,
            webhook_receiver,
            inserted,
            failed=firings,
        )
        errors = {r[0] for r in query_all(database_url, "SELECT error_message FROM action_results")}
        assert all("HTTP 500" in e and f"gave up after {attempts} attempts" in e for e in errors)
        ids = Counter(r.header("webhook-id") for r in webhook_receiver.requests)
        assert set(ids.values()) == {attempts}  # every attempt, same id each time
        listed = run_engine(sc.config, "actions", "failed", "--json")
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)) == len(firings)

        webhook_receiver.set_behaviour(status=200)
        webhook_receiver.clear()
        replay = run_engine(sc.config, "actions", "retry", "--all-failed")
        assert replay.returncode == 0, replay.stderr
        replayed = verify(
            "5b after `engine actions retry`", database_url, webhook_receiver, inserted
        )
    finally:
        sc.stop_all()
    assert replayed.duplicates == 0 and replayed.deliveries == len(firings)
    outcome.extra = {"attempts_each": attempts, "dead_letters": len(firings)}
    outcome.report()
    replayed.report()


# -- 6. a long-running transaction holds the gap-safe cursor back -----------------------------


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_long_transaction_lag_is_visible_then_caught_up(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    port = free_port()
    sc = Scenario(
        tmp_path,
        database_url,
        redis_url,
        webhook_receiver,
        extra={"http": {"listen": f"127.0.0.1:{port}"}},
    )
    before, during = plan_events(5), plan_events(20)
    sc.start("run")
    sc.start("worker")
    blocker = psycopg.connect(database_url)
    try:
        sc.wait_rules_loaded()
        Inserter(database_url, before).run()
        wait_until(lambda: cursor_events(database_url) == 5, what="the first events")
        # An open transaction with an xid, as a slow indexer or a forgotten psql would hold.
        blocker_pid = blocker.info.backend_pid
        blocker.execute("SELECT pg_current_xact_id()")
        Inserter(database_url, during).run()  # committed, but after the blocker began
        time.sleep(2.0)
        assert cursor_events(database_url) == 5  # held back: these could hide a gap

        status = run_engine(sc.config, "status", "--json")
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert doc["cursors"][0]["pending_events"] == 20
        assert doc["oldest_transaction"]["pid"] == blocker_pid
        text = run_engine(sc.config, "status").stdout
        assert f"pid {blocker_pid}" in text
        url = f"http://127.0.0.1:{port}/metrics"
        metrics = urllib.request.urlopen(url, timeout=10).read().decode()
        assert _metric(metrics, "engine_lag_events") == 20
        assert _metric(metrics, "engine_oldest_transaction_pid") == blocker_pid
        blocked_s = _metric(metrics, "engine_oldest_transaction_seconds")
        assert blocked_s is not None and blocked_s >= 2

        blocker.rollback()  # ends: the engine catches up at once
        released = time.monotonic()
        wait_until(lambda: cursor_events(database_url) == 25, timeout=10, what="catching up")
        catch_up_s = time.monotonic() - released
        outcome = verify("6 long transaction", database_url, webhook_receiver, before + during)
        metrics = urllib.request.urlopen(url, timeout=10).read().decode()
        assert _metric(metrics, "engine_lag_events") == 0
    finally:
        blocker.close()
        sc.stop_all()
    outcome.extra = {
        "held_back": 20,
        "blocker_pid": blocker_pid,
        "catch_up_s": round(catch_up_s, 2),
    }
    outcome.report()


# -- 7. two `engine run`: one evaluates, the standby takes over ------------------------------


def _standby_takeover(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    receiver: WebhookReceiver,
    *,
    n_events: int,
    rounds: int,
) -> None:
    sc = Scenario(tmp_path, database_url, redis_url, receiver)
    events = plan_events(n_events)
    sc.start("worker")
    leader = sc.start("run")
    sc.wait_rules_loaded()
    wait_until(lambda: "leader: evaluating" in leader.output(), what="a leader")
    standby = sc.start("run")
    wait_until(lambda: "standby" in standby.output(), what="the second engine to stand by")
    inserter = Inserter(database_url, events, per_tx=2, pause_s=0.03)
    inserter.start()
    takeovers = []
    try:
        for _ in range(rounds):
            time.sleep(1.0)
            assert "leader: evaluating" not in standby.output()  # only one evaluates
            leader.kill()
            killed = time.monotonic()
            wait_until(
                lambda p=standby: "leader: evaluating" in p.output(),
                timeout=10,
                interval=0.05,
                what="the standby to take over",
            )
            takeovers.append(round(time.monotonic() - killed, 2))
            leader, standby = standby, sc.start("run")
            wait_until(lambda p=standby: "standby" in p.output(), what="a new standby")
        inserted = inserter.join_checked()
        outcome = verify("7 standby takeover", database_url, receiver, inserted)
    finally:
        sc.stop_all()
    assert max(takeovers) < 5, takeovers
    outcome.extra = {"takeover_s": takeovers}
    outcome.report()


def test_standby_takes_over_when_the_leader_is_killed(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    _standby_takeover(tmp_path, database_url, redis_url, webhook_receiver, n_events=100, rounds=1)


@pytest.mark.faults
def test_standby_takes_over_repeatedly(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    _standby_takeover(tmp_path, database_url, redis_url, webhook_receiver, n_events=400, rounds=5)


# -- servers of our own: the session's are shared with other tests, never stopped -----------


@pytest.fixture
def own_dir() -> Iterator[Path]:
    """A directory for this test's servers, traversable by the postgres user; a killed
    session's leftovers are found by conftest through owner.pid like the session stack."""
    path = Path(tempfile.mkdtemp(prefix="engine-tests-faults-", dir="/tmp"))
    path.chmod(0o755)
    (path / "owner.pid").write_text(f"{os.getpid()}\n")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def own_postgres(own_dir: Path) -> Iterator[tuple[PostgresServer, str]]:
    from engine.migrate import apply_migrations

    server = PostgresServer(own_dir / "postgres", fast_unsafe=True)
    server.start()
    try:
        dsn = server.create_database("engine")
        apply_migrations(dsn)
        yield server, dsn
    finally:
        server.stop()


@pytest.fixture
def own_redis(own_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(own_dir / "redis", persistence=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- 3. PostgreSQL restarted under the engine and the workers --------------------------------


def _postgres_restarts(
    tmp_path: Path,
    server: PostgresServer,
    dsn: str,
    redis_url: str,
    receiver: WebhookReceiver,
    *,
    n_events: int,
    restarts: int,
    down_s: float,
) -> None:
    sc = Scenario(tmp_path, dsn, redis_url, receiver)
    events = plan_events(n_events)
    sc.start("run")
    sc.start("worker")
    sc.wait_rules_loaded()
    inserter = Inserter(dsn, events, per_tx=2, pause_s=0.03)
    inserter.start()
    try:
        for _ in range(restarts):
            time.sleep(1.0)
            if down_s:
                server.stop(mode="fast")
                time.sleep(down_s)
                server.start()
            else:
                server.restart()  # pg_ctl stop -m fast, then start on the same port
        inserted = inserter.join_checked()
        outcome = verify("3 postgres restart", dsn, receiver, inserted, timeout=90)
        alive = all(p.alive() for p in sc.processes)
    finally:
        sc.stop_all()
    assert alive, "a process died with the database"
    outcome.extra = {"restarts": restarts, "down_s": down_s, "inserter_retries": inserter.retries}
    outcome.report()


def test_postgres_restart_while_running(
    tmp_path: Path,
    own_postgres: tuple[PostgresServer, str],
    redis_url: str,
    webhook_receiver: WebhookReceiver,
) -> None:
    server, dsn = own_postgres
    _postgres_restarts(
        tmp_path, server, dsn, redis_url, webhook_receiver, n_events=90, restarts=1, down_s=0
    )


@pytest.mark.faults
def test_postgres_down_for_a_while_repeatedly(
    tmp_path: Path,
    own_postgres: tuple[PostgresServer, str],
    redis_url: str,
    webhook_receiver: WebhookReceiver,
) -> None:
    server, dsn = own_postgres
    _postgres_restarts(
        tmp_path, server, dsn, redis_url, webhook_receiver, n_events=400, restarts=4, down_s=3
    )


# -- 4. Redis stopped, then back (with its data, or empty) ------------------------------------


def _redis_outage(
    tmp_path: Path,
    database_url: str,
    server: RedisServer,
    receiver: WebhookReceiver,
    *,
    n_events: int,
    down_s: float,
    empty: bool,
) -> None:
    sc = Scenario(tmp_path, database_url, server.url(), receiver)
    events = plan_events(n_events)
    sc.start("run")
    sc.start("worker")
    sc.wait_rules_loaded()
    inserter = Inserter(database_url, events, per_tx=2, pause_s=0.03)
    inserter.start()
    try:
        time.sleep(1.0)
        server.stop()
        stopped_at = cursor_events(database_url)
        time.sleep(down_s)
        # The engine went on evaluating and committing; the new rows wait, 'queued'.
        during = cursor_events(database_url) - stopped_at
        queued = query_value(
            database_url, "SELECT count(*) FROM action_results WHERE status = 'queued'"
        )
        if empty:  # Redis comes back without its data: every job in it is gone
            shutil.rmtree(server.datadir)
        server.start()
        inserted = inserter.join_checked()
        name = f"4 redis down {down_s:g}s, back {'empty' if empty else 'with its data'}"
        outcome = verify(name, database_url, receiver, inserted, timeout=90)
        alive = [p.args[-1] for p in sc.processes if not p.alive()]
    finally:
        sc.stop_all()
    assert during > 0, "the engine stopped evaluating while Redis was down"
    assert queued > 0
    assert not alive, f"died with Redis: {alive}"
    outcome.extra = {"evaluated_while_down": during, "queued_while_down": queued}
    outcome.report()


def test_redis_outage_with_persistence(
    tmp_path: Path, database_url: str, own_redis: RedisServer, webhook_receiver: WebhookReceiver
) -> None:
    _redis_outage(
        tmp_path, database_url, own_redis, webhook_receiver, n_events=100, down_s=2, empty=False
    )


def test_redis_comes_back_empty(
    tmp_path: Path, database_url: str, own_redis: RedisServer, webhook_receiver: WebhookReceiver
) -> None:
    _redis_outage(
        tmp_path, database_url, own_redis, webhook_receiver, n_events=100, down_s=2, empty=True
    )


@pytest.mark.faults
def test_redis_long_outage(
    tmp_path: Path, database_url: str, own_redis: RedisServer, webhook_receiver: WebhookReceiver
) -> None:
    _redis_outage(
        tmp_path, database_url, own_redis, webhook_receiver, n_events=400, down_s=8, empty=False
    )


# -- hostile input: event rows ----------------------------------------------------------------

HOSTILE_RULES = """
rules:
  - id: hostile-registered
    description: templates over fields that may be anything
    on: {{registry: identity, event_type: Registered}}
    actions:
      - rest:
          url: {url}/hooks/registered
          body: {{uri_len: "{{{{ event.token_uri | length }}}}", agent: "{{{{ event.agent_id }}}}",
                  value: "{{{{ event.value }}}}"}}
        retry: {{attempts: 2, backoff: 1s, max_backoff: 2s}}
  - id: hostile-value
    description: a comparison over a NUMERIC that may be huge, NaN or infinite
    on: {{registry: reputation, event_type: NewFeedback}}
    where: {{value: {{gt: 0}}}}
    actions:
      - rest:
          url: {url}/hooks/value
          body: {{value: "{{{{ event.value }}}}"}}
        retry: {{attempts: 2, backoff: 1s, max_backoff: 2s}}
"""

MB = 1 << 20
I64_MAX, I64_MIN, I32_MAX, I32_MIN = 2**63 - 1, -(2**63), 2**31 - 1, -(2**31)


def _hostile_rows() -> list[dict[str, object]]:
    """Rows an indexer could write: every column the table allows, at its extremes."""
    block = random.randint(10**9, 10**12)
    now = int(time.time())
    rows: list[dict[str, object]] = [
        {"registry": "reputation", "event_type": "NewFeedback"},  # nulls everywhere
        {"registry": "identity", "event_type": "Registered"},
        {"registry": "validation", "event_type": "ValidationResponse"},
        {
            "registry": "reputation",
            "event_type": "NewFeedback",
            "agent_id": 1,
            "score": 5,
            "tag1": "x" * MB,
            "tag2": "é" * (MB // 2),
            "client_address": "0x" + "a" * MB,
        },
        {"registry": "identity", "event_type": "Registered", "agent_id": 2, "token_uri": "u" * MB},
        {
            "registry": "reputation",
            "event_type": "NewFeedback",
            "agent_id": I64_MAX,
            "score": I32_MAX,
            "value": "1" + "0" * 1000,
            "value_decimals": I32_MAX,
            "feedback_index": I64_MIN,
            "block_number": -1,
            "timestamp": I64_MAX,
        },
        {
            "registry": "reputation",
            "event_type": "NewFeedback",
            "agent_id": I64_MIN,
            "score": I32_MIN,
            "value": "NaN",
            "timestamp": 0,
        },
        {
            "registry": "reputation",
            "event_type": "NewFeedback",
            "agent_id": 3,
            "value": "-Infinity",
            "timestamp": I64_MIN,
        },
        {
            "registry": "reputation",
            "event_type": "NewFeedback",
            "agent_id": 4,
            "value": "Infinity",
            "value_decimals": I32_MIN,
        },
        {
            "registry": "identity",
            "event_type": "Registered",
            "agent_id": 5,
            "value": "NaN",
            "token_uri": "\x01\x7f\u202e\U0001f600",
        },
        {
            "registry": "reputation",
            "event_type": "NewFeedback",
            "agent_id": 6,
            "value": "0." + "0" * 999 + "1",
        },
        {"registry": "nonsense", "event_type": "Weird", "agent_id": 7},
        {"registry": "r" * 2000, "event_type": ""},  # the (registry, event_type) index caps it,
        {"registry": "identity", "event_type": "\u0001" * 1000},
    ]
    for i, row in enumerate(rows):
        row.setdefault("timestamp", now)
        row.setdefault("block_number", block)
        row.update(
            id=f"{CHAIN_ID}-{block}-{i}",
            chain_id=CHAIN_ID,
            log_index=i,
            block_hash="0xb",
            transaction_hash="0xt",
        )
    return rows


def _insert_row(dsn: str, row: dict[str, object]) -> None:
    from psycopg import sql as pgsql

    columns = list(row)
    statement = pgsql.SQL("INSERT INTO events ({}) VALUES ({})").format(
        pgsql.SQL(", ").join(pgsql.Identifier(c) for c in columns),
        pgsql.SQL(", ").join(pgsql.Placeholder() for _ in columns),
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, [row[c] for c in columns])


def test_hostile_event_rows_neither_crash_nor_stall(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    sc = Scenario(
        tmp_path,
        database_url,
        redis_url,
        webhook_receiver,
        attempts=2,
        extra_rules=HOSTILE_RULES.format(url=webhook_receiver.url),
    )
    engine = sc.start("run")
    sc.start("worker")
    rows = _hostile_rows()
    refused = 0
    try:
        sc.wait_rules_loaded()
        # Text PostgreSQL cannot store never reaches the engine: the driver refuses it.
        for bad in ("\udc80 lone surrogate", "nul \x00 byte"):
            with pytest.raises((UnicodeEncodeError, psycopg.DataError)):
                _insert_row(database_url, {**rows[0], "id": "bad", "tag1": bad})
            refused += 1
        for row in rows:
            _insert_row(database_url, row)
        normal = plan_events(3)
        Inserter(database_url, normal).run()
        total = len(rows) + len(normal)
        wait_until(
            lambda: cursor_events(database_url) == total,
            timeout=30,
            what=f"all {total} events evaluated (no stall)",
        )
        # The normal events after the hostile ones fire and are delivered.
        for event in normal:
            wait_until(
                lambda e=event: (
                    query_value(
                        database_url,
                        "SELECT status FROM action_results WHERE event_id = $1"
                        " AND trigger_id = 'count-per-agent'",
                        e["id"],
                    )
                    == "success"
                ),
                timeout=30,
                what=f"the firing of {event['id']}",
            )
        wait_until(
            lambda: (
                not query_value(
                    database_url,
                    "SELECT count(*) FROM action_results"
                    " WHERE status IN ('queued', 'running', 'retrying')",
                )
            ),
            timeout=30,
            what="every action to end",
        )
        time.sleep(1.5)  # a stalled or crash-looping engine would show it now
        log = engine.output()
        assert engine.alive()
        assert cursor_events(database_url) == total
    finally:
        sc.stop_all()
    statuses = Counter(r[0] for r in query_all(database_url, "SELECT status FROM action_results"))
    per_rule = Counter(
        r[0] for r in query_all(database_url, "SELECT trigger_id FROM action_results")
    )
    # hostile-value (value > 0) fires for 10**1000 only: NUMERIC reaches rules as a JSON
    # number, so Infinity/NaN are no number and 1e-1000 becomes 0.0.
    assert per_rule == {
        # 7 hostile NewFeedback + 3 normal, less the one stamped at I64_MAX: an event far
        # ahead of the clock takes no place in a window (rules.md, "Event time")
        "count-per-agent": 9,
        "low-score": 3,  # score 5, score -2**31, and the normal score 0
        "hostile-registered": 3,
        "hostile-value": 1,
    }, per_rule
    [(failed_rule, failed_error)] = query_all(
        database_url,
        "SELECT trigger_id, error_message FROM action_results WHERE status = 'failed'",
    )
    assert failed_rule == "hostile-registered" and "NoneType" in failed_error  # null | length
    # Every NewFeedback counted, whatever its fields, but the one stamped far in the future.
    feedback = sum(
        1 for r in rows if r["event_type"] == "NewFeedback" and r["timestamp"] != I64_MAX
    ) + len(normal)
    counted = query_value(
        database_url,
        "SELECT count(*) FROM action_results WHERE trigger_id = 'count-per-agent'",
    )
    assert counted == feedback
    assert "database error; retrying" not in log
    assert "Traceback" not in log
    failures = re.findall(r"event could not be evaluated\s+event_id=(\S+)", log)
    assert all(n == 1 for n in Counter(failures).values()), Counter(failures)
    print(
        f"\n[faults] hostile rows: events={total} (hostile {len(rows)}, refused by the "
        f"driver {refused}) actions={dict(statuses)} per rule={dict(per_rule)} "
        f"evaluation_failures_logged="
        f"{len(failures)} (each once)"
    )


# -- hostile input: templates that try to escape the sandbox ---------------------------------

_ESCAPES = {
    "t-mro": "{{ ''.__class__.__mro__ }}",
    "t-globals": "{{ cycler.__init__.__globals__ }}",
    "t-range": "{% for i in range(10**9) %}x{% endfor %}",
    "t-nested": (
        "{% for i in range(event.agent_id) %}{% for j in range(event.agent_id) %}"
        "{% for k in range(event.agent_id) %}x{% endfor %}{% endfor %}{% endfor %}"
    ),
    "t-spin": (  # no output at all: only the render's time budget stops it
        "{% for i in range(event.agent_id) %}{% for j in range(event.agent_id) %}"
        "{% for k in range(event.agent_id) %}{% endfor %}{% endfor %}{% endfor %}"
    ),
    "t-attr": "{{ event | attr('__class__') }}",
    # (``10 ** 10 ** 10`` is no escape: the sandbox bounds it and it renders 10**100.)
    "t-repeat": "{{ 'x' * 10 ** 9 }}",
}


def _escape_rules(url: str) -> str:
    out = ["rules:"]
    for rule_id, template in {**_ESCAPES, "t-good": "{{ event.agent_id }}"}.items():
        body = json.dumps({"a": template})
        out += [
            f"  - id: {rule_id}",
            "    on: {registry: identity, event_type: Registered}",
            "    actions:",
            f"      - rest: {{url: '{url}/hooks/{rule_id}', body: {body}}}",
            "        retry: {attempts: 3, backoff: 1s, max_backoff: 2s}",
        ]
    return "\n".join(out) + "\n"


def test_sandbox_escapes_fail_that_action_only(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    rules = _escape_rules(webhook_receiver.url)
    sc = Scenario(tmp_path, database_url, redis_url, webhook_receiver, extra_rules=rules)
    checked = run_engine(sc.config, "check", timeout=30)
    sc.start("run")
    sc.start("worker")
    try:
        sc.wait_rules_loaded()
        started = time.monotonic()
        _insert_row(
            database_url,
            {
                "id": f"{CHAIN_ID}-1-0",
                "chain_id": CHAIN_ID,
                "block_number": 1,
                "block_hash": "0xb",
                "transaction_hash": "0xt",
                "log_index": 0,
                "registry": "identity",
                "event_type": "Registered",
                "agent_id": 100_000,
                "timestamp": int(time.time()),
            },
        )
        wait_until(
            lambda: (
                query_value(
                    database_url,
                    "SELECT count(*) FROM action_results WHERE status IN ('success', 'failed')",
                )
                == len(_ESCAPES) + 1
            ),
            timeout=60,
            what="every action to end",
        )
        elapsed = time.monotonic() - started
    finally:
        sc.stop_all()
    rows = {
        r[0]: r[1:]
        for r in query_all(
            database_url, "SELECT trigger_id, status, attempts, error_message FROM action_results"
        )
    }
    assert rows.pop("t-good")[0] == "success"
    for rule_id, (status, attempts, error) in rows.items():
        assert (status, attempts) == ("failed", 1), (rule_id, status, attempts, error)
        assert error and len(error) < 2100, (rule_id, error)
    delivered = {r.path for r in webhook_receiver.requests}
    assert delivered == {"/hooks/t-good"}  # nothing rendered by an escape was ever sent
    print(
        f"\n[faults] sandbox escapes: {len(rows)} actions failed permanently after 1 attempt, "
        f"1 good action delivered, all ended in {elapsed:.1f}s; engine check exit "
        f"{checked.returncode}"
    )
    for rule_id, (_, _, error) in sorted(rows.items()):
        print(f"    {rule_id}: {error[:150]}")


# -- hostile input: webhook endpoints ---------------------------------------------------------


def _endpoint_rules(base: str, paths: dict[str, tuple[str, str]]) -> str:
    out = ["rules:"]
    for rule_id, (path, timeout) in paths.items():
        out += [
            f"  - id: {rule_id}",
            "    on: {registry: identity, event_type: Registered}",
            "    actions:",
            f"      - rest: {{url: '{base}{path}', timeout: {timeout}, body: {{a: 1}}}}",
            "        retry: {attempts: 1}",
        ]
    return "\n".join(out) + "\n"


def _registered(dsn: str) -> None:
    _insert_row(
        dsn,
        {
            "id": f"{CHAIN_ID}-2-0",
            "chain_id": CHAIN_ID,
            "block_number": 2,
            "block_hash": "0xb",
            "transaction_hash": "0xt",
            "log_index": 0,
            "registry": "identity",
            "event_type": "Registered",
            "agent_id": 1,
            "timestamp": int(time.time()),
        },
    )


def _ended(dsn: str, n: int) -> dict[str, tuple[object, ...]]:
    wait_until(
        lambda: (
            query_value(
                dsn, "SELECT count(*) FROM action_results WHERE status IN ('success', 'failed')"
            )
            == n
        ),
        timeout=60,
        what=f"{n} actions to end",
    )
    return {
        r[0]: r[1:]
        for r in query_all(
            dsn,
            "SELECT trigger_id, status, duration_ms, error_message, response_data"
            " FROM action_results",
        )
    }


def test_hostile_endpoints_are_bounded(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    with HostileServer() as server:
        paths = {"trickle": ("/trickle", "2s"), "huge": ("/huge", "10s"), "loop": ("/loop", "5s")}
        rules = _endpoint_rules(server.url, paths)
        sc = Scenario(tmp_path, database_url, redis_url, webhook_receiver, extra_rules=rules)
        sc.start("run")
        sc.start("worker")
        try:
            sc.wait_rules_loaded()
            _registered(database_url)
            rows = _ended(database_url, 3)
        finally:
            sc.stop_all()
        sent_huge = server.sent["/huge"]
        hits = dict(server.hits)
    status, ms, error, _ = rows["trickle"]
    assert status == "failed" and "timed out" in error and ms < 4000, rows["trickle"]
    status, ms, error, data = rows["huge"]
    assert status == "success" and data["body_truncated"] is True and ms < 10000, (status, ms)
    assert sent_huge < 256 * MB  # the worker stopped reading at its limit, not at 1 GB
    status, ms, error, _ = rows["loop"]
    assert status == "failed" and "too many redirects" in error, rows["loop"]
    assert hits["/loop"] == 6  # the request and five redirects, no more
    print(
        f"\n[faults] hostile endpoints: trickle failed after {rows['trickle'][1]} ms "
        f"({rows['trickle'][2]}); 1 GB body: kept {len(data['body'])} bytes, "
        f"server wrote {sent_huge // MB} MB before the worker hung up, "
        f"{rows['huge'][1]} ms; redirect loop: {hits['/loop']} requests then "
        f"'{rows['loop'][2]}'"
    )


def test_guard_on_refuses_private_targets_and_redirects(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    # With the guard ON, 127.0.0.1 is itself private: the refusal happens before any
    # connection, so the server must see nothing at all, whichever way it was reached.
    with HostileServer() as server:
        rules = _endpoint_rules(
            server.url,
            {"to-private-redirect": ("/private", "5s"), "direct-loopback": ("/loop", "5s")},
        )
        rules += _endpoint_rules(
            "http://169.254.169.254", {"metadata": ("/latest/meta-data/", "5s")}
        ).removeprefix("rules:\n")
        sc = Scenario(
            tmp_path,
            database_url,
            redis_url,
            webhook_receiver,
            extra_rules=rules,
            extra={"network": {"allow_private": False}},
        )
        sc.start("run")
        sc.start("worker")
        try:
            sc.wait_rules_loaded()
            _registered(database_url)
            rows = _ended(database_url, 3)
        finally:
            sc.stop_all()
        hits = sum(server.hits.values())
    for rule_id in ("to-private-redirect", "direct-loopback", "metadata"):
        status, _, error, _ = rows[rule_id]
        assert status == "failed" and "refused" in error, (rule_id, rows[rule_id])
    assert hits == 0
    print(
        "\n[faults] guard on: 3 private targets refused before connecting, "
        f"server hits={hits}: " + "; ".join(f"{k}: {v[2]}" for k, v in sorted(rows.items()))
    )


# -- hostile input: rule files --------------------------------------------------------------


def _rule_head(rule_id: str) -> str:
    return (
        f"rules:\n  - id: {rule_id}\n"
        "    on: {registry: reputation, event_type: NewFeedback}\n"
        "    actions: [{rest: {url: 'http://127.0.0.1:1/x', body: {a: 1}}}]\n"
    )


def _huge_file() -> str:
    rules = ["rules:"]
    i = size = 0
    while size < 10 * MB:
        rules.append(
            f"  - id: r{i}\n    on: {{registry: reputation, event_type: NewFeedback}}\n"
            f"    where: {{score: {{lt: {i % 100}}}}}\n"
            "    actions: [{rest: {url: 'http://127.0.0.1:1/x', body: {a: 1}}}]"
        )
        size += len(rules[-1])
        i += 1
    return "\n".join(rules) + "\n"


def _many_conditions() -> str:
    items = ", ".join(f"{{score: {{eq: {i}}}}}" for i in range(10_000))
    return _rule_head("many") + f"    where: {{any: [{items}]}}\n"


def _deep(kind: str) -> str:
    # 1,000 levels, alternating not / all / any, in flow style on one line.
    node = "{score: {lt: 5}}"
    for level in range(1000):
        op = ("not", "all", "any")[level % 3] if kind == "mixed" else kind
        node = f"{{{op}: {node}}}" if op == "not" else f"{{{op}: [{node}]}}"
    return _rule_head("deep") + f"    where: {node}\n"


def _deep_block() -> str:
    # 1,000 levels of block-style `not:` mappings, one per line.
    lines = [f"{'  ' * (level + 2)}not:" for level in range(1000)]
    lines.append(f"{'  ' * 1002}score: {{lt: 5}}")
    return _rule_head("deep") + "    where:\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("case", "make", "expect"),
    [
        ("10 MB file", _huge_file, "larger than"),
        ("10,000 conditions", _many_conditions, "matchers"),
        ("1,000-deep not", lambda: _deep("not"), "depth"),
        ("1,000-deep any/all/not", lambda: _deep("mixed"), "depth"),
        ("1,000-deep not, block style", _deep_block, "depth"),
    ],
)
def test_monster_rule_files_get_a_clear_error_quickly(
    tmp_path: Path, database_url: str, redis_url: str, case: str, make: object, expect: str
) -> None:
    assert callable(make)
    rules = tmp_path / "monster.yaml"
    rules.write_text(make(), encoding="utf-8")
    config = write_config(
        tmp_path, database_url=database_url, redis_url=redis_url, rules=[str(rules)]
    )
    started = time.monotonic()
    done = run_engine(config, "check", timeout=60)
    elapsed = time.monotonic() - started
    size = rules.stat().st_size
    assert done.returncode == 1, (done.stdout, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    assert "monster.yaml" in done.stderr and expect in done.stderr, done.stderr[-2000:]
    assert elapsed < 30
    first = done.stderr.strip().splitlines()[0]
    print(f"\n[faults] rule file, {case} ({size // 1024} KiB): exit 1 in {elapsed:.1f}s: {first}")


def test_job_left_started_by_a_lost_worker_is_dispatched_again(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    """Scenario 4's race made deterministic: a worker dequeued jobs (RQ marks them
    'started') and lost Redis or died before claiming their rows.  The rows are still
    'queued'; the sweep must not trust RQ's 'started' for them."""
    import redis as redis_lib

    sc = Scenario(tmp_path, database_url, redis_url, webhook_receiver)
    events = plan_events(3)
    sc.start("run")
    try:
        sc.wait_rules_loaded()
        Inserter(database_url, events).run()
        n = len(Expected.of(events).firings)
        ids = wait_until(
            lambda: (
                [r[0] for r in query_all(database_url, "SELECT id FROM action_results")]
                if query_value(database_url, "SELECT count(*) FROM action_results") == n
                else None
            ),
            what="the queued rows",
        )
        client = redis_lib.Redis.from_url(redis_url)
        queue = queue_key(WorkerTunables().queue)
        wait_until(lambda: client.llen(queue) == n, what="the jobs")
        for action_id in ids:  # dequeued by a worker that then vanished
            client.lrem(queue, 0, job_id(action_id))
            client.hset(job_key(action_id), "status", "started")
        client.close()
        sc.start("worker")
        outcome = verify(
            "4c job left 'started'", database_url, webhook_receiver, events, timeout=20
        )
    finally:
        sc.stop_all()
    outcome.report()

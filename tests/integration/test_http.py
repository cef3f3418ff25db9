"""/metrics, /healthz and /readyz of a real ``engine run``.

The readiness test stops PostgreSQL, so it runs its own server: the session's one is
shared by every other test.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.localstack import PostgresServer, free_port
from engine.migrate import apply_migrations
from tests.fakes.webhook import WebhookReceiver
from tests.processes import engine_processes, insert_events, query_value, wait_until, write_config

RULE = """
rules:
  - id: low-score
    on: {registry: reputation, event_type: NewFeedback}
    where: {score: {lt: 50}}
    actions:
      - rest: {url: "URL", body: {a: 1}}
        retry: {attempts: 1}
"""


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


def metric(text: str, name: str, labels: str = "") -> float | None:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return None if match is None else float(match.group(1))


def engine_config(
    tmp_path: Path, database_url: str, redis_url: str, port: int, url: str = "http://127.0.0.1:9/"
) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.replace("URL", url), encoding="utf-8")
    return write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=str(rules),
        extra={"http": {"listen": f"127.0.0.1:{port}"}},
    )


def test_metrics_and_health_of_a_running_engine(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = engine_config(tmp_path, database_url, redis_url, port, webhook_receiver.url + "/m")
    with engine_processes(config, tmp_path, ["run"]) as (engine,):
        wait_until(lambda: get(f"{base}/healthz")[0] == 200, what="/healthz")
        wait_until(lambda: get(f"{base}/readyz")[0] == 200, what="/readyz")
        assert "notify round trip" in get(f"{base}/readyz")[1]

        insert_events(
            database_url,
            [
                {"registry": "reputation", "event_type": "NewFeedback", "agent_id": 1, "score": 5},
                {"registry": "reputation", "event_type": "NewFeedback", "agent_id": 2, "score": 90},
            ],
        )
        wait_until(
            lambda: metric(get(f"{base}/metrics")[1], "engine_events_processed_total") == 2,
            what="two events counted",
        )
        _, text = get(f"{base}/metrics")
        assert metric(text, "engine_rule_firings_total") == 1
        assert metric(text, "engine_rules_loaded") == 1
        assert metric(text, "engine_rule_load_errors") == 0
        assert metric(text, "engine_leader") == 1
        assert metric(text, "engine_lag_events") == 0
        assert metric(text, "engine_listener_reconnects_total") == 0
        assert metric(text, "engine_actions", '{status="queued",type="rest"}') == 1
        assert "engine_action_duration_seconds_count" not in text  # nothing finished yet

        with engine_processes(config, tmp_path, ["worker"]):
            webhook_receiver.wait_for(1, timeout=20)
            success = '{status="success",type="rest"}'
            wait_until(
                lambda: (
                    metric(
                        get(f"{base}/metrics")[1], "engine_action_duration_seconds_count", success
                    )
                    == 1
                ),
                what="the finished action in the histogram",
            )
        _, text = get(f"{base}/metrics")
        assert "# TYPE engine_action_duration_seconds histogram" in text
        assert metric(text, "engine_actions", success) == 1
        inf = '{le="+Inf",status="success",type="rest"}'
        assert metric(text, "engine_action_duration_seconds_bucket", inf) == 1
        slowest = '{le="60.0",status="success",type="rest"}'
        assert metric(text, "engine_action_duration_seconds_bucket", slowest) == 1
        assert (metric(text, "engine_action_duration_seconds_sum", success) or 0) < 60

        assert get(f"{base}/nowhere")[0] == 404
        assert engine.alive()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, which it may stop and start."""
    directory = Path(tempfile.mkdtemp(prefix="engine-http-pg-", dir="/tmp"))
    directory.chmod(0o755)
    server = PostgresServer(directory / "postgres", fast_unsafe=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_readyz_fails_while_postgres_is_stopped_and_recovers(
    tmp_path: Path, own_postgres: PostgresServer, redis_url: str
) -> None:
    database_url = own_postgres.create_database("engine")
    apply_migrations(database_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = engine_config(tmp_path, database_url, redis_url, port)
    with engine_processes(config, tmp_path, ["run"]) as (engine,):
        wait_until(lambda: get(f"{base}/readyz")[0] == 200, what="ready at first")

        own_postgres.stop()
        status, body = get(f"{base}/readyz")
        assert status == 503, body
        assert get(f"{base}/healthz")[0] == 200  # alive, only not ready
        metrics_status, text = get(f"{base}/metrics")
        assert metrics_status == 200  # counters still served while the database is away
        assert metric(text, "engine_events_processed_total") == 0

        own_postgres.start()
        wait_until(lambda: get(f"{base}/readyz")[0] == 200, timeout=30, what="ready again")
        insert_events(
            database_url,
            [{"registry": "reputation", "event_type": "NewFeedback", "agent_id": 1, "score": 5}],
        )
        wait_until(
            lambda: query_value(database_url, "SELECT count(*) FROM action_results") == 1,
            what="evaluation after the outage",
        )
        assert engine.alive()

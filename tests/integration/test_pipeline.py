"""The pipeline end to end, with the CLI processes started as a user would:
events INSERT -> engine run -> RQ -> engine worker -> webhook POST -> action_results."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg

from tests.fakes.webhook import WebhookReceiver
from tests.processes import (
    engine_processes,
    insert_events,
    query_all,
    query_value,
    wait_until,
    write_config,
)

RULE = """
rules:
  - id: low-score
    description: a feedback score under 50
    on: {{registry: reputation, event_type: NewFeedback}}
    where:
      score: {{lt: 50}}
    actions:
      - rest:
          url: {url}/hooks/low-score
          body:
            agent: "{{{{ event.agent_id }}}}"
            score: "{{{{ event.score }}}}"
            text: "agent {{{{ event.agent_id }}}} scored {{{{ event.score }}}}"
        retry: {{attempts: 1}}
"""


def feedback(agent_id: int, score: int | None) -> dict[str, object]:
    return {
        "registry": "reputation",
        "event_type": "NewFeedback",
        "agent_id": agent_id,
        "score": score,
        "client_address": "0xAbC0000000000000000000000000000000000001",
    }


def setup_engine(
    tmp_path: Path, database_url: str, redis_url: str, receiver: WebhookReceiver
) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.format(url=receiver.url), encoding="utf-8")
    return write_config(tmp_path, database_url=database_url, redis_url=redis_url, rules=str(rules))


def test_insert_leads_to_post_and_success_row(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = setup_engine(tmp_path, database_url, redis_url, webhook_receiver)
    with engine_processes(config, tmp_path, ["run"], ["worker"]) as (engine, worker):
        wait_until(
            lambda: query_value(database_url, "SELECT count(*) FROM triggers"), what="rules loaded"
        )
        # Any client: a plain SQL INSERT that names none of the engine's columns.
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                """INSERT INTO events (id, chain_id, block_number, block_hash,
                                       transaction_hash, log_index, registry, event_type,
                                       agent_id, "timestamp", score)
                   VALUES ('84532-7-0', 84532, 7, '0xb', '0xt', 0, 'reputation', 'NewFeedback',
                           42, 1764000000, 12),
                          ('84532-7-1', 84532, 7, '0xb', '0xt', 1, 'reputation', 'NewFeedback',
                           43, 1764000000, 90)"""
            )
        [request] = webhook_receiver.wait_for(1, timeout=20)
        assert request.method == "POST"
        assert request.path == "/hooks/low-score"
        # a leaf that is one expression keeps its JSON type
        assert request.json == {"agent": 42, "score": 12, "text": "agent 42 scored 12"}
        row = wait_until(
            lambda: query_all(
                database_url,
                "SELECT status, duration_ms, response_data, event_id, attempts FROM action_results"
                " WHERE status <> 'queued' AND status <> 'running'",
            ),
            what="the action_results row to finish",
        )
        status, duration_ms, response_data, event_id, attempts = row[0]
        assert (status, event_id, attempts) == ("success", "84532-7-0", 1)
        assert duration_ms is not None and duration_ms >= 0
        assert response_data["status"] == 200
        assert request.header("webhook-id") == str(
            query_value(database_url, "SELECT id FROM action_results")
        )
        time.sleep(0.5)
        assert len(webhook_receiver.requests) == 1  # the score-90 event did not match
        assert engine.alive() and worker.alive()


def test_backlog_is_evaluated_once_when_the_engine_starts(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = setup_engine(tmp_path, database_url, redis_url, webhook_receiver)
    insert_events(database_url, [feedback(agent_id=i, score=10) for i in range(500)])

    with engine_processes(config, tmp_path, ["run"], ["worker"], ["worker"]):
        webhook_receiver.wait_for(500, timeout=90)
        wait_until(
            lambda: (
                query_value(
                    database_url, "SELECT count(*) FROM action_results WHERE status = 'success'"
                )
                == 500
            ),
            timeout=30,
            what="500 successful rows",
        )
        time.sleep(1.0)  # anything doubled would show up now

    assert query_value(database_url, "SELECT count(*) FROM action_results") == 500
    assert query_value(database_url, "SELECT count(DISTINCT event_id) FROM action_results") == 500
    agents = sorted(r.json["agent"] for r in webhook_receiver.requests)
    assert agents == list(range(500))
    assert query_value(database_url, "SELECT events FROM engine_cursors") == 500


def test_listener_killed_while_events_arrive_loses_nothing(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = setup_engine(tmp_path, database_url, redis_url, webhook_receiver)
    total = 60
    with engine_processes(config, tmp_path, ["run"]) as (engine,):
        wait_until(
            lambda: query_value(
                database_url,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'engine-listener'",
            ),
            what="the listener to connect",
        )

        def inserter() -> None:
            for i in range(total):
                insert_events(database_url, [feedback(agent_id=1000 + i, score=1)])
                time.sleep(0.02)

        thread = threading.Thread(target=inserter)
        thread.start()
        killed = 0
        for _ in range(3):
            time.sleep(0.3)
            killed += query_value(
                database_url,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'engine-listener'",
            )
        thread.join()
        assert killed >= 1
        wait_until(
            lambda: query_value(database_url, "SELECT count(*) FROM action_results") >= total,
            timeout=20,
            what=f"{total} action rows",
        )
        wait_until(lambda: "listener reconnected" in engine.output(), what="a reconnect logged")
        assert engine.alive()

    assert query_value(database_url, "SELECT count(*) FROM action_results") == total
    assert query_value(database_url, "SELECT count(DISTINCT event_id) FROM action_results") == total


def test_failing_webhook_is_recorded_and_the_rest_goes_on(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = setup_engine(tmp_path, database_url, redis_url, webhook_receiver)
    webhook_receiver.set_behaviour(fail_first=1, fail_status=500)
    with engine_processes(config, tmp_path, ["run"], ["worker"]) as (engine, worker):
        insert_events(database_url, [feedback(agent_id=1, score=5)])
        wait_until(
            lambda: query_value(database_url, "SELECT status FROM action_results") == "failed",
            what="the 500 to be recorded",
        )
        insert_events(database_url, [feedback(agent_id=2, score=5)])
        wait_until(
            lambda: (
                query_value(
                    database_url, "SELECT count(*) FROM action_results WHERE status = 'success'"
                )
                == 1
            ),
            what="the next delivery to succeed",
        )
        assert engine.alive() and worker.alive()
    error, data = query_all(
        database_url,
        "SELECT error_message, response_data FROM action_results WHERE status = 'failed'",
    )[0]
    assert "500" in error
    assert data["status"] == 500


def test_null_and_odd_fields_do_not_fire_and_do_not_stop_the_engine(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = setup_engine(tmp_path, database_url, redis_url, webhook_receiver)
    with engine_processes(config, tmp_path, ["run"], ["worker"]) as (engine, _worker):
        insert_events(
            database_url,
            [
                feedback(agent_id=1, score=None),  # null never satisfies lt
                {"registry": "nonsense", "event_type": "Weird", "agent_id": None},
                {**feedback(agent_id=3, score=7), "tag1": "x" * 1_000_000},
                feedback(agent_id=4, score=8),
                {**feedback(agent_id=5, score=9), "value": "NaN"},  # jsonb has no NaN
            ],
        )
        requests = webhook_receiver.wait_for(3, timeout=20)
        assert sorted(r.json["agent"] for r in requests) == [3, 4, 5]
        assert engine.alive()
    assert query_value(database_url, "SELECT events FROM engine_cursors") == 5
    log = engine.output()
    assert log.count("unusual event row") == 2
    assert "unknown registry 'nonsense'" in log
    assert "tag1 is 1000000 characters" in log


def test_an_event_id_written_twice_fires_once_and_stalls_nothing(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = setup_engine(tmp_path, database_url, redis_url, webhook_receiver)
    replayed = {**feedback(agent_id=7, score=3), "id": "84532-99-0"}
    with engine_processes(config, tmp_path, ["run"], ["worker"]) as (engine, _worker):
        insert_events(database_url, [replayed])
        webhook_receiver.wait_for(1)
        # The indexer replays the same event (same id, a later created_at), then moves on.
        insert_events(database_url, [replayed, feedback(agent_id=8, score=4)])
        requests = webhook_receiver.wait_for(2)
        wait_until(
            lambda: query_value(database_url, "SELECT events FROM engine_cursors") == 3,
            what="all three rows evaluated",
        )
        time.sleep(0.5)
        assert engine.alive()
    assert sorted(r.json["agent"] for r in webhook_receiver.requests) == [7, 8]
    assert len(requests) == 2
    assert query_value(database_url, "SELECT count(*) FROM action_results") == 2


def test_a_row_whose_evaluation_cannot_be_recorded_is_skipped_not_retried_forever(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    # Stands for any failure that comes from a row's data (the database refuses what its
    # evaluation writes): retrying the batch would fail the same way forever.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE action_results ADD CONSTRAINT refuse_poison"
            " CHECK (event_id <> '84532-1-1')"
        )
    config = setup_engine(tmp_path, database_url, redis_url, webhook_receiver)
    rows = [{**feedback(agent_id=i, score=1), "id": f"84532-1-{i}"} for i in range(4)]
    with engine_processes(config, tmp_path, ["run"], ["worker"]) as (engine, _worker):
        insert_events(database_url, rows)
        requests = webhook_receiver.wait_for(3, timeout=20)
        wait_until(
            lambda: "event skipped: its evaluation could not be recorded" in engine.output(),
            what="the skip logged",
        )
        assert engine.alive()
    assert sorted(r.json["agent"] for r in requests) == [0, 2, 3]
    assert query_value(database_url, "SELECT events FROM engine_cursors") == 4
    assert "event_id=84532-1-1" in engine.output()

"""Reorgs after evaluation, end to end through `engine run` and `engine worker`: an event id
written again is not evaluated again (no second firing, no double count), a deleted
evaluated event sends its rule's on_retract actions once, also across kill -9."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from devkit.localstack import free_port
from tests.fakes.webhook import WebhookReceiver
from tests.integration.test_http import get, metric
from tests.processes import (
    engine_processes,
    query_all,
    query_value,
    run_engine,
    wait_until,
    write_config,
)

RULES = """
rules:
  - id: burst
    on: {{registry: reputation, event_type: NewFeedback}}
    per: agent_id
    when:
      count: {{within: 1h, at_least: 2}}
    actions:
      - rest:
          url: {url}/hooks/burst
          body: {{event: "{{{{ event.id }}}}", count: "{{{{ state.count }}}}"}}
        retry: {{attempts: 1}}
    on_retract:
      actions:
        - rest:
            url: {url}/hooks/retract
            body:
              event: "{{{{ event.id }}}}"
              block: "{{{{ event.block_hash }}}}"
              count: "{{{{ state.count }}}}"
              fired_at: "{{{{ fired_at }}}}"
              retracted_at: "{{{{ retracted_at }}}}"
          retry: {{attempts: 1}}
"""

NOW = int(time.time())


def insert_row(dsn: str, event_id: str, block_hash: str, agent_id: int = 7) -> None:
    """One NewFeedback row as an indexer writes it; ``event_id`` is chain-block-log."""
    chain, block, log_index = (int(part) for part in event_id.split("-"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO events (id, chain_id, block_number, block_hash, transaction_hash,
                                   log_index, registry, event_type, agent_id, "timestamp",
                                   score)
               VALUES (%s, %s, %s, %s, '0xt', %s, 'reputation', 'NewFeedback', %s, %s, 50)""",
            (event_id, chain, block, block_hash, log_index, agent_id, NOW),
        )


def execute(dsn: str, text: str, *params: object) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(text, params or None)  # type: ignore[arg-type]


def evaluated(dsn: str) -> int:
    """Rows the cursor has read (evaluated or recognised as rewrites)."""
    return int(query_value(dsn, "SELECT coalesce(sum(events), 0) FROM engine_cursors") or 0)


def wait_evaluated(dsn: str, n: int) -> None:
    wait_until(lambda: evaluated(dsn) >= n, what=f"{n} rows read by the cursor")


def setup(tmp_path: Path, dsn: str, redis_url: str, receiver: WebhookReceiver, **extra) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(url=receiver.url), encoding="utf-8")
    return write_config(tmp_path, database_url=dsn, redis_url=redis_url, rules=str(rules), **extra)


def reorgs(dsn: str) -> list[tuple[object, ...]]:
    return query_all(
        dsn,
        "SELECT event_id, kind, old_block_hash, new_block_hash, on_retract_queued"
        " FROM event_reorgs ORDER BY id",
    )


def test_rewrites_are_not_counted_and_a_retraction_is_sent_once(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    port = free_port()
    config = setup(
        tmp_path,
        database_url,
        redis_url,
        webhook_receiver,
        extra={"http": {"listen": f"127.0.0.1:{port}"}},
    )
    dsn = database_url
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        wait_until(lambda: query_value(dsn, "SELECT count(*) FROM triggers"), what="rules")
        insert_row(dsn, "8453-100-0", "0xa1")
        wait_evaluated(dsn, 1)
        # The indexer writes the same id again, from another block: a second count of it
        # would make 2 and fire.
        insert_row(dsn, "8453-100-0", "0xb1")
        wait_evaluated(dsn, 2)
        # ... and rewrites the row in place after evaluation: recorded, never evaluated.
        execute(dsn, "UPDATE events SET block_hash = '0xc1' WHERE block_hash = '0xa1'")
        wait_until(lambda: len(reorgs(dsn)) == 2, what="the in-place rewrite recorded")
        time.sleep(1.0)
        assert webhook_receiver.requests == []

        insert_row(dsn, "8453-101-0", "0xa2")  # the second event: count 2, fires
        [fired] = webhook_receiver.wait_for(1, timeout=20)
        assert fired.path == "/hooks/burst"
        assert fired.json == {"event": "8453-101-0", "count": 2}

        # A reorg removes the block of the event that fired, then writes it again.
        execute(dsn, "DELETE FROM events WHERE id = '8453-101-0'")
        requests = webhook_receiver.wait_for(2, timeout=20)
        retract = requests[1]
        assert retract.path == "/hooks/retract"
        assert retract.json["event"] == "8453-101-0"
        assert retract.json["block"] == "0xa2"
        assert retract.json["count"] == 2  # the firing's own context
        assert retract.json["fired_at"] < retract.json["retracted_at"]
        insert_row(dsn, "8453-101-0", "0xb2")
        wait_evaluated(dsn, 4)
        # Deleted again (the rewrite): that firing was already retracted.
        execute(dsn, "DELETE FROM events WHERE id = '8453-101-0'")
        wait_until(lambda: len(reorgs(dsn)) == 5, what="every reorg recorded")
        time.sleep(1.5)
        assert [r.path for r in webhook_receiver.requests] == ["/hooks/burst", "/hooks/retract"]
        assert reorgs(dsn) == [
            ("8453-100-0", "rewrite", "0xa1", "0xb1", 0),
            ("8453-100-0", "rewrite", "0xa1", "0xc1", 0),
            ("8453-101-0", "retraction", "0xa2", None, 1),
            ("8453-101-0", "rewrite", "0xa2", "0xb2", 0),
            ("8453-101-0", "retraction", "0xb2", None, 0),
        ]
        assert query_value(dsn, "SELECT count(*) FROM event_removals") == 0
        # The count window holds each event once: agent 7 has 2 (8453-100-0, 8453-101-0).
        state = query_value(dsn, "SELECT state::text FROM trigger_state WHERE trigger_id = 'burst'")
        assert state.count(str(NOW)) == 2, state
        _, text = get(f"http://127.0.0.1:{port}/metrics")
        assert metric(text, "engine_events_rewritten_total") == 3
        assert metric(text, "engine_events_retracted_total") == 2
    status = run_engine(config, "status")
    assert status.returncode == 0, status.stderr
    assert "reorgs after evaluation (event_reorgs): ids written again: 3" in status.stdout
    assert "events retracted: 2" in status.stdout


def test_rows_of_one_id_in_one_batch_are_evaluated_once(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    """A backlog holding an id twice (a replay before the engine started): one count."""
    config = setup(tmp_path, database_url, redis_url, webhook_receiver)
    insert_row(database_url, "8453-200-0", "0xa")
    insert_row(database_url, "8453-200-0", "0xb")
    with engine_processes(config, tmp_path, ["run"]):
        wait_evaluated(database_url, 2)
        time.sleep(0.5)
    assert query_value(database_url, "SELECT count(*) FROM action_results") == 0
    assert reorgs(database_url) == [("8453-200-0", "rewrite", "0xa", "0xb", 0)]


def test_kill_9_between_the_delete_and_its_processing_sends_on_retract_once(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = setup(tmp_path, database_url, redis_url, webhook_receiver)
    dsn = database_url
    with engine_processes(config, tmp_path, ["run"], ["worker"]) as (engine, _):
        wait_until(lambda: query_value(dsn, "SELECT count(*) FROM triggers"), what="rules")
        insert_row(dsn, "8453-300-0", "0xa")
        insert_row(dsn, "8453-300-1", "0xa")
        webhook_receiver.wait_for(1, timeout=20)
        engine.kill()
        execute(dsn, "DELETE FROM events WHERE id = '8453-300-1'")
        assert query_value(dsn, "SELECT count(*) FROM event_removals") == 1
        engine.start()
        requests = webhook_receiver.wait_for(2, timeout=20)
        assert requests[1].json["event"] == "8453-300-1"
        # Killed again right after it queued the retraction: nothing is sent twice.
        wait_until(
            lambda: query_value(dsn, "SELECT count(*) FROM event_reorgs") == 1,
            what="the retraction recorded",
        )
        engine.kill()
        engine.start()
        insert_row(dsn, "8453-301-0", "0xa", agent_id=8)  # proof the new engine evaluates
        wait_evaluated(dsn, 3)
        time.sleep(1.5)
    assert [r.path for r in webhook_receiver.requests] == ["/hooks/burst", "/hooks/retract"]
    assert query_all(dsn, "SELECT action_index, status FROM action_results ORDER BY id") == [
        (0, "success"),
        (-1, "success"),
    ]


def test_retention_is_not_a_retraction(database_url: str) -> None:
    """Old rows aged out by retention are not reorgs; an indexer's DELETE is one."""
    dsn = database_url
    insert_row(dsn, "8453-400-0", "0xa")
    insert_row(dsn, "8453-400-1", "0xa")
    execute(
        dsn,
        "INSERT INTO engine_cursors (name, txid, seq)"
        " SELECT 'default', max(txid), max(seq) FROM events",
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        from sql import query

        conn.execute(
            query("retention_delete_events").replace("$1", "0").replace("$2", "1").encode()
        )
    assert query_value(dsn, "SELECT count(*) FROM events") == 1
    assert query_value(dsn, "SELECT count(*) FROM event_removals") == 0
    execute(dsn, "DELETE FROM events")
    assert query_value(dsn, "SELECT event_id FROM event_removals") == "8453-400-1"

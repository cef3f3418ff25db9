"""A chain's life end to end, as an operator runs it: Ponder writes its own tables (carried
into `events` by `engine migrate`'s triggers), the chain needs 3 confirmations, blocks are
replaced before and after evaluation, and `engine run` is killed -9 between the steps.
Each event fires once with its final content, a `count` window holds each event once, and
the event a reorg removed after it fired gets its `on_retract` notice once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg

from tests.fakes.webhook import WebhookReceiver
from tests.integration.test_source_tables import PONDER_SCHEMA, SOURCE, feedback_row, insert_sql
from tests.processes import (
    engine_processes,
    query_value,
    run_engine,
    wait_until,
    write_config,
)

CHAIN = 84532


def event_id(block: int) -> str:
    return f"{CHAIN}-0xt{block}-0"


def rules(url: str) -> str:
    return f"""
rules:
  - id: feedback
    on: {{registry: reputation, event_type: NewFeedback}}
    per: agent_id
    when: {{count: {{within: 1d, at_least: 1}}}}
    actions:
      - rest:
          url: {url}/fired
          body:
            id: "{{{{ event.id }}}}"
            hash: "{{{{ event.block_hash }}}}"
            score: "{{{{ event.score }}}}"
            count: "{{{{ state.count }}}}"
    on_retract:
      actions:
        - rest:
            url: {url}/retracted
            body: {{id: "{{{{ event.id }}}}", hash: "{{{{ event.block_hash }}}}"}}
"""


def ponder(dsn: str, *statements: str) -> None:
    """One transaction of the indexer's, as Ponder writes: its own tables only."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def checkpoint(block: int) -> str:
    return (
        f'INSERT INTO ponder."Checkpoint" ("chainId", "lastBlockNumber", "lastBlockHash")'
        f" VALUES ({CHAIN}, {block}, '0xh{block}') ON CONFLICT (\"chainId\")"
        f' DO UPDATE SET "lastBlockNumber" = EXCLUDED."lastBlockNumber"'
    )


def delivered(receiver: WebhookReceiver, path: str) -> list[dict[str, object]]:
    return [r.json for r in receiver.requests if r.path.endswith(path)]


def test_confirmations_reorgs_and_kill_9_through_the_indexers_own_tables(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(PONDER_SCHEMA)  # type: ignore[arg-type]
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(rules(webhook_receiver.url.rstrip("/")), encoding="utf-8")
    config = write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=str(rules_path),
        extra={"source": SOURCE, "chains": {CHAIN: {"confirmations": 3}}},
    )
    migrated = run_engine(config, "migrate")
    assert migrated.returncode == 0, migrated.stderr

    def read_by_main_cursor(n: int) -> None:
        wait_until(
            lambda: (
                (
                    query_value(
                        database_url, "SELECT events FROM engine_cursors WHERE chain_id IS NULL"
                    )
                    or 0
                )
                >= n
            ),
            what=f"{n} rows read",
        )

    with engine_processes(config, tmp_path, ["worker"]):
        with engine_processes(config, tmp_path, ["run"]) as [engine]:
            # Blocks 100 and 101 in one batched insert; the head at 101: neither is deep.
            ponder(
                database_url,
                insert_sql(
                    [feedback_row(100, 0, "0xa100", 7, 10), feedback_row(101, 0, "0xa101", 7, 11)]
                ),
                checkpoint(101),
            )
            read_by_main_cursor(2)
            explained = run_engine(config, "rules", "explain", event_id(100), "--json")
            assert json.loads(explained.stdout)["evaluated"] is False, explained.stdout
            engine.kill()
        assert webhook_receiver.requests == []

        with engine_processes(config, tmp_path, ["run"]) as [engine]:
            # A reorg before confirmation: block 101 replaced, then the head moves on.
            ponder(
                database_url,
                f"""DELETE FROM ponder."Event" WHERE id = '{event_id(101)}'""",
                insert_sql([feedback_row(101, 0, "0xb101", 7, 20)]),
            )
            ponder(database_url, checkpoint(104))
            webhook_receiver.wait_for(2, timeout=20)
            # A reorg after evaluation: block 100 leaves the chain; kill -9 right away.
            ponder(database_url, f"""DELETE FROM ponder."Event" WHERE id = '{event_id(100)}'""")
            engine.kill()

        with engine_processes(config, tmp_path, ["run"]):
            # ...and comes back with another hash (a rewrite), then a new block 102.
            ponder(database_url, insert_sql([feedback_row(100, 0, "0xc100", 7, 30)]))
            ponder(
                database_url, insert_sql([feedback_row(102, 0, "0xa102", 7, 40)]), checkpoint(105)
            )
            webhook_receiver.wait_for(4, timeout=20)
            time.sleep(1.5)  # anything doubled would arrive now

    fired = sorted(delivered(webhook_receiver, "/fired"), key=lambda b: str(b["id"]))
    assert fired == [
        {"id": event_id(100), "hash": "0xa100", "score": 10, "count": 1},
        {"id": event_id(101), "hash": "0xb101", "score": 20, "count": 2},  # its final content
        # The rewrite of block 100 is not counted again (a retracted event stays in the
        # window until it ages out, as docs/chains.md says): 100, 101, 102.
        {"id": event_id(102), "hash": "0xa102", "score": 40, "count": 3},
    ]
    assert delivered(webhook_receiver, "/retracted") == [{"id": event_id(100), "hash": "0xa100"}]
    kinds = query_value(
        database_url,
        "SELECT string_agg(kind, ',' ORDER BY seen_at) FROM event_reorgs WHERE event_id = $1",
        event_id(100),
    )
    assert kinds == "retraction,rewrite"

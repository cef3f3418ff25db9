"""`source:`: the indexer's own tables (Ponder's `Event` and `Checkpoint`) carried into
`events` and `checkpoints` by the triggers `engine migrate` attaches, written the way
Ponder writes (batched multi-row inserts, a reorg's delete and re-insert)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.fakes.webhook import WebhookReceiver
from tests.processes import (
    ROOT,
    engine_processes,
    query_all,
    query_value,
    run_engine,
    write_config,
)

# Ponder's tables as /work/shared/reference/indexer-tables.md describes them, in a schema
# of their own, with Ponder's camelCase (quoted) column names.  Ponder's `bigint` column
# type is PostgreSQL's numeric(78,0) (it holds a uint256).
PONDER_SCHEMA = """
CREATE SCHEMA ponder;
CREATE TABLE ponder."Event" (
    id                 text PRIMARY KEY,
    "chainId"          numeric(78,0) NOT NULL,
    "blockNumber"      numeric(78,0) NOT NULL,
    "blockHash"        text    NOT NULL,
    "transactionHash"  text    NOT NULL,
    "logIndex"         integer NOT NULL,
    registry           text    NOT NULL,
    "eventType"        text    NOT NULL,
    "agentId"          numeric(78,0),
    "timestamp"        numeric(78,0) NOT NULL,
    owner text, "tokenUri" text, "metadataKey" text, "metadataValue" text,
    "clientAddress" text, "feedbackIndex" numeric(78,0), score integer, tag1 text, tag2 text,
    "fileUri" text, "fileHash" text, "validatorAddress" text, "requestHash" text,
    response integer, "responseUri" text, "responseHash" text, tag text
);
CREATE TABLE ponder."Checkpoint" (
    "chainId"          numeric(78,0) PRIMARY KEY,
    "lastBlockNumber"  numeric(78,0) NOT NULL,
    "lastBlockHash"    text   NOT NULL
);
"""

# The mapping of config.example.yaml, less what the camelCase rule finds by itself.
SOURCE: dict[str, Any] = {
    "table": "ponder.Event",
    "columns": {"chain_id": "chainId", "block_number": "blockNumber", "id": "id"},
    "checkpoints": {"table": "ponder.Checkpoint"},
}

CLIENT = "0xAbC00000000000000000000000000000000001"  # addresses arrive mixed-case
INSERT = """INSERT INTO ponder."Event" (id, "chainId", "blockNumber", "blockHash",
    "transactionHash", "logIndex", registry, "eventType", "agentId", "timestamp",
    "clientAddress", score, tag1, "feedbackIndex")
    VALUES {}"""


def feedback_row(block: int, log: int, block_hash: str, agent: int, score: int) -> str:
    return (
        f"('84532-0xt{block}-{log}', 84532, {block}, '{block_hash}', '0xt{block}', {log}, "
        f"'reputation', 'NewFeedback', {agent}, 1764000000, '{CLIENT}', {score}, 'starred', {log})"
    )


def insert_sql(rows: Sequence[str]) -> str:
    return INSERT.format(", ".join(rows))


@pytest.fixture
def ponder_database(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(PONDER_SCHEMA)
    return database_url


def config_with(
    tmp_path: Path, database_url: str, source: dict[str, Any] | None, rules: str = ""
) -> Path:
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(rules or "rules: []\n", encoding="utf-8")
    extra = {} if source is None else {"source": source}
    return write_config(
        tmp_path,
        database_url=database_url,
        redis_url="redis://127.0.0.1:1/0",
        rules=str(rules_path),
        extra=extra,
    )


def migrate(config: Path, *args: str) -> str:
    result = run_engine(config, "migrate", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def attached(database_url: str) -> list[tuple[Any, ...]]:
    return query_all(
        database_url,
        "SELECT tgrelid::regclass::text, tgname FROM pg_trigger"
        " WHERE tgname LIKE 'engine_source_%' ORDER BY 2",
    )


def test_batched_inserts_and_a_reorg_are_carried_into_events(
    tmp_path: Path, ponder_database: str
) -> None:
    out = migrate(config_with(tmp_path, ponder_database, SOURCE))
    assert "engine_source_events_insert on ponder.Event" in out
    assert "events.agent_id <- agentId (same name)" in out  # found by its camelCase
    assert "events.chain_id <- chainId\n" in out  # as the config maps it

    with psycopg.connect(ponder_database) as conn:
        conn.execute("SET track_functions = 'pl'")  # counts the doorbell's calls
        # Catching up: two multi-row INSERTs in one transaction, as Ponder flushes.
        conn.execute(insert_sql([feedback_row(7, i, "0xb7", 40 + i, 10 * i) for i in range(3)]))
        doorbells = conn.execute(
            "SELECT pg_stat_get_xact_function_calls('engine_notify_new_event'::regproc)"
        ).fetchone()
        conn.execute(insert_sql([feedback_row(8, 0, "0xb8", 50, 99)]))
        conn.commit()
    # One INSERT of three rows rang the doorbell once, not once per row.
    assert doorbells == (1,)

    rows = query_all(
        ponder_database,
        "SELECT id, chain_id, block_number, block_hash, transaction_hash, log_index, registry,"
        " event_type, agent_id, timestamp, client_address, score, tag1, feedback_index, owner"
        " FROM events ORDER BY id",
    )
    assert rows[0] == (
        "84532-0xt7-0", 84532, 7, "0xb7", "0xt7", 0, "reputation", "NewFeedback", 40,
        1764000000, "0xAbC00000000000000000000000000000000001", 0, "starred", 0, None,
    )  # fmt: skip
    assert [r[0] for r in rows] == [
        "84532-0xt7-0",
        "84532-0xt7-1",
        "84532-0xt7-2",
        "84532-0xt8-0",
    ]
    # Written in the indexer's transaction: the gap-safe cursor orders them with it.
    assert query_value(ponder_database, "SELECT count(DISTINCT txid) FROM events") == 1

    # A reorg replaces block 8: Ponder deletes what the orphaned block inserted and
    # indexes the new canonical block, which holds one more log.
    with psycopg.connect(ponder_database) as conn:
        conn.execute("""DELETE FROM ponder."Event" WHERE "blockNumber" = 8""")
        conn.execute(
            insert_sql([feedback_row(8, 0, "0xc8", 50, 98), feedback_row(8, 1, "0xc8", 51, 1)])
        )
    assert query_all(
        ponder_database,
        "SELECT id, block_hash, score FROM events WHERE block_number = 8 ORDER BY id",
    ) == [("84532-0xt8-0", "0xc8", 98), ("84532-0xt8-1", "0xc8", 1)]

    # Ponder restores what a reverted block updated: an UPDATE is carried as one.
    with psycopg.connect(ponder_database, autocommit=True) as conn:
        conn.execute(
            """UPDATE ponder."Event" SET score = 77, "blockHash" = '0xd7'
                WHERE id = '84532-0xt7-1'"""
        )
        conn.execute("""DELETE FROM ponder."Event" WHERE "blockNumber" = 7 AND "logIndex" = 2""")
    assert query_all(
        ponder_database,
        "SELECT id, block_hash, score FROM events WHERE block_number = 7 ORDER BY id",
    ) == [("84532-0xt7-0", "0xb7", 0), ("84532-0xt7-1", "0xd7", 77)]


def test_the_checkpoint_table_is_read_as_each_chains_head(
    tmp_path: Path, ponder_database: str
) -> None:
    with psycopg.connect(ponder_database, autocommit=True) as conn:
        conn.execute("""INSERT INTO ponder."Checkpoint" VALUES (84532, 100, '0xh100')""")
    out = migrate(config_with(tmp_path, ponder_database, SOURCE))
    assert "checkpoints copied from the source: 1" in out
    assert "checkpoints.last_block_number <- lastBlockNumber (same name)" in out

    def heads() -> list[tuple[Any, ...]]:
        return query_all(
            ponder_database,
            "SELECT chain_id, last_block_number, last_block_hash FROM checkpoints ORDER BY 1",
        )

    assert heads() == [(84532, 100, "0xh100")]
    with psycopg.connect(ponder_database, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO ponder."Checkpoint" VALUES (11155111, 5, '0xs5')
               ON CONFLICT ("chainId") DO NOTHING"""
        )
        conn.execute(
            """UPDATE ponder."Checkpoint" SET "lastBlockNumber" = 103, "lastBlockHash" = '0xh103'
                WHERE "chainId" = 84532"""
        )
    assert heads() == [(84532, 103, "0xh103"), (11155111, 5, "0xs5")]
    with psycopg.connect(ponder_database, autocommit=True) as conn:
        conn.execute("""DELETE FROM ponder."Checkpoint" WHERE "chainId" = 11155111""")
    assert heads() == [(84532, 103, "0xh103")]


def test_detach_removes_the_triggers_and_nothing_is_copied_after(
    tmp_path: Path, ponder_database: str
) -> None:
    config = config_with(tmp_path, ponder_database, SOURCE)
    migrate(config)
    assert len(attached(ponder_database)) == 6

    out = migrate(config, "--detach")
    assert "removed: engine_source_checkpoints_delete on ponder.Checkpoint" in out
    assert "engine_source_events_insert on ponder.Event" in out
    assert attached(ponder_database) == []
    assert migrate(config, "--detach").strip() == "no source triggers were attached"

    with psycopg.connect(ponder_database, autocommit=True) as conn:
        conn.execute(insert_sql([feedback_row(9, 0, "0xb9", 1, 1)]))
        conn.execute("""INSERT INTO ponder."Checkpoint" VALUES (84532, 9, '0xb9')""")
    assert query_value(ponder_database, "SELECT count(*) FROM events") == 0
    assert query_value(ponder_database, "SELECT count(*) FROM checkpoints") == 0
    assert (
        query_value(
            ponder_database, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'engine_source_%'"
        )
        == 0
    )

    # migrate without source: leaves triggers attached earlier and says so.
    migrate(config)
    out = migrate(config_with(tmp_path, ponder_database, None))
    assert "left as they are: engine_source_checkpoints_delete on ponder.Checkpoint" in out
    assert len(attached(ponder_database)) == 6


def test_rows_written_before_attaching_are_copied_only_with_backfill(
    tmp_path: Path, ponder_database: str
) -> None:
    with psycopg.connect(ponder_database, autocommit=True) as conn:
        conn.execute(insert_sql([feedback_row(5, i, "0xb5", i, 1) for i in range(3)]))
    config = config_with(tmp_path, ponder_database, SOURCE)
    migrate(config)
    assert query_value(ponder_database, "SELECT count(*) FROM events") == 0  # no history
    with psycopg.connect(ponder_database, autocommit=True) as conn:
        conn.execute(insert_sql([feedback_row(6, 0, "0xb6", 9, 1)]))
    assert "events copied from the source (--backfill): 3" in migrate(config, "--backfill")
    assert "--backfill" not in migrate(config, "--backfill")  # nothing is copied twice
    assert query_value(ponder_database, "SELECT count(*) FROM events") == 4


def test_a_changed_mapping_replaces_the_triggers(tmp_path: Path, ponder_database: str) -> None:
    migrate(config_with(tmp_path, ponder_database, {**SOURCE, "checkpoints": None}))
    changed = {"table": "ponder.Event", "columns": {"tag": "tag1", "owner": "clientAddress"}}
    out = migrate(config_with(tmp_path, ponder_database, changed))
    assert "source triggers replaced: engine_source_events_delete on ponder.Event" in out
    assert "events.tag <- tag1\n" in out
    with psycopg.connect(ponder_database, autocommit=True) as conn:
        conn.execute(insert_sql([feedback_row(7, 0, "0xb7", 40, 10)]))
    assert query_all(ponder_database, "SELECT tag, tag1, owner, client_address FROM events") == [
        ("starred", "starred", "0xAbC00000000000000000000000000000000001",
         "0xAbC00000000000000000000000000000000001")
    ]  # fmt: skip
    assert len(attached(ponder_database)) == 3


def test_the_example_configs_ponder_mapping_attaches(tmp_path: Path, ponder_database: str) -> None:
    text = (ROOT / "config.example.yaml").read_text(encoding="utf-8")
    block = "\n".join(line[1:] for line in text.splitlines() if line.startswith(("#source", "#  ")))
    source = yaml.safe_load(block)["source"]
    out = migrate(config_with(tmp_path, ponder_database, source))
    assert "(same name)" not in out  # every field is written out
    assert "events.token_uri <- tokenUri" in out
    assert len(attached(ponder_database)) == 6


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            {"table": "ponder.Event", "columns": {"block_number": "blockNum"}},
            [
                "config.yaml:",
                "source.columns.block_number: ponder.Event has no column 'blockNum'",
                "blockHash, blockNumber, chainId, clientAddress",
            ],
        ),
        (
            {"table": "ponder.Event", "columns": {"block_number": "blockHash"}},
            [
                "source.columns.block_number: ponder.Event.blockHash is text and "
                "events.block_number is bigint: a value could fail to convert"
            ],
        ),
        (
            {"table": "ponder.Event", "columns": {"timestamp": "agentId"}},
            [  # attached, with a warning: a NULL agentId would fail the indexer's insert
                "warning: ponder.Event.agentId may be NULL but events.timestamp may not"
            ],
        ),
        (
            {"table": "ponder.event"},
            ["source.table: there is no table ponder.event", "did you mean ponder.Event?"],
        ),
        (
            {"table": "ponder.Checkpoint"},
            [
                "events.id may not be NULL and ponder.Checkpoint has no column id nor id",
                "the columns of ponder.Checkpoint: chainId, lastBlockHash, lastBlockNumber",
            ],
        ),
        ({"table": "public.events"}, ["source.table: public.events is the engine's own table"]),
    ],
)
def test_a_bad_mapping_is_refused_and_nothing_is_attached(
    tmp_path: Path, ponder_database: str, source: dict[str, Any], expected: list[str]
) -> None:
    result = run_engine(config_with(tmp_path, ponder_database, source), "migrate")
    for text in expected:
        assert text in result.stderr
    if expected[0].startswith("warning:"):
        assert result.returncode == 0, result.stderr
        assert len(attached(ponder_database)) == 3
        return
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert attached(ponder_database) == []


def test_a_refused_change_leaves_the_triggers_attached_before(
    tmp_path: Path, ponder_database: str
) -> None:
    migrate(config_with(tmp_path, ponder_database, SOURCE))
    bad = {**SOURCE, "columns": {"tag": "nope"}}
    result = run_engine(config_with(tmp_path, ponder_database, bad), "migrate")
    assert result.returncode == 1
    assert "source.columns.tag: ponder.Event has no column 'nope'" in result.stderr
    assert len(attached(ponder_database)) == 6
    with psycopg.connect(ponder_database, autocommit=True) as conn:
        conn.execute(insert_sql([feedback_row(7, 0, "0xb7", 40, 10)]))
    assert query_value(ponder_database, "SELECT count(*) FROM events") == 1


def test_a_config_key_that_is_not_a_field_is_refused_when_loaded(
    tmp_path: Path, ponder_database: str
) -> None:
    config = config_with(
        tmp_path, ponder_database, {"table": "ponder.Event", "columns": {"blok": "x"}}
    )
    result = run_engine(config, "check")
    assert result.returncode == 1
    assert "source.columns.blok must be one of id, chain_id, block_number" in result.stderr


RULE = """
rules:
  - id: low-score
    on: {{registry: reputation, event_type: NewFeedback}}
    where:
      score: {{lt: 50}}
    actions:
      - rest:
          url: {url}/hooks/low-score
          body: {{agent: "{{{{ event.agent_id }}}}", block_hash: "{{{{ event.block_hash }}}}"}}
        retry: {{attempts: 1}}
"""


def test_engine_run_fires_on_a_row_the_indexer_writes(
    tmp_path: Path, ponder_database: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.format(url=webhook_receiver.url), encoding="utf-8")
    config = write_config(
        tmp_path,
        database_url=ponder_database,
        redis_url=redis_url,
        rules=str(rules),
        extra={"source": SOURCE},
    )
    migrate(config)
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        with psycopg.connect(ponder_database, autocommit=True) as conn:
            conn.execute(
                insert_sql([feedback_row(7, 0, "0xb7", 42, 12), feedback_row(7, 1, "0xb7", 43, 90)])
            )
        [request] = webhook_receiver.wait_for(1, timeout=20)
        assert request.json == {"agent": 42, "block_hash": "0xb7"}

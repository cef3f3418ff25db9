"""Migrations: idempotent, complete, and TimescaleDB-compatible on plain PostgreSQL."""

from __future__ import annotations

import json

import psycopg

from engine.migrate import migrate
from sql import migrations
from tests.processes import query_all, query_value

TABLES = {
    "events",
    "triggers",
    "trigger_state",
    "action_results",
    "engine_cursors",
    "checkpoints",
}


def test_migrations_apply_twice_to_an_empty_database(empty_database_url: str) -> None:
    first = migrate(empty_database_url)
    second = migrate(empty_database_url)

    assert first.applied == [m.name for m in migrations()]
    assert second.applied == []
    tables = {
        r[0]
        for r in query_all(
            empty_database_url,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
        )
    }
    assert tables >= TABLES
    recorded = query_value(empty_database_url, "SELECT count(*) FROM engine_migrations")
    assert recorded == len(migrations())


def test_events_has_every_design_column_with_cursor_defaults(empty_database_url: str) -> None:
    migrate(empty_database_url)
    columns = {
        r[0]: (r[1], r[2])
        for r in query_all(
            empty_database_url,
            "SELECT column_name, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_name = 'events'",
        )
    }
    design = [
        "id",
        "chain_id",
        "block_number",
        "block_hash",
        "transaction_hash",
        "log_index",
        "registry",
        "event_type",
        "agent_id",
        "timestamp",
        "owner",
        "token_uri",
        "metadata_key",
        "metadata_value",
        "client_address",
        "feedback_index",
        "score",
        "tag1",
        "tag2",
        "file_uri",
        "file_hash",
        "validator_address",
        "request_hash",
        "response",
        "response_uri",
        "response_hash",
        "tag",
        "created_at",
        "value",
        "value_decimals",
        "endpoint",
        "request_uri",
    ]
    assert set(design) <= set(columns)
    # The cursor columns default, so an indexer's INSERT need not name them.
    assert "pg_current_xact_id" in columns["txid"][1]
    assert "nextval" in columns["seq"][1]


def test_every_unique_index_on_events_includes_the_partitioning_column(
    empty_database_url: str,
) -> None:
    migrate(empty_database_url)
    unique_indexes = query_all(
        empty_database_url,
        """
        SELECT i.indexrelid::regclass::text,
               array_agg(a.attname::text ORDER BY a.attname)
          FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = 'events'::regclass AND i.indisunique
         GROUP BY i.indexrelid
        """,
    )
    assert unique_indexes, "events should have its primary key"
    for name, columns in unique_indexes:
        assert "created_at" in columns, f"{name} on {columns} lacks created_at"


def test_doorbell_is_one_statement_trigger_and_can_be_left_off(empty_database_url: str) -> None:
    migrate(empty_database_url)
    # tgtype bit 0 set = FOR EACH ROW; a statement trigger wakes the engine once per COPY.
    tgtype = query_value(
        empty_database_url,
        "SELECT tgtype FROM pg_trigger WHERE tgname = 'events_notify_trigger'",
    )
    assert tgtype is not None and tgtype & 1 == 0

    report = migrate(empty_database_url, doorbell=False)
    assert report.doorbell is False
    assert (
        query_value(
            empty_database_url,
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'events_notify_trigger'",
        )
        == 0
    )


def test_plain_postgres_keeps_a_plain_table(empty_database_url: str) -> None:
    report = migrate(empty_database_url)
    available = query_value(
        empty_database_url,
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'",
    )
    assert report.timescaledb is bool(available)
    if not available:
        assert (
            query_value(empty_database_url, "SELECT relkind FROM pg_class WHERE relname = 'events'")
            == "r"
        )


def test_an_older_action_results_is_converted_keeping_its_rows(empty_database_url: str) -> None:
    """A database migrated before 003 holds spec and context as jsonb: the upgrade turns
    them into json without losing or changing a row, and a second migrate does nothing."""
    migrate(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        # Back to the schema as 001 left it, with a row written then.
        conn.execute(
            "ALTER TABLE action_results ALTER spec TYPE jsonb USING spec::jsonb,"
            " ALTER context TYPE jsonb USING context::jsonb"
        )
        conn.execute("DELETE FROM engine_migrations WHERE name = '003_action_json'")
        conn.execute(
            "INSERT INTO action_results (trigger_id, event_id, action_index, action_type,"
            " spec, context) VALUES ('r', 'e-1', 0, 'webhook', %s::jsonb, %s::jsonb)",
            ('{"type": "webhook", "url": "http://x/"}', '{"event": {"id": "e-1", "score": 7}}'),
        )

    report = migrate(empty_database_url)

    assert report.applied == ["003_action_json"]
    types = dict(
        query_all(
            empty_database_url,
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'action_results' AND column_name IN ('spec', 'context')",
        )
    )
    assert types == {"spec": "json", "context": "json"}
    row = query_all(empty_database_url, "SELECT spec::text, context::text FROM action_results")
    assert [(json.loads(s), json.loads(c)) for s, c in row] == [
        ({"type": "webhook", "url": "http://x/"}, {"event": {"id": "e-1", "score": 7}})
    ]
    assert migrate(empty_database_url).applied == []

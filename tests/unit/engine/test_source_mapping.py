"""Resolving a `source:` mapping against two tables' columns (pure: no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.source_config import SourceTable
from engine.source_mapping import Column, camel_case, resolve_mapping
from rules.errors import ConfigError

TEXT, INT4, INT8, NUMERIC = 25, 23, 20, 1700
# pg_cast's rows for the pairs below: int4 -> int8 implicit, numeric -> int8 assignment.
CASTS = {(INT4, INT8): "i", (NUMERIC, INT8): "a", (INT8, NUMERIC): "i", (TEXT, INT8): "e"}

TARGET = [
    Column("id", TEXT, "text", nullable=False),
    Column("block_number", INT8, "bigint", nullable=False, numeric=True),
    Column("agent_id", INT8, "bigint", nullable=True, numeric=True),
    Column("owner", TEXT, "text", nullable=True),
    Column("created_at", 1184, "timestamp with time zone", nullable=False, has_default=True),
]
FIELDS = ("id", "block_number", "agent_id", "owner", "created_at")


def resolve(columns: dict[str, str], source_columns: list[Column]) -> list[tuple[str, str]]:
    table = SourceTable("ponder", "Event", columns, config_file="c.yaml", lines={})
    mapping = resolve_mapping(table, source_columns, "events", TARGET, FIELDS, "id", CASTS)
    return [(c.field, c.column) for c in mapping.copies]


def test_camel_case() -> None:
    assert camel_case("block_number") == "blockNumber"
    assert camel_case("tag1") == "tag1"
    assert camel_case("validator_address") == "validatorAddress"


def test_fields_left_out_are_found_by_name_or_camel_case_exactly() -> None:
    source = [
        Column("id", TEXT, "text", nullable=False),
        Column("blockNumber", INT8, "bigint", nullable=False),
        Column("AgentId", INT8, "bigint", nullable=True),  # not agentId: not taken
        Column("owner", TEXT, "text", nullable=True),
    ]
    assert resolve({}, source) == [
        ("id", "id"),
        ("block_number", "blockNumber"),
        ("owner", "owner"),
    ]


def test_ponders_numeric_bigints_and_anything_into_text_fit() -> None:
    source = [
        Column("key", INT8, "bigint", nullable=False, numeric=True),  # into text
        Column("blockNumber", NUMERIC, "numeric", nullable=False, numeric=True),
        Column("agentId", INT4, "integer", nullable=True, numeric=True),
    ]
    assert resolve({"id": "key"}, source) == [
        ("id", "key"),
        ("block_number", "blockNumber"),
        ("agent_id", "agentId"),
    ]


def test_text_into_a_number_is_refused_naming_the_line_and_both_types() -> None:
    source = [Column("id", TEXT, "text", nullable=False), Column("blk", TEXT, "text", False)]
    table = SourceTable(
        "ponder", "Event", {"block_number": "blk"}, config_file="c.yaml",
        lines={("source", "columns", "block_number"): 7},
    )  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        resolve_mapping(table, source, "events", TARGET, FIELDS, "id", CASTS)
    assert str(caught.value).startswith(
        "c.yaml:7: source.columns.block_number: ponder.Event.blk is text and "
        "events.block_number is bigint"
    )


def test_a_not_null_field_with_no_column_names_the_field_and_the_columns() -> None:
    source = [Column("id", TEXT, "text", nullable=False), Column("height", INT8, "bigint", False)]
    with pytest.raises(ConfigError) as caught:
        resolve({}, source)
    message = str(caught.value)
    assert "events.block_number may not be NULL" in message
    assert "no column block_number nor blockNumber" in message
    assert "(the columns of ponder.Event: height, id)" in message


def test_the_config_section_is_read_with_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "source:\n  table: ponder.Event\n  columns:\n    chain_id: chainId\n"
        "  checkpoints: {table: ponder.Checkpoint}\n",
        encoding="utf-8",
    )
    source = load_config(path).source_tables
    assert source is not None and source.checkpoints is not None
    assert (source.events.schema, source.events.table) == ("ponder", "Event")
    assert source.events.columns == {"chain_id": "chainId"}
    assert source.checkpoints.name == "ponder.Checkpoint"
    assert source.events.error(("columns", "chain_id"), "x").line == 4
    path.write_text("source: {table: Event}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"source.table must be SCHEMA.TABLE"):
        load_config(path)

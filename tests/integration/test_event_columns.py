"""The event columns are listed once (rules.fields.EVENT_FIELDS): the table a migration
creates and the query ``engine emit`` inserts with must name the same columns."""

from __future__ import annotations

import re

from engine.emit import EVENT_COLUMNS
from rules.fields import EVENT_FIELDS
from sql import query
from tests.processes import query_all

#: The events table's columns that are not an event's: the gap-safe cursor's position.
CURSOR_COLUMNS = ["txid", "seq"]


def test_the_events_table_holds_the_event_fields_and_the_cursor_columns(
    database_url: str,
) -> None:
    columns = query_all(
        database_url,
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'events'"
        " ORDER BY ordinal_position",
    )
    assert [name for (name,) in columns] == [*EVENT_FIELDS, *CURSOR_COLUMNS]


def test_the_insert_query_names_the_columns_emit_passes() -> None:
    insert = re.search(r"INSERT INTO events \((.*?)\)", query("insert_event"), re.DOTALL)
    assert insert is not None
    names = [name.strip().strip('"') for name in insert.group(1).split(",")]
    assert names == list(EVENT_COLUMNS)
    assert query("insert_event").count("$") == len(EVENT_COLUMNS)
    # every event column but the insert time, which the table fills in
    assert set(EVENT_FIELDS) - set(names) == {"created_at"}

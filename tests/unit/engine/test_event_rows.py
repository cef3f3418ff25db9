"""Rows to events, and the query that reads them: the named columns, nothing else."""

from __future__ import annotations

import datetime as dt
import string
from decimal import Decimal

import pytest

from engine.event_rows import EARLIER_ROW, INTERNAL, events_from_rows, read_batch_query
from rules.fields import EVENT_FIELDS
from sql import query


@pytest.mark.parametrize("cursor_at", ["last", "first", "between"])
def test_rows_become_plain_values(cursor_at: str) -> None:
    when = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    rows = []
    for n, (txid, seq, event_id, value, created) in enumerate(
        [
            ("5", 1, "a", Decimal("12"), when),
            ("5", 2, "b", Decimal("1.5"), None),
            ("6", 3, "c", Decimal("NaN"), when),
        ]
    ):
        event = {"id": event_id, "value": value, "created_at": created}
        cursor = {"_txid": txid, "_seq": seq}
        if cursor_at == "last":  # read_batch's order
            rows.append({**event, **cursor})
        elif cursor_at == "first":
            rows.append({**cursor, **event})
        else:
            rows.append({"id": event_id, **cursor, "value": value, "created_at": created})
        assert len(rows[n]) == 5
    events = events_from_rows(rows)
    assert [list(e) for e in events] == [["id", "value", "created_at"]] * 3
    assert [e["id"] for e in events] == ["a", "b", "c"]
    assert [e["value"] for e in events] == [12, 1.5, "NaN"]
    assert events[0]["created_at"] == "2026-11-25T12:00:00+00:00"
    assert events[1]["created_at"] is None
    assert all("_txid" not in e and "_seq" not in e for e in events)


def test_the_read_query_selects_the_named_columns_and_what_the_evaluator_needs() -> None:
    text = read_batch_query(("score", "agent_id"))
    select = text[text.index("SELECT ") + 7 : text.index("nullif(")]
    assert select.split() == [
        '"id",',
        '"chain_id",',
        '"registry",',
        '"event_type",',
        '"agent_id",',
        '"timestamp",',
        '"score",',
    ]
    # the text columns not read are checked for huge values in SQL, the cursor comes last
    assert 'length("tag1")' in text and 'length("registry")' not in text
    assert f"AS _unread,\n       {EARLIER_ROW} AS _earlier,\n       txid::text AS _txid" in text
    plain = read_batch_query(("score",), probe_rewrites=False)
    assert "NULL::boolean AS _earlier" in plain and "event_reorgs" not in plain
    assert read_batch_query(None) == read_batch_query(tuple(EVENT_FIELDS))
    assert "NULL::text AS _unread" in read_batch_query(None)


def test_a_read_of_every_column_selects_them_in_table_order() -> None:
    text = read_batch_query(None)
    select = text[text.index("SELECT ") + 7 : text.index("NULL::text")]
    assert [name.strip(' ",\n') for name in select.split()] == list(EVENT_FIELDS)


@pytest.mark.parametrize("columns", [None, ("score",), ("tag1", "owner"), tuple(EVENT_FIELDS)])
def test_the_read_query_fills_the_template_and_changes_nothing_else(columns) -> None:
    template = query("read_batch")
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    assert fields == {"columns", "unread_checks", "earlier"}
    assert template.count("{columns}") == template.count("{unread_checks}") == 1
    assert template.count("{earlier}") == 1
    text = read_batch_query(columns)
    assert "{" not in text and "}" not in text
    head, _, _ = template.partition("{columns}")
    _, _, tail = template.partition("{earlier}")
    assert text.startswith(head) and text.endswith(tail)
    assert f"{EARLIER_ROW}{tail}" in text
    # the internal columns, in this order, after every event column
    _, _, internal_part = template.partition("{unread_checks}")
    assert internal_part.startswith(" AS _unread,")
    internal = [internal_part.index(f" AS {name}") for name in INTERNAL]
    assert internal == sorted(internal)
    assert INTERNAL == ("_unread", "_earlier", "_txid", "_seq")


def test_the_read_query_refuses_a_name_that_is_not_an_event_column() -> None:
    with pytest.raises(ValueError, match="not event columns"):
        read_batch_query(("score", "1; DROP TABLE events"))

"""Rows to events and events to jsonb text: nothing PostgreSQL would refuse gets through."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from engine.events import events_from_rows, read_batch_query, to_json, unusual, unusual_events
from rules.fields import EVENT_FIELDS
from sql import query


def test_to_json_never_emits_what_jsonb_refuses() -> None:
    text = to_json({"nan": float("nan"), "inf": [float("-inf"), 1.5], "nul": "a\x00b"})
    assert json.loads(text) == {"nan": None, "inf": [None, 1.5], "nul": "a\ufffdb"}
    assert "NaN" not in text and "Infinity" not in text and "\\u0000" not in text


def test_to_json_keeps_a_literal_backslash_u0000() -> None:
    literal = "a \\u0000 in text, and a real \x00"
    assert json.loads(to_json(literal)) == "a \\u0000 in text, and a real \ufffd"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # beyond orjson's 64 bits: json.dumps writes them
        ({"big": 2**70, "neg": -(2**64)}, {"big": 2**70, "neg": -(2**64)}),
        ({1: "int key", None: "none key"}, {"1": "int key", "null": "none key"}),
        # the fallback keeps the other promises: no NUL, no NaN
        (
            {"s": "a\x00b", "big": 2**65, "nan": float("nan")},
            {"s": "a\ufffdb", "big": 2**65, "nan": None},
        ),
    ],
)
def test_to_json_writes_what_orjson_refuses(value: object, expected: object) -> None:
    text = to_json(value)
    assert json.loads(text) == expected
    assert "NaN" not in text and "\\u0000" not in text


def test_to_json_hands_unusual_values_to_the_same_conversion() -> None:
    when = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    value = {"at": when, "amount": Decimal("12.50"), "whole": Decimal("3"), "set": {7}}
    assert json.loads(to_json(value)) == {
        "at": "2026-11-25T12:00:00+00:00",
        "amount": 12.5,
        "whole": 3,
        "set": "{7}",
    }


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


def test_unusual_rows_are_described() -> None:
    assert unusual({"registry": "reputation", "event_type": "NewFeedback"}) == []
    assert unusual({"registry": "nonsense", "event_type": "X"}) == ["unknown registry 'nonsense'"]
    assert unusual({"registry": "identity", "event_type": "Odd", "tag": "x" * 70_000}) == [
        "unknown identity event type 'Odd'",
        "tag is 70000 characters",
    ]


def test_unusual_rows_of_a_batch_are_found_per_column() -> None:
    good = {"registry": "reputation", "event_type": "NewFeedback", "score": 5, "tag1": "ok"}
    batch = [
        good,
        {**good, "tag1": "x" * 70_000},
        {**good, "score": None, "registry": "nonsense"},
        good,
        {**good, "tag1": "y" * 65_536},  # at the limit: not unusual
        {**good, "tag1": None, "extra": "z" * 70_001},  # a row with a column of its own
    ]
    assert unusual_events(batch) == [
        (1, ["tag1 is 70000 characters"]),
        (2, ["unknown registry 'nonsense'"]),
        (5, ["extra is 70001 characters"]),
    ]
    assert unusual_events([]) == []
    # Rows as wide as each other but with different columns: each column still checked.
    same_width = [{"tag1": "a", "score": 1}, {"tag2": "b" * 70_000, "score": 2}]
    assert [p for _, p in unusual_events(same_width)] == [
        ["unknown registry 'None'"],
        ["unknown registry 'None'", "tag2 is 70000 characters"],
    ]
    # A registry or type no database row can hold (unhashable) is still described.
    assert unusual_events([{"registry": ["x"], "event_type": "A"}]) == [
        (0, ["unknown registry \"['x']\""])
    ]
    assert unusual_events([{"registry": "identity", "event_type": ["A"]}]) == [
        (0, ["unknown identity event type \"['A']\""])
    ]


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
    assert "AS _unread, txid::text AS _txid, seq AS _seq" in text
    assert read_batch_query(None) == query("read_batch")
    assert "NULL::text AS _unread" in read_batch_query(tuple(EVENT_FIELDS))


def test_the_read_query_refuses_a_name_that_is_not_an_event_column() -> None:
    with pytest.raises(ValueError, match="not event columns"):
        read_batch_query(("score", "1; DROP TABLE events"))

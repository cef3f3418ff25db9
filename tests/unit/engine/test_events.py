"""Rows to events and events to jsonb text: nothing PostgreSQL would refuse gets through."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from engine.events import events_from_rows, to_json, unusual, unusual_events


def test_to_json_never_emits_what_jsonb_refuses() -> None:
    text = to_json({"nan": float("nan"), "inf": [float("-inf"), 1.5], "nul": "a\x00b"})
    assert json.loads(text) == {"nan": None, "inf": [None, 1.5], "nul": "a\ufffdb"}
    assert "NaN" not in text and "Infinity" not in text and "\\u0000" not in text


def test_to_json_keeps_a_literal_backslash_u0000() -> None:
    literal = "a \\u0000 in text, and a real \x00"
    assert json.loads(to_json(literal)) == "a \\u0000 in text, and a real \ufffd"


def test_rows_become_plain_values() -> None:
    when = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
    rows = [
        {"_txid": "5", "_seq": 1, "id": "a", "value": Decimal("12"), "created_at": when},
        {"_txid": "5", "_seq": 2, "id": "b", "value": Decimal("1.5"), "created_at": None},
        {"_txid": "6", "_seq": 3, "id": "c", "value": Decimal("NaN"), "created_at": when},
    ]
    events = events_from_rows(rows)
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

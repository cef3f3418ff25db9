"""Rows that look malformed are described, one line of problems each."""

from __future__ import annotations

from engine.unusual_rows import unusual, unusual_events


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

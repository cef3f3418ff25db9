"""Values to jsonb text: nothing PostgreSQL would refuse gets through."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from engine.json_text import to_json


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

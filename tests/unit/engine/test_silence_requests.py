"""What a silence request must say (engine.silences.check_silence), with advice."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.silences import check_silence
from rules.errors import EngineError

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def test_for_gives_seconds_and_matchers_are_parsed() -> None:
    got = check_silence(" agent-* ", ["agent_id=42", "severity=page"], "why", for_text="2h")
    assert (got.rule_glob, got.matchers, got.for_s, got.until) == (
        "agent-*",
        {"agent_id": "42", "severity": "page"},
        7200,
        None,
    )


def test_until_without_an_offset_is_utc() -> None:
    got = check_silence("*", [], "why", until_text="2026-12-01T09:00", now=NOW)
    assert got.until == dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    got = check_silence("*", [], "why", until_text="2026-12-01T09:00+02:00", now=NOW)
    assert got.until == dt.datetime(2026, 12, 1, 7, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "either --for DURATION or --until TIME"),
        ({"for_text": "1h", "until_text": "2027-01-01"}, "either --for DURATION or --until"),
        ({"for_text": "soon"}, "--for must be a duration like 30s, 15m, 2h or 7d"),
        ({"until_text": "tomorrow"}, "--until must be an ISO 8601 time"),
        ({"until_text": "2026-11-30T11:59"}, "is in the past"),
        ({"for_text": "1h", "comment": "  "}, "needs a comment saying why"),
        ({"for_text": "1h", "matchers": ["agent_id"]}, "a matcher is NAME=VALUE"),
        ({"for_text": "1h", "glob": ""}, "the rule glob must be 1 to 200 characters"),
    ],
)
def test_a_mistake_is_refused_with_advice(kwargs: dict[str, object], message: str) -> None:
    glob = kwargs.pop("glob", "*")
    matchers = kwargs.pop("matchers", [])
    comment = kwargs.pop("comment", "why")
    with pytest.raises(EngineError) as caught:
        check_silence(glob, matchers, comment, now=NOW, **kwargs)  # type: ignore[arg-type]
    assert message in str(caught.value)

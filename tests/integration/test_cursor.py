"""The gap-safe cursor (guarantee 1) and the once-only batch commit (guarantee 2)."""

from __future__ import annotations

import asyncpg
import pytest

import sql
from engine.cursor import CursorMovedError
from engine.emit import EVENT_COLUMNS, build_event
from engine.evaluator import Evaluator
from rules import RuleIndex, load_rules_text
from tests.processes import query_all, query_value

RULES = """
rules:
  - id: every-feedback
    on: {registry: reputation, event_type: NewFeedback}
    actions:
      - rest: {url: "http://127.0.0.1:9/x", body: {id: "{{ event.id }}"}}
"""


def index() -> RuleIndex:
    loaded = load_rules_text(RULES, "inline.yaml", environ={})
    assert not loaded.errors, loaded.errors
    return RuleIndex(loaded.rules)


def insert(conn: sql.Connection, event_id: str) -> None:
    event = build_event("reputation", "NewFeedback", {"id": event_id, "agent_id": 1, "score": 1})
    sql.run(conn, "insert_event", *(event.get(c) for c in EVENT_COLUMNS))


async def test_a_transaction_committing_late_is_not_skipped(database_url: str) -> None:
    rules = index()
    evaluator = Evaluator("main", batch_size=100)
    conn = await asyncpg.connect(database_url)
    early = sql.connect(database_url, autocommit=False)
    late = sql.connect(database_url, autocommit=False)
    try:
        insert(early, "early")  # began first, commits last
        insert(late, "late")
        late.commit()

        blocked = await evaluator.run_batch(conn, rules)
        # 'late' is committed but sits behind the still-open 'early': reading it now
        # would move the cursor past 'early', which would then never be seen.
        assert blocked.events == 0

        early.commit()
        caught_up = await evaluator.run_batch(conn, rules)
        assert caught_up.events == 2
        assert (await evaluator.run_batch(conn, rules)).events == 0
    finally:
        early.close()
        late.close()
        await conn.close()

    seq_order = [r[0] for r in query_all(database_url, "SELECT id FROM events ORDER BY seq")]
    assert seq_order == ["early", "late"]
    evaluated = query_all(database_url, "SELECT event_id FROM action_results ORDER BY event_id")
    assert evaluated == [("early",), ("late",)]


async def test_a_second_engine_with_a_stale_cursor_rolls_back(database_url: str) -> None:
    rules = index()
    with sql.connect(database_url) as conn:
        for i in range(3):
            insert(conn, f"e{i}")
    first, second = Evaluator("main", 100), Evaluator("main", 100)
    a = await asyncpg.connect(database_url)
    b = await asyncpg.connect(database_url)
    try:
        await first.cursor.load(a)
        await second.cursor.load(b)  # both read the same starting position
        assert (await first.run_batch(a, rules)).events == 3
        with pytest.raises(CursorMovedError):
            await second.run_batch(b, rules)
    finally:
        await a.close()
        await b.close()
    assert query_value(database_url, "SELECT count(*) FROM action_results") == 3
    assert query_value(database_url, "SELECT events FROM engine_cursors") == 3

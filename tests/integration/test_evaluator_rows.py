"""What one evaluated batch writes to action_results, row by row."""

from __future__ import annotations

import json

import asyncpg

import sql
from engine.emit import EVENT_COLUMNS, build_event
from engine.evaluator import COPY_FROM_ROWS, Evaluator
from rules import RuleIndex, load_rules_text
from rules.fields import EVENT_FIELDS
from rules.template_check import CONTEXT_CORE_FIELDS
from tests.processes import query_all

# Three rules with the same actions (a load shares one compiled action list between
# them) and a fourth whose template uses the whole row.
SHARED_ACTIONS = """
    actions:
      - name: hook
        rest: {url: "http://127.0.0.1:9/x", body: {s: "{{ event.score }}"}}
        retry: {attempts: 4, backoff: 3s}
      - telegram: {chat_id: 7, text: "{{ event.tag1 }}"}
"""
RULES = (
    "rules:\n"
    + "".join(
        f"  - id: {name}\n    on: {{registry: reputation, event_type: NewFeedback}}\n"
        + SHARED_ACTIONS
        for name in ("alpha", "beta", "gamma")
    )
    + """  - id: whole
    on: {registry: reputation, event_type: NewFeedback}
    actions:
      - rest: {url: "http://127.0.0.1:9/y", body: "{{ event | tojson }}"}
"""
)


async def test_each_rule_gets_its_own_rows_and_a_context_of_what_it_reads(
    database_url: str,
) -> None:
    loaded = load_rules_text(RULES, "inline.yaml", environ={})
    assert not loaded.errors, loaded.errors
    alpha, beta = loaded.rules[0], loaded.rules[1]
    assert alpha.actions is beta.actions  # the case that matters: one shared action list
    with sql.connect(database_url) as conn:
        for i in range(2):
            event = build_event(
                "reputation",
                "NewFeedback",
                {"id": f"ev{i}", "agent_id": 5, "score": 90 + i, "tag1": f"t{i}"},
            )
            sql.run(conn, "insert_event", *(event.get(c) for c in EVENT_COLUMNS))
    conn = await asyncpg.connect(database_url)
    try:
        result = await Evaluator("main", 100).run_batch(conn, RuleIndex(loaded.rules))
    finally:
        await conn.close()
    assert (result.events, result.fired, len(result.action_ids)) == (2, 8, 14)

    rows = query_all(
        database_url,
        "SELECT trigger_id, event_id, action_index, action_type, action_name, max_attempts,"
        " backoff_s, spec::text, context::text FROM action_results"
        " ORDER BY event_id, trigger_id, action_index",
    )
    keys = [row[:3] for row in rows]
    assert keys == [
        (rule, f"ev{i}", index)
        for i in range(2)
        for rule, count in (("alpha", 2), ("beta", 2), ("gamma", 2), ("whole", 1))
        for index in range(count)
    ]
    for trigger_id, event_id, index, kind, name, attempts, backoff, spec, context in rows:
        stored = json.loads(context)
        assert stored["rule"]["id"] == trigger_id
        assert stored["event"]["id"] == event_id
        if trigger_id == "whole":
            assert (kind, attempts) == ("rest", 5)  # the default retry
            assert set(stored["event"]) == set(EVENT_FIELDS)
            continue
        assert set(stored["event"]) == {*CONTEXT_CORE_FIELDS, "score", "tag1"}
        assert stored["event"]["score"] == 90 + int(event_id[-1])
        if index == 0:
            assert (kind, name, attempts, backoff) == ("rest", "hook", 4, 3.0)
            assert json.loads(spec)["body"] == {"s": "{{ event.score }}"}
        else:
            assert (kind, name, attempts) == ("telegram", None, 5)
            assert json.loads(spec) == {"chat_id": 7, "text": "{{ event.tag1 }}"}


def _insert(database_url: str, ids: list[str]) -> None:
    with sql.connect(database_url) as conn:
        for event_id in ids:
            event = build_event(
                "reputation", "NewFeedback", {"id": event_id, "agent_id": 1, "score": 1}
            )
            sql.run(conn, "insert_event", *(event.get(c) for c in EVENT_COLUMNS))


async def test_a_large_batch_with_an_event_written_twice_fires_each_event_once(
    database_url: str,
) -> None:
    """Large batches are written with COPY; a replayed event id must still be skipped."""
    one = load_rules_text(
        "rules:\n  - id: r\n    on: {registry: reputation}\n"
        '    actions: [{rest: {url: "http://127.0.0.1:9/x"}}]\n',
        "inline.yaml",
        environ={},
    )
    index = RuleIndex(one.rules)
    evaluator = Evaluator("main", 500)
    first = [f"a{i}" for i in range(COPY_FROM_ROWS + 6)]
    # The indexer replays three events among new ones (same ids, later created_at).
    second = [f"b{i}" for i in range(COPY_FROM_ROWS + 6)]
    second[10:10] = ["a3", "a4", "a5"]
    conn = await asyncpg.connect(database_url)
    try:
        _insert(database_url, first)
        done = await evaluator.run_batch(conn, index)
        assert (done.events, len(done.action_ids)) == (len(first), len(first))
        _insert(database_url, second)
        done = await evaluator.run_batch(conn, index)
        assert (done.events, len(done.action_ids)) == (len(second), len(second) - 3)
    finally:
        await conn.close()
    rows = query_all(database_url, "SELECT event_id, count(*) FROM action_results GROUP BY 1")
    assert len(rows) == len(first) + len(second) - 3
    assert {count for _, count in rows} == {1}
    assert query_all(database_url, "SELECT events FROM engine_cursors") == [
        (len(first) + len(second),)
    ]

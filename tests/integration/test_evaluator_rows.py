"""What one evaluated batch writes to action_results, row by row."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import psycopg
import pytest

import engine.event_rows
import sql
from engine.action_rows import COPY_FROM_ROWS
from engine.emit import EVENT_COLUMNS, build_event
from engine.evaluator import Evaluator
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


NARROW_RULES = """
  - id: {p}where
    on: {{registry: reputation}}
    where: {{any: [{{score: {{lt: 30}}}}, {{value: {{gt: 4}}}}]}}
    actions: [{{rest: {{url: "http://127.0.0.1:9/x", body: "{{{{ event.tag2 }}}}"}}}}]
  - id: {p}ema
    on: {{registry: reputation}}
    per: client_address
    when: {{ema: {{of: value, window: 3, above: 1}}}}
    actions:
      - telegram: {{chat_id: 1, text: "{{{{ state.ema }}}} {{{{ group.client_address }}}}"}}
"""


async def test_reading_only_the_named_columns_changes_no_firing(database_url: str) -> None:
    """The same rules evaluated through a narrowed read and through a whole-row read (one
    rule of the second set needs every column) write the same rows and states."""
    narrow = load_rules_text("rules:\n" + NARROW_RULES.format(p="n-"), "n.yaml", environ={})
    wide = load_rules_text(
        "rules:\n"
        + NARROW_RULES.format(p="w-")
        + "  - id: whole\n"
        + '    actions: [{rest: {url: "http://x/", body: "{{ event | tojson }}"}}]\n',
        "w.yaml",
        environ={},
    )
    narrow_index, wide_index = RuleIndex(narrow.rules), RuleIndex(wide.rules)
    assert narrow_index.event_fields is not None and "value" in narrow_index.event_fields
    assert "token_uri" not in narrow_index.event_fields
    assert wide_index.event_fields is None
    with sql.connect(database_url) as conn:
        for i in range(120):  # above COPY_FROM_ROWS firings, so both write paths run
            event = build_event(
                "reputation",
                "NewFeedback",
                {
                    "id": f"ev{i}",
                    "agent_id": i % 7,
                    "score": (i * 37) % 100,
                    "value": (i * 13) % 9,
                    "value_decimals": 0,
                    "tag2": f"t{i}",
                    "token_uri": f"ipfs://{i}",
                    "client_address": f"0xC{i % 3}",
                },
            )
            sql.run(conn, "insert_event", *(event.get(c) for c in EVENT_COLUMNS))
    conn = await asyncpg.connect(database_url)
    try:
        done_n = await Evaluator("narrow", 500).run_batch(conn, narrow_index)
        done_w = await Evaluator("wide", 500).run_batch(conn, wide_index)
    finally:
        await conn.close()
    assert done_n.events == done_w.events == 120
    assert done_w.fired == done_n.fired + 120  # `whole` fires on every event

    def rows_of(prefix: str) -> list[tuple[object, ...]]:
        rows = query_all(
            database_url,
            "SELECT substr(trigger_id, 3), event_id, action_index, spec::text, context::text"
            " FROM action_results WHERE trigger_id LIKE $1 ORDER BY 1, 2, 3",
            prefix + "%",
        )
        out = []
        for name, event_id, index, spec, context in rows:
            stored = json.loads(context)
            del stored["rule"], stored["fired_at"]
            out.append((name, event_id, index, spec, stored))
        return out

    narrow_rows = rows_of("n-")
    assert len(narrow_rows) > COPY_FROM_ROWS
    assert {r[0] for r in narrow_rows} == {"where", "ema"}
    assert narrow_rows == rows_of("w-")
    states = query_all(
        database_url,
        "SELECT substr(trigger_id, 1, 1), group_key, state::text FROM trigger_state"
        " WHERE trigger_id LIKE '_-ema' ORDER BY 2, 1",
    )
    assert [(g, s) for p, g, s in states if p == "n"] == [(g, s) for p, g, s in states if p == "w"]
    assert len(states) == 6


async def test_a_huge_text_in_a_column_no_rule_reads_is_still_reported(database_url: str) -> None:
    loaded = load_rules_text(
        "rules:\n  - id: r\n    where: {score: {lt: 50}}\n"
        '    actions: [{rest: {url: "http://127.0.0.1:9/x"}}]\n',
        "inline.yaml",
        environ={},
    )
    index = RuleIndex(loaded.rules)
    assert index.event_fields is not None and "tag2" not in index.event_fields
    texts = {"big": "x" * 70_000, "wide": "é" * 40_000, "small": "ok"}  # "wide": 80,000 bytes
    with sql.connect(database_url) as conn:
        for name, text in texts.items():
            event = build_event(
                "reputation", "NewFeedback", {"id": name, "agent_id": 1, "score": 1, "tag2": text}
            )
            sql.run(conn, "insert_event", *(event.get(c) for c in EVENT_COLUMNS))
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            engine.event_rows.read_batch_query(index.event_fields), "0", 0, 10, None
        )
        done = await Evaluator("main", 100).run_batch(conn, index)
    finally:
        await conn.close()
    assert [(r["id"], r["_unread"]) for r in rows] == [
        ("big", "tag2 is 70000 characters"),
        ("wide", None),
        ("small", None),
    ]
    assert "tag2" not in rows[0]
    assert (done.events, done.fired, done.unusual) == (3, 3, 1)


# Chunks: a rule on every event, a count rule keyed by agent (its state must be stepped
# once per event whatever happens to the chunks), two actions for the first.
CHUNK_RULES = """rules:
  - id: every
    on: {registry: reputation}
    actions:
      - rest: {url: "http://127.0.0.1:9/x", body: {e: "{{ event.id }}"}}
      - telegram: {chat_id: 1, text: "{{ event.score }}"}
  - id: counted
    on: {registry: reputation}
    per: agent_id
    when: {count: {within: 1d, at_least: 1}}
    actions: [{rest: {url: "http://127.0.0.1:9/y"}}]
"""
CHUNK = COPY_FROM_ROWS + 6  # every chunk of a test is written with COPY, the rest too


def _agent_events(ids: list[str]) -> list[dict[str, Any]]:
    return [
        build_event("reputation", "NewFeedback", {"id": i, "agent_id": n % 5, "score": n % 100})
        for n, i in enumerate(ids)
    ]


def _insert_agents(database_url: str, events: list[dict[str, Any]]) -> None:
    with sql.connect(database_url) as conn:
        for event in events:
            sql.run(conn, "insert_event", *(event.get(c) for c in EVENT_COLUMNS))


def _action_rows(database_url: str) -> list[tuple[object, ...]]:
    rows = query_all(
        database_url,
        "SELECT id, trigger_id, event_id, action_index, spec::text, context::text"
        " FROM action_results ORDER BY id",
    )
    out = []
    for row in rows:
        context = json.loads(row[5])
        del context["fired_at"]
        out.append((*row[:5], context))
    return out


async def _evaluate_all(database_url: str, evaluator: Evaluator) -> list[int]:
    index = RuleIndex(load_rules_text(CHUNK_RULES, "chunks.yaml", environ={}).rules)
    conn = await asyncpg.connect(database_url)
    try:
        done = await evaluator.run_batch(conn, index)
    finally:
        await conn.close()
    return done.action_ids


def _states_and_stats(database_url: str) -> tuple[list[tuple[object, ...]], ...]:
    states = query_all(
        database_url, "SELECT group_key, state::text FROM trigger_state ORDER BY group_key"
    )
    stats = query_all(
        database_url, "SELECT trigger_id, matched, fired FROM rule_stats ORDER BY trigger_id"
    )
    return states, stats


async def test_rows_written_in_chunks_are_those_written_at_once(
    database_url: str, template_database: str, pg_server: Any
) -> None:
    """The same 300 events, written in chunks of CHUNK rows while evaluating and in one
    COPY after it: the same rows, in the same order, with the ids the batch reports."""
    events = _agent_events([f"e{i}" for i in range(300)])
    other = pg_server.create_database(f"t_{uuid.uuid4().hex}", template=template_database)
    try:
        results = []
        for dsn, chunk in ((database_url, CHUNK), (other, 100_000)):
            _insert_agents(dsn, events)
            action_ids = await _evaluate_all(dsn, Evaluator("main", 1000, write_chunk_rows=chunk))
            rows = _action_rows(dsn)
            assert action_ids == [row[0] for row in rows]  # what the dispatcher enqueues
            results.append(([row[1:] for row in rows], _states_and_stats(dsn)))
    finally:
        pg_server.drop_database(other.rsplit("/", 1)[1])
    (chunked, chunked_state), (whole, whole_state) = results
    assert len(chunked) == 300 * 2 + 300  # `every` twice, `counted` once, per event
    assert len(chunked) > 4 * CHUNK
    assert chunked == whole
    assert chunked_state == whole_state


async def test_an_event_written_twice_in_a_later_chunk_rolls_back_and_skips_it(
    database_url: str,
) -> None:
    """An event id fired on before, met again by the third chunk's COPY: the batch is
    evaluated again with the INSERT, so every row and state is there once.

    Written again while its first row is still in `events`, the id would not be evaluated
    at all (engine.reorgs); after retention removed that row the engine cannot know it."""
    first = [f"a{i}" for i in range(20)]
    _insert_agents(database_url, _agent_events(first))
    await _evaluate_all(database_url, Evaluator("main", 1000, write_chunk_rows=CHUNK))
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT set_config('engine.deleting_for', 'retention', true)")
        conn.execute("DELETE FROM events WHERE id = 'a7'")
    second = [f"b{i}" for i in range(200)]
    second[150:150] = ["a7"]  # its rows come in the third chunk
    _insert_agents(database_url, _agent_events(second))
    action_ids = await _evaluate_all(database_url, Evaluator("main", 1000, write_chunk_rows=CHUNK))
    assert len(action_ids) == 200 * 3
    rows = query_all(
        database_url, "SELECT event_id, count(*) FROM action_results GROUP BY 1 ORDER BY 1"
    )
    assert len(rows) == 220 and {count for _, count in rows} == {3}
    assert query_all(database_url, "SELECT events FROM engine_cursors") == [(221,)]
    states, stats = _states_and_stats(database_url)
    assert stats == [("counted", 221, 221), ("every", 221, 221)]  # not 221 + 151
    # every event read stepped its agent's count once, the replayed one included
    assert len(states) == 5
    assert sum(len(_times(json.loads(state))) for _, state in states) == 221


def _times(state: Any) -> list[Any]:
    """The count condition's timestamps, wherever the stored state keeps them."""
    if isinstance(state, dict):
        if "times" in state:
            return list(state["times"])
        return [t for value in state.values() for t in _times(value)]
    return []


REFUSE_SQL = """
CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.event_id = 'bad' THEN RAISE EXCEPTION 'refused %', NEW.event_id; END IF;
    IF NEW.event_id = 'slow' THEN PERFORM pg_sleep(1); END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse BEFORE INSERT ON action_results FOR EACH ROW EXECUTE FUNCTION refuse_row();
"""


def _nothing_written(database_url: str) -> None:
    assert query_all(database_url, "SELECT count(*) FROM action_results") == [(0,)]
    assert query_all(database_url, "SELECT count(*) FROM trigger_state") == [(0,)]
    assert query_all(database_url, "SELECT count(*) FROM rule_stats") == [(0,)]
    assert query_all(database_url, "SELECT events FROM engine_cursors") == [(0,)]


async def test_a_chunk_that_fails_leaves_nothing_of_the_batch(database_url: str) -> None:
    """The database refuses a row of the third chunk while the evaluation goes on: the
    error is the batch's, nothing of it is written, and the connection serves the next
    try, which writes everything once the row is accepted."""
    ids = [f"e{i}" for i in range(300)]
    ids[160] = "bad"
    _insert_agents(database_url, _agent_events(ids))
    with sql.connect(database_url) as conn:
        conn.execute(REFUSE_SQL.encode())
    index = RuleIndex(load_rules_text(CHUNK_RULES, "chunks.yaml", environ={}).rules)
    evaluator = Evaluator("main", 1000, write_chunk_rows=CHUNK)
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.RaiseError, match="refused bad"):
            await evaluator.run_batch(conn, index)
        _nothing_written(database_url)
        await conn.execute("DROP TRIGGER refuse ON action_results")
        done = await evaluator.run_batch(conn, index)
    finally:
        await conn.close()
    assert (done.events, len(done.action_ids)) == (300, 900)
    assert query_all(database_url, "SELECT events FROM engine_cursors") == [(300,)]


async def test_a_batch_cancelled_while_a_chunk_is_written_leaves_nothing(
    database_url: str,
) -> None:
    """Stopping the engine mid-batch: its task is cancelled while the database is still
    writing a chunk and the evaluation goes on with the rest.  The chunk is let finish
    before the rollback, nothing of the batch stays, and the connection is usable."""
    rules = """rules:
  - id: low
    where: {score: {lt: 50}}
    actions: [{rest: {url: "http://127.0.0.1:9/x"}}]
  - id: never
    per: agent_id
    when: {count: {within: 1d, at_least: 10000}}
    actions: [{rest: {url: "http://127.0.0.1:9/y"}}]
"""
    loaded = load_rules_text(rules, "cancel.yaml", environ={})
    assert not loaded.errors, loaded.errors
    index = RuleIndex(loaded.rules)
    # One chunk of firings (the slow row among them), then many matches that fire nothing.
    head = [{"id": f"h{i}", "score": 1} for i in range(CHUNK - 1)] + [{"id": "slow", "score": 1}]
    tail = [{"id": f"t{i}", "score": 99} for i in range(6000)]
    events = [
        build_event("reputation", "NewFeedback", {"agent_id": n % 7, **fields})
        for n, fields in enumerate(head + tail)
    ]
    _insert_agents(database_url, events)
    with sql.connect(database_url) as conn:
        conn.execute(REFUSE_SQL.encode())
    conn = await asyncpg.connect(database_url)
    watcher = await asyncpg.connect(database_url)
    try:
        pid = conn.get_server_pid()
        batch = asyncio.ensure_future(
            Evaluator("main", 10_000, write_chunk_rows=CHUNK).run_batch(conn, index)
        )
        while not await watcher.fetchval(
            "SELECT wait_event = 'PgSleep' FROM pg_stat_activity WHERE pid = $1", pid
        ):
            assert not batch.done()
        batch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await batch
        assert await conn.fetchval("SELECT 1") == 1
        assert not conn.is_in_transaction()
    finally:
        await watcher.close()
        await conn.close()
    _nothing_written(database_url)

"""Confirmations (issue 16): an event is evaluated once its block is N deep, exactly once.

The first tests drive one Evaluator against the real database (fast, every case); the
end-to-end ones run `engine run` and `engine worker` as a user would, with checkpoint rows
advancing as an indexer writes them, and kill -9 in between.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import psycopg

import sql
from devkit.localstack import free_port
from engine.chains_config import ChainSettings, ChainsSettings
from engine.emit import EVENT_COLUMNS, build_event
from engine.evaluator import BatchResult, Evaluator
from rules import RuleIndex, load_rules_text
from tests.fakes.webhook import WebhookReceiver
from tests.integration.test_http import get, metric
from tests.processes import (
    engine_processes,
    query_all,
    query_value,
    run_engine,
    wait_until,
    write_config,
)

HELD_CHAIN = 84532  # confirmations: 3
#: The chain cursors holding rows (engine.confirmations): none once all is evaluated.
CHAIN_CURSORS = "SELECT count(*) FROM engine_cursors WHERE chain_id IS NOT NULL"
FAST_CHAIN = 11155111  # confirmations: 0 (the default)
CHAINS = ChainsSettings(by_id={HELD_CHAIN: ChainSettings(confirmations=3, name="base-sepolia")})
CHAINS_CONFIG = {HELD_CHAIN: {"confirmations": 3, "name": "base-sepolia"}}

RULE = """
rules:
  - id: feedback
    on: {{registry: reputation, event_type: NewFeedback}}
    actions:
      - rest:
          url: {url}/hooks/feedback
          body: {{id: "{{{{ event.id }}}}", score: "{{{{ event.score }}}}"}}
        retry: {{attempts: 1}}
"""
COUNT_RULE = """
rules:
  - id: third-feedback
    on: {registry: reputation, event_type: NewFeedback}
    per: agent_id
    when:
      count: {at_least: 3, within: 1h}
    actions:
      - rest: {url: "http://127.0.0.1:9/x", body: {n: "{{ state.count }}"}}
  - id: score-99
    on: {registry: reputation, event_type: NewFeedback}
    where: {score: 99}
    actions:
      - rest: {url: "http://127.0.0.1:9/x", body: {s: "{{ event.score }}"}}
"""


def write_event(
    conn: sql.Connection, chain_id: int, block: int, log_index: int = 0, **fields: Any
) -> str:
    """One events row as an indexer writes it (in its own transaction: autocommit)."""
    event = build_event(
        "reputation",
        "NewFeedback",
        {"chain_id": chain_id, "block_number": block, "log_index": log_index, "agent_id": 7}
        | fields,
    )
    sql.run(conn, "insert_event", *(event.get(c) for c in EVENT_COLUMNS))
    return str(event["id"])


def set_checkpoint(conn: sql.Connection, chain_id: int, block: int) -> None:
    conn.execute(
        b"INSERT INTO checkpoints (chain_id, last_block_number, last_block_hash)"
        b" VALUES ($1, $2, '0xh') ON CONFLICT (chain_id)"
        b" DO UPDATE SET last_block_number = EXCLUDED.last_block_number",
        (chain_id, block),
    )


def fired(database_url: str) -> list[str]:
    """The event ids with an action row, in the order they were written."""
    return [
        r[0] for r in query_all(database_url, "SELECT event_id FROM action_results ORDER BY id")
    ]


class OneEngine:
    """An Evaluator with a rule that fires on every feedback, run a batch at a time."""

    def __init__(
        self, database_url: str, chains: ChainsSettings = CHAINS, rules: str | None = None
    ) -> None:
        loaded = load_rules_text(
            rules or RULE.format(url="http://127.0.0.1:9"), "r.yaml", environ={}
        )
        assert not loaded.errors, loaded.errors
        self.index = RuleIndex(loaded.rules)
        self.evaluator = Evaluator("main", 100, chains=chains)
        self.database_url = database_url

    async def batch(self) -> BatchResult:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await self.evaluator.run_batch(conn, self.index)
        finally:
            await conn.close()


async def test_the_head_is_the_highest_block_seen_without_a_checkpoint(database_url: str) -> None:
    engine = OneEngine(database_url)
    with sql.connect(database_url) as conn:
        ids = [write_event(conn, HELD_CHAIN, block) for block in (10, 11, 12)]
    result = await engine.batch()
    assert (result.read, result.held, result.events) == (3, 3, 0)
    assert fired(database_url) == []
    with sql.connect(database_url) as conn:
        write_event(conn, HELD_CHAIN, 13)  # 10 is now 3 deep
    result = await engine.batch()
    assert (result.held, result.released, result.events) == (1, 1, 1)
    assert fired(database_url) == [ids[0]]
    with sql.connect(database_url) as conn:
        write_event(conn, HELD_CHAIN, 15, log_index=1)  # 11 and 12 too, in block order
    await engine.batch()
    assert fired(database_url) == ids


async def test_a_checkpoint_row_is_the_head_and_releases_without_new_events(
    database_url: str,
) -> None:
    engine = OneEngine(database_url)
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 100)
        # Written in an order other than the blocks': evaluated in cursor order, each row
        # after those of its chain before it.
        late = write_event(conn, HELD_CHAIN, 101, log_index=0)
        early = [write_event(conn, HELD_CHAIN, 100, log_index=i) for i in (1, 0)]
        fast = write_event(conn, FAST_CHAIN, 5)  # no confirmations: evaluated at once
    await engine.batch()
    assert fired(database_url) == [fast]  # block 105 seen is no head: the checkpoint is
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 102)
    result = await engine.batch()
    assert (result.read, result.released) == (0, 0)
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 103)  # block 100 is deep, but 101 comes first
    result = await engine.batch()
    assert (result.read, result.released, result.events) == (0, 0, 0)
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 104)
    result = await engine.batch()
    assert (result.read, result.released, result.events) == (0, 3, 3)
    assert fired(database_url) == [fast, late, *early]
    assert query_value(database_url, CHAIN_CURSORS) == 0


async def test_a_rewrite_is_evaluated_once_with_its_last_content_a_delete_never(
    database_url: str,
) -> None:
    engine = OneEngine(database_url, rules=COUNT_RULE)
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 50)
        first = write_event(conn, HELD_CHAIN, 50, score=10)
        gone = write_event(conn, HELD_CHAIN, 50, log_index=1, score=11)
    await engine.batch()
    with sql.connect(database_url) as conn:
        # The indexer's reorg: the same id written again, another deleted.
        write_event(conn, HELD_CHAIN, 50, score=99, block_hash="0xnew")
        conn.execute(b"DELETE FROM events WHERE id = $1", (gone,))
        write_event(conn, HELD_CHAIN, 51, log_index=0, score=12)
        write_event(conn, HELD_CHAIN, 52, log_index=0, score=13)
    result = await engine.batch()
    assert (result.read, result.held, result.events) == (3, 3, 0)
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 60)
    result = await engine.batch()
    # The id's two rows are read; the second lends the first its content and is dropped.
    assert (result.released, result.rewrites) == (4, 1)
    # Counted once: the third event is the one at block 52, not the rewrite; and the
    # rewrite's content is the one evaluated.
    rows = query_all(
        database_url, "SELECT trigger_id, event_id, context::text FROM action_results ORDER BY id"
    )
    assert [r[:2] for r in rows] == [("score-99", first), ("third-feedback", f"{HELD_CHAIN}-52-0")]
    assert json.loads(rows[1][2])["state"]["count"] == 3


async def test_a_rewrite_read_once_deep_enough_waits_with_its_held_id(database_url: str) -> None:
    engine = OneEngine(database_url, rules=COUNT_RULE)
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 50)
        first = write_event(conn, HELD_CHAIN, 50, score=10)
    await engine.batch()
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 60)  # the rewrite below is deep enough when read
        write_event(conn, HELD_CHAIN, 50, score=99, block_hash="0xnew")
        write_event(conn, HELD_CHAIN, 51, log_index=0, score=12)
        write_event(conn, HELD_CHAIN, 52, log_index=0, score=13)
    result = await engine.batch()
    assert (result.read, result.released, result.rewrites) == (3, 4, 1)
    rows = query_all(database_url, "SELECT trigger_id, event_id FROM action_results ORDER BY id")
    assert rows == [("score-99", first), ("third-feedback", f"{HELD_CHAIN}-52-0")]


async def test_confirmations_back_to_0_release_what_an_earlier_run_held(
    database_url: str,
) -> None:
    with sql.connect(database_url) as conn:
        held = write_event(conn, HELD_CHAIN, 10)
    await OneEngine(database_url).batch()
    assert fired(database_url) == []
    result = await OneEngine(database_url, chains=ChainsSettings()).batch()
    assert (result.released, result.events) == (1, 1)
    assert fired(database_url) == [held]


async def test_a_second_row_of_a_held_id_is_evaluated_once_with_its_content(
    database_url: str,
) -> None:
    engine = OneEngine(database_url, rules=COUNT_RULE)
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 70)
        first = write_event(conn, HELD_CHAIN, 70, score=10)
        write_event(conn, HELD_CHAIN, 70, log_index=1, score=11)
    await engine.batch()
    with sql.connect(database_url) as conn:  # the id written again, nothing deleted
        write_event(conn, HELD_CHAIN, 70, score=99, block_hash="0xnew")
    result = await engine.batch()
    assert (result.read, result.events) == (1, 0)
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 73)
        write_event(conn, HELD_CHAIN, 71, score=12)  # the third of agent 7, not the rewrite
    await engine.batch()
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 80)
    await engine.batch()
    rows = query_all(
        database_url, "SELECT trigger_id, event_id, context::text FROM action_results ORDER BY id"
    )
    assert [r[:2] for r in rows] == [("score-99", first), ("third-feedback", f"{HELD_CHAIN}-71-0")]
    assert json.loads(rows[1][2])["state"]["count"] == 3
    assert (
        query_value(database_url, "SELECT count(*) FROM event_reorgs WHERE kind = 'rewrite'") == 1
    )


async def test_confirmations_0_then_3_then_0_across_restarts_lose_and_double_nothing(
    database_url: str,
) -> None:
    written: list[str] = []
    on = ChainsSettings(by_id={HELD_CHAIN: ChainSettings(confirmations=3)})
    block = 500
    for chains in (ChainsSettings(), on, ChainsSettings(), on, ChainsSettings()):
        engine = OneEngine(database_url, chains=chains)  # a restart with the new config
        for _ in range(2):
            with sql.connect(database_url) as conn:
                set_checkpoint(conn, HELD_CHAIN, block)
                written += [write_event(conn, HELD_CHAIN, block, log_index=i) for i in (0, 1)]
                written.append(write_event(conn, FAST_CHAIN, block))
            block += 2  # events 2 blocks deep: some held at 3 confirmations
            await engine.batch()
    await OneEngine(database_url, chains=ChainsSettings()).batch()
    assert sorted(fired(database_url)) == sorted(written)
    assert query_value(database_url, CHAIN_CURSORS) == 0


async def test_a_rare_chain_s_cursor_waits_just_before_its_held_row(database_url: str) -> None:
    engine = OneEngine(database_url)
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 900)
        busy = [write_event(conn, FAST_CHAIN, 10, log_index=i) for i in range(30)]
        rare = write_event(conn, HELD_CHAIN, 900)
        busy += [write_event(conn, FAST_CHAIN, 11, log_index=i) for i in range(30)]
    await engine.batch()
    position = "SELECT txid::text, seq FROM engine_cursors WHERE name = $1"
    held_at = query_all(database_url, "SELECT txid::text, seq FROM events WHERE id = $1", rare)
    # Not where the batch began: the 30 busy rows before it are never read for it again.
    assert query_all(database_url, position, "main@chain:84532") == [
        (held_at[0][0], held_at[0][1] - 1)
    ]
    with sql.connect(database_url) as conn:
        busy += [write_event(conn, FAST_CHAIN, 12, log_index=i) for i in range(30)]
    result = await engine.batch()  # the head has not moved: the rare chain is not read
    assert (result.read, result.held, result.released) == (30, 0, 0)
    assert query_all(database_url, position, "main@chain:84532")[0][1] == held_at[0][1] - 1
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 903)
    result = await engine.batch()
    assert (result.read, result.released) == (0, 1)
    assert fired(database_url) == [*busy, rare]
    assert query_value(database_url, CHAIN_CURSORS) == 0


def feedback_config(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    receiver: WebhookReceiver,
    http_port: int | None = None,
) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.format(url=receiver.url), encoding="utf-8")
    http = {"listen": None if http_port is None else f"127.0.0.1:{http_port}"}
    return write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=str(rules),
        extra={"chains": CHAINS_CONFIG, "http": http},
    )


def delivered(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.requests]


def wait_for_ids(receiver: WebhookReceiver, ids: Sequence[str], timeout: float = 20) -> None:
    wait_until(
        lambda: {d["id"] for d in delivered(receiver)} >= set(ids),
        timeout=timeout,
        what=f"deliveries of {list(ids)}",
    )


def rules_loaded(database_url: str) -> None:
    wait_until(lambda: query_value(database_url, "SELECT count(*) FROM triggers"), what="rules")


def test_fires_only_3_deep_and_a_0_confirmation_chain_does_not_wait(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    port = free_port()
    config = feedback_config(tmp_path, database_url, redis_url, webhook_receiver, port)
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        rules_loaded(database_url)
        with sql.connect(database_url) as conn:
            set_checkpoint(conn, HELD_CHAIN, 1000)
            held = write_event(conn, HELD_CHAIN, 1000, score=1)
            fast = write_event(conn, FAST_CHAIN, 7, score=2)
        wait_for_ids(webhook_receiver, [fast])
        for head in (1001, 1002):
            with sql.connect(database_url) as conn:
                set_checkpoint(conn, HELD_CHAIN, head)
            time.sleep(1.5)  # three of engine.poll_interval_s: released by now if it were due
            assert [d["id"] for d in delivered(webhook_receiver)] == [fast]
        # What an operator sees while it waits: one held, 1 block to go, the head's source.
        [chain] = json.loads(run_engine(config, "status", "--json").stdout)["chains"]
        assert chain | {"oldest_held_seconds": 0} == {
            "chain_id": HELD_CHAIN,
            "name": "base-sepolia",
            "confirmations": 3,
            "head": 1002,
            "head_source": "checkpoints",
            "held_events": 1,
            "lowest_held_block": 1000,
            "oldest_held_seconds": 0,
            "blocks_to_release": 1,
        }
        assert "84532 base-sepolia" in run_engine(config, "status").stdout
        text = get(f"http://127.0.0.1:{port}/metrics")[1]
        assert metric(text, "engine_held_events", f'{{chain_id="{HELD_CHAIN}"}}') == 1
        assert metric(text, "engine_events_held_total") == 1
        assert (
            metric(text, "engine_confirmation_lag_seconds", f'{{chain_id="{HELD_CHAIN}"}}') or 0
        ) >= 0
        assert (
            metric(text, "engine_chain_head", f'{{chain_id="{HELD_CHAIN}",source="checkpoints"}}')
            == 1002
        )
        with sql.connect(database_url) as conn:
            set_checkpoint(conn, HELD_CHAIN, 1003)
        wait_for_ids(webhook_receiver, [held])
        time.sleep(1.0)
    assert sorted(d["id"] for d in delivered(webhook_receiver)) == sorted([fast, held])
    assert query_value(database_url, CHAIN_CURSORS) == 0


def test_a_reorg_before_confirmation_fires_once_with_the_new_content(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = feedback_config(tmp_path, database_url, redis_url, webhook_receiver)
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        rules_loaded(database_url)
        with sql.connect(database_url) as conn:
            set_checkpoint(conn, HELD_CHAIN, 200)
            replaced = write_event(conn, HELD_CHAIN, 200, score=10)
            removed = write_event(conn, HELD_CHAIN, 200, log_index=1, score=11)
        wait_until(
            lambda: (
                query_value(
                    database_url, "SELECT events FROM engine_cursors WHERE chain_id IS NULL"
                )
                == 2
            ),
            what="both read and held",
        )
        assert query_value(database_url, CHAIN_CURSORS) == 1
        with psycopg.connect(database_url, autocommit=False) as conn:  # the indexer's reorg
            conn.execute("DELETE FROM events WHERE id = %s", (removed,))
            conn.execute(
                "INSERT INTO events (id, chain_id, block_number, block_hash, transaction_hash,"
                " log_index, registry, event_type, agent_id, timestamp, score)"
                " VALUES (%s, %s, 200, '0xnew', '0xt', 0, 'reputation', 'NewFeedback', 7,"
                " 1764000000, 20)",
                (replaced, HELD_CHAIN),
            )
        with sql.connect(database_url) as conn:
            set_checkpoint(conn, HELD_CHAIN, 203)
        wait_for_ids(webhook_receiver, [replaced])
        time.sleep(1.0)
    assert delivered(webhook_receiver) == [{"id": replaced, "score": 20}]
    assert fired(database_url) == [replaced]


def test_kill_9_while_events_are_held_each_fires_exactly_once(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = feedback_config(tmp_path, database_url, redis_url, webhook_receiver)
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 300)
    ids: list[str] = []
    with engine_processes(config, tmp_path, ["worker"]):
        for round_ in range(3):
            with engine_processes(config, tmp_path, ["run"]) as [engine]:
                rules_loaded(database_url)
                with sql.connect(database_url) as conn:
                    # Four blocks of events, the head moving two blocks a round: some are
                    # released in each round, some are held when the engine dies.
                    for block in range(300 + 2 * round_, 302 + 2 * round_):
                        ids += [write_event(conn, HELD_CHAIN, block, log_index=i) for i in (0, 1)]
                    set_checkpoint(conn, HELD_CHAIN, 300 + 2 * round_ + 1)
                read = len(ids)
                wait_until(
                    lambda n=read: query_value(  # type: ignore[misc]
                        database_url, "SELECT count(*) FROM engine_cursors WHERE events >= $1", n
                    ),
                    what="every row read",
                )
                engine.kill()
            assert query_value(database_url, CHAIN_CURSORS) == 1  # some still held
        with engine_processes(config, tmp_path, ["run"]):
            with sql.connect(database_url) as conn:
                set_checkpoint(conn, HELD_CHAIN, 400)
            wait_for_ids(webhook_receiver, ids, timeout=30)
            time.sleep(1.0)
    assert sorted(d["id"] for d in delivered(webhook_receiver)) == sorted(ids)
    assert sorted(fired(database_url)) == sorted(ids)


def test_a_held_row_that_cannot_be_recorded_skips_no_other_chains_row(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    """The daemon looks for a row whose evaluation cannot be recorded among the main
    cursor's rows, one at a time, and skips it; a held row released meanwhile would make
    every one of those single-row batches fail, and innocent rows be skipped."""
    config = feedback_config(tmp_path, database_url, redis_url, webhook_receiver)
    with sql.connect(database_url) as conn:
        set_checkpoint(conn, HELD_CHAIN, 500)
        poison = write_event(conn, HELD_CHAIN, 500)  # held: 0 deep
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE action_results ADD CONSTRAINT refuse_poison"
            f" CHECK (event_id <> '{poison}')"  # type: ignore[arg-type]
        )
    with engine_processes(config, tmp_path, ["run"], ["worker"]) as (engine, _worker):
        rules_loaded(database_url)
        wait_until(lambda: query_value(database_url, CHAIN_CURSORS) == 1, what="held")
        with sql.connect(database_url) as conn:
            set_checkpoint(conn, HELD_CHAIN, 503)  # deep now: released with the rows below
            fast = [write_event(conn, FAST_CHAIN, 900 + i) for i in range(4)]
        wait_for_ids(webhook_receiver, fast)
        time.sleep(1.0)
        assert engine.alive()
    assert sorted(d["id"] for d in delivered(webhook_receiver)) == sorted(fast)
    assert "skipped" not in " ".join(
        line for line in engine.output().splitlines() if any(f in line for f in fast)
    )

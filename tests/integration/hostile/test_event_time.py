"""A hostile event `timestamp` through the real evaluator, `engine run` and the CLI.

The evaluator judges event times against its own clock: a far-future event is evaluated,
counted and logged, but changes no other event's outcome.  `engine rules reset-state`
clears what a rule has stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from devkit.localstack import free_port
from engine.evaluator import Evaluator
from engine.rulebook import mirror_rules
from rules import Rule, RuleIndex, load_rules_text
from tests.integration.test_http import get, metric
from tests.processes import (
    engine_processes,
    insert_events,
    query_all,
    run_engine,
    wait_until,
    write_config,
)

FAR_FUTURE = 9_223_372_036_854_775_807
ACTIONS = 'actions: [{rest: {url: "http://127.0.0.1:9/x"}}]'

# The same two rules for chain 1 (whose stream holds the far-future event) and chain 2
# (the same stream without it): their firings must be the same.
PAIRED_RULES = "rules:\n" + "".join(
    f"""  - id: {name}-chain-{chain}
    on: {{registry: reputation, event_type: NewFeedback, chain_id: {chain}}}
    {body}
    {ACTIONS}
"""
    for chain in (1, 2)
    for name, body in (
        ("cooldown", "throttle: {cooldown: 10m}"),
        ("count", "when: {count: {within: 1h, at_least: 2}}"),
    )
)

PER_AGENT_RULES = f"""
rules:
  - id: per-agent
    on: {{registry: reputation, event_type: NewFeedback}}
    per: agent_id
    when: {{count: {{within: 1h, at_least: 100}}}}
    {ACTIONS}
  - id: one-group
    on: {{registry: reputation, event_type: NewFeedback}}
    throttle: {{cooldown: 1h}}
    {ACTIONS}
"""


def feedback(chain: int, ts: int, **fields: Any) -> dict[str, Any]:
    return {
        "registry": "reputation",
        "event_type": "NewFeedback",
        "chain_id": chain,
        "timestamp": ts,
        **fields,
    }


def compiled(text: str) -> list[Rule]:
    loaded = load_rules_text(text, "rules.yaml", environ={})
    assert not loaded.errors, [str(e) for e in loaded.errors]
    return list(loaded.rules)


async def evaluate(database_url: str, rules: list[Rule]) -> int:
    """Mirror the rules and evaluate every pending event; the future events counted."""
    conn = await asyncpg.connect(database_url)
    try:
        await mirror_rules(conn, rules)
        result = await Evaluator("main", 1000, max_event_future_skew_s=300).run_batch(
            conn, RuleIndex(rules)
        )
    finally:
        await conn.close()
    return result.future_events


def fired_timestamps(database_url: str, rule_id: str) -> list[int]:
    rows = query_all(
        database_url,
        'SELECT e."timestamp" FROM action_results a JOIN events e ON e.id = a.event_id'
        ' WHERE a.trigger_id = $1 ORDER BY e."timestamp"',
        rule_id,
    )
    return [row[0] for row in rows]


async def test_a_far_future_event_changes_no_other_events_outcome(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    now = int(time.time())
    normal = [now - 3000, now - 2000, now - 1000]
    insert_events(
        database_url,
        [
            feedback(1, FAR_FUTURE),
            *(feedback(1, ts) for ts in normal),
            *(feedback(2, ts) for ts in normal),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="engine.evaluator"):
        future = await evaluate(database_url, compiled(PAIRED_RULES))

    assert future == 1
    for name in ("cooldown", "count"):
        poisoned, clean = (fired_timestamps(database_url, f"{name}-chain-{c}") for c in (1, 2))
        assert poisoned == clean, name
    assert fired_timestamps(database_url, "cooldown-chain-2") == normal
    assert fired_timestamps(database_url, "count-chain-2") == normal[1:]
    stored = query_all(database_url, "SELECT state::text FROM trigger_state")
    assert stored and not any(str(FAR_FUTURE) in row[0] for row in stored)
    logged = [r for r in caplog.records if r.getMessage() == "event timestamp ahead of the clock"]
    assert len(logged) == 1
    assert "engine.max_event_future_skew_s = 300" in logged[0].error  # type: ignore[attr-defined]


def test_a_running_engine_counts_and_logs_the_future_event(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    port = free_port()
    rules = tmp_path / "rules.yaml"
    rules.write_text(PAIRED_RULES, encoding="utf-8")
    config = write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=str(rules),
        extra={"http": {"listen": f"127.0.0.1:{port}"}, "engine": {"max_event_future_skew_s": 60}},
    )
    with engine_processes(config, tmp_path, ["run"]) as (engine,):
        wait_until(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, what="/healthz")
        insert_events(database_url, [feedback(1, int(time.time()) + 3600), feedback(1, 1)])

        def future_events() -> float | None:
            return metric(get(f"http://127.0.0.1:{port}/metrics")[1], "engine_future_events_total")

        wait_until(lambda: future_events() == 1.0, what="engine_future_events_total 1")
        assert (
            metric(get(f"http://127.0.0.1:{port}/metrics")[1], "engine_events_processed_total")
            == 2.0
        )
        wait_until(lambda: "event timestamp ahead of the clock" in engine.output(), what="log")
    assert engine.output().count("event timestamp ahead of the clock") == 1
    assert "engine.max_event_future_skew_s = 60" in engine.output()


def test_the_backtest_trusts_event_times_as_far_as_the_live_run_did(
    tmp_path: Path, database_url: str
) -> None:
    now = int(time.time())
    ahead = now + 100_000  # stored now, stamped a day ahead: past the default skew
    insert_events(database_url, [feedback(1, now - 3000), feedback(1, ahead), feedback(1, now)])
    rules = tmp_path / "rules.yaml"
    rules.write_text(PAIRED_RULES, encoding="utf-8")
    config = write_config(
        tmp_path, database_url=database_url, redis_url="redis://127.0.0.1:9", rules=str(rules)
    )
    done = run_engine(
        config, "rules", "backtest", str(rules), "--since", "2h", "--until", str(ahead + 1)
    )
    assert done.returncode == 0, done.stderr
    assert "cooldown-chain-1: 2 firing(s), 1 suppressed" in done.stdout
    assert "count-chain-1: 1 firing(s), 0 suppressed" in done.stdout
    assert "1 event(s) stamped more than engine.max_event_future_skew_s (300s)" in done.stdout


# engine rules reset-state


@pytest.fixture
def stored_state(database_url: str, tmp_path: Path) -> Path:
    """Two agents' groups of `per-agent` and the one group of `one-group`; the config."""
    now = int(time.time())
    insert_events(
        database_url,
        [feedback(1, now, agent_id=1), feedback(1, now, agent_id=2), feedback(1, now, agent_id=2)],
    )
    asyncio.run(evaluate(database_url, compiled(PER_AGENT_RULES)))
    assert groups(database_url) == {("one-group", ""), ("per-agent", "[1]"), ("per-agent", "[2]")}
    rules = tmp_path / "rules.yaml"
    rules.write_text(PER_AGENT_RULES, encoding="utf-8")
    return write_config(
        tmp_path, database_url=database_url, redis_url="redis://127.0.0.1:9", rules=str(rules)
    )


def groups(database_url: str) -> set[tuple[str, str]]:
    return {
        (r[0], r[1])
        for r in query_all(database_url, "SELECT trigger_id, group_key FROM trigger_state")
    }


def test_reset_state_of_every_group_of_a_rule(stored_state: Path, database_url: str) -> None:
    done = run_engine(stored_state, "rules", "reset-state", "per-agent")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "reset the state of rule 'per-agent': 2 group(s)",
        "  agent_id=1",
        "  agent_id=2",
    ]
    assert groups(database_url) == {("one-group", "")}


def test_reset_state_of_one_group(stored_state: Path, database_url: str) -> None:
    done = run_engine(stored_state, "rules", "reset-state", "per-agent", "--group", "agent_id=2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "reset the state of rule 'per-agent': 1 group(s)",
        "  agent_id=2",
    ]
    assert groups(database_url) == {("one-group", ""), ("per-agent", "[1]")}


def test_reset_state_of_a_rule_without_per(stored_state: Path, database_url: str) -> None:
    done = run_engine(stored_state, "rules", "reset-state", "one-group")
    assert done.returncode == 0, done.stderr
    assert "  (the rule's only group: it has no per)" in done.stdout
    assert groups(database_url) == {("per-agent", "[1]"), ("per-agent", "[2]")}


def test_reset_state_of_an_unknown_rule_fails_and_names_it(
    stored_state: Path, database_url: str
) -> None:
    done = run_engine(stored_state, "rules", "reset-state", "per-agnet")
    assert done.returncode == 1
    assert done.stderr.startswith("error: no rule 'per-agnet' (did you mean 'per-agent'?)")
    assert len(groups(database_url)) == 3


def test_reset_state_of_an_unknown_group_fails_and_shows_the_groups(
    stored_state: Path, database_url: str
) -> None:
    done = run_engine(stored_state, "rules", "reset-state", "per-agent", "--group", "agent_id=9")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: rule 'per-agent' has no state for the group agent_id=9;"
        " its 2 group(s) include: agent_id=1; agent_id=2"
    )
    wrong_field = run_engine(
        stored_state, "rules", "reset-state", "per-agent", "--group", "agent=1"
    )
    assert wrong_field.returncode == 1
    assert (
        "rule 'per-agent' has no per field 'agent' (did you mean 'agent_id'?)" in wrong_field.stderr
    )
    assert len(groups(database_url)) == 3


def test_a_reset_group_starts_afresh_at_the_next_batch(
    stored_state: Path, database_url: str
) -> None:
    done = run_engine(stored_state, "rules", "reset-state", "one-group")
    assert done.returncode == 0, done.stderr
    insert_events(database_url, [feedback(1, int(time.time()), agent_id=3)])
    asyncio.run(evaluate(database_url, compiled(PER_AGENT_RULES)))
    # The cooldown of the first firing was forgotten: the new event fires again.
    assert (
        len(query_all(database_url, "SELECT 1 FROM action_results WHERE trigger_id = 'one-group'"))
        == 2
    )

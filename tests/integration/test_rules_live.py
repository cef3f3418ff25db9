"""Rules inside the running engine: reloads while running, and live == backtest."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.fakes.webhook import WebhookReceiver
from tests.processes import (
    engine_processes,
    insert_events,
    query_all,
    query_value,
    run_engine,
    wait_until,
    write_config,
)

PAIR_RULE = """
rules:
  - id: pair
    on: {{registry: reputation, event_type: NewFeedback}}
    where: {where}
    per: agent_id
    when:
      count: {{within: 1h, at_least: 2}}
    actions:
      - rest: {{url: "{url}", body: {{n: "{{{{ state.count }}}}"}}}}
"""


def feedback(agent_id: int, ts: int, score: int = 50) -> dict[str, object]:
    return {
        "registry": "reputation",
        "event_type": "NewFeedback",
        "agent_id": agent_id,
        "score": score,
        "timestamp": ts,
    }


def content_hash(dsn: str) -> str | None:
    value = query_value(dsn, "SELECT content_hash FROM triggers WHERE id = 'pair'")
    return None if value is None else str(value)


def test_rule_edits_while_running(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    rules = tmp_path / "pair.yaml"
    url = webhook_receiver.url
    rules.write_text(PAIR_RULE.format(where="{agent_id: 1}", url=f"{url}/v1"), encoding="utf-8")
    config = write_config(
        tmp_path, database_url=database_url, redis_url=redis_url, rules=str(rules)
    )
    t0 = 1_764_000_000
    with engine_processes(config, tmp_path, ["run"], ["worker"]) as (engine, _worker):
        first_hash = wait_until(lambda: content_hash(database_url), what="rule mirrored")
        insert_events(database_url, [feedback(1, t0), feedback(1, t0 + 1)])
        assert webhook_receiver.wait_for(1)[0].path == "/v1"

        # 1. Only the action changes: the count goes on from 2 to 3 and fires at /v2.
        rules.write_text(PAIR_RULE.format(where="{agent_id: 1}", url=f"{url}/v2"), encoding="utf-8")
        wait_until(lambda: content_hash(database_url) != first_hash, what="actions-only reload")
        insert_events(database_url, [feedback(1, t0 + 2)])
        second = webhook_receiver.wait_for(2)[1]
        assert (second.path, second.json) == ("/v2", {"n": 3})

        # 2. A bad edit is reported and the running rules stay.
        rules.write_text("rules: [\n", encoding="utf-8")
        wait_until(lambda: "rule change rejected" in engine.output(), what="the rejection logged")
        insert_events(database_url, [feedback(1, t0 + 3)])
        assert webhook_receiver.wait_for(3)[2].json == {"n": 4}

        # 3. The logic changes: fresh state, so one more event is a count of 1: no firing.
        hash_before = content_hash(database_url)
        rules.write_text(
            PAIR_RULE.format(where="{agent_id: 1, score: {lt: 100}}", url=f"{url}/v3"),
            encoding="utf-8",
        )
        wait_until(lambda: content_hash(database_url) != hash_before, what="logic reload")
        insert_events(database_url, [feedback(1, t0 + 4)])
        wait_until(
            lambda: query_value(database_url, "SELECT events FROM engine_cursors") == 5,
            what="the fifth event evaluated",
        )
        time.sleep(1.0)
        assert len(webhook_receiver.requests) == 3
        insert_events(database_url, [feedback(1, t0 + 5)])
        assert webhook_receiver.wait_for(4)[3].json == {"n": 2}
        assert engine.alive()


STREAM_RULES = """
rules:
  - id: ema-low
    on: {registry: reputation, event_type: NewFeedback}
    per: agent_id
    when:
      ema: {of: score, window: 3, below: 50}
    throttle: {cooldown: 30s}
    actions:
      - rest: {url: "http://127.0.0.1:9/unused", body: {ema: "{{ state.ema }}"}}
  - id: burst
    on: {registry: reputation}
    per: client_address
    when:
      count: {within: 60s, at_least: 3, reset_on_fire: true}
    actions:
      - rest: {url: "http://127.0.0.1:9/unused"}
"""


def test_live_and_backtest_give_the_same_firings(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    rules = tmp_path / "stream.yaml"
    rules.write_text(STREAM_RULES, encoding="utf-8")
    config = write_config(
        tmp_path, database_url=database_url, redis_url=redis_url, rules=str(rules)
    )
    now = int(time.time()) - 3600
    stream = [
        {
            **feedback(agent_id=i % 4, ts=now + 5 * i, score=(i * 37) % 100),
            "client_address": f"0x{(i % 3):040x}",
        }
        for i in range(120)
    ]
    with engine_processes(config, tmp_path, ["run"]):
        for chunk in range(0, len(stream), 30):  # several batches and transactions
            insert_events(database_url, stream[chunk : chunk + 30])
        wait_until(
            lambda: query_value(database_url, "SELECT events FROM engine_cursors") == len(stream),
            what="the stream evaluated",
        )
    live = sorted(
        (r[0], r[1])
        for r in query_all(
            database_url,
            "SELECT trigger_id, event_id FROM action_results WHERE action_index = 0",
        )
    )
    result = run_engine(config, "rules", "backtest", str(rules), "--since", "2d")
    assert result.returncode == 0, result.stderr
    offline = sorted(
        (m.group(1), m.group(2))
        for m in re.finditer(r"^([a-z-]+): event (\S+) block", result.stdout, re.MULTILINE)
    )
    assert len(live) > 5
    assert {t for t, _ in live} == {"ema-low", "burst"}
    assert offline == live
    assert f"{len(stream)} event(s)" in result.stdout
    # The backtest wrote nothing.
    assert query_value(database_url, "SELECT count(*) FROM action_results") == len(live)

"""Digests (`group:`) end to end: firings collected per group, one action per digest,
`interval` between digests, Telegram's length limit, and kill -9 in a digest window."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devkit.localstack import free_port
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.webhook import WebhookReceiver
from tests.integration.test_http import get, metric
from tests.processes import (
    EngineProcess,
    engine_processes,
    insert_events,
    query_all,
    query_value,
    run_engine,
    wait_until,
    write_config,
)

BOT_TOKEN = "123456:TEST-token-abcdef"


def feedback(agent_id: int, score: int = 10) -> dict[str, object]:
    return {
        "registry": "reputation",
        "event_type": "NewFeedback",
        "agent_id": agent_id,
        "score": score,
    }


def digest_rule(url: str, *, wait: str, interval: str, max_listed: int = 50) -> str:
    return f"""
rules:
  - id: low-scores
    labels: {{team: ops}}
    on: {{registry: reputation, event_type: NewFeedback}}
    where: {{score: {{lt: 50}}}}
    group: {{by: [agent_id], wait: {wait}, interval: {interval}, max: {max_listed}}}
    actions:
      - rest:
          url: {url}
          body:
            agent: "{{{{ group.agent_id }}}}"
            count: "{{{{ count }}}}"
            more: "{{{{ more }}}}"
            team: "{{{{ rule.labels.team }}}}"
            ids: "{{{{ firings | map(attribute='event') | map(attribute='id') | list }}}}"
"""


def configure(
    tmp_path: Path, database_url: str, redis_url: str, rules: str, **extra: object
) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(rules, encoding="utf-8")
    return write_config(
        tmp_path, database_url=database_url, redis_url=redis_url, rules=str(path), extra=extra
    )


def digest_rows(database_url: str) -> list[dict[str, object]]:
    rows = query_all(
        database_url,
        "SELECT event_id, context::text FROM action_results WHERE trigger_id = 'low-scores'"
        " ORDER BY id",
    )
    return [{"event_id": e, **json.loads(c)} for e, c in rows]


def test_firings_of_a_group_become_one_digest_then_wait_for_the_interval(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    rules = digest_rule(webhook_receiver.url, wait="2s", interval="4s", max_listed=3)
    port = free_port()
    config = configure(
        tmp_path, database_url, redis_url, rules, http={"listen": f"127.0.0.1:{port}"}
    )
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        wait_until(lambda: query_value(database_url, "SELECT count(*) FROM triggers"), what="rules")
        insert_events(database_url, [feedback(1) for _ in range(5)] + [feedback(2)] * 2)
        insert_events(database_url, [feedback(1, score=90)])  # does not fire
        first = webhook_receiver.wait_for(2, timeout=20)
        time.sleep(1)
        assert len(webhook_receiver.requests) == 2  # one per group, not one per firing
        by_agent = {r.json["agent"]: r.json for r in first}
        assert by_agent[1]["count"] == 5 and by_agent[1]["more"] == 2
        assert len(by_agent[1]["ids"]) == 3  # `max` listed, all counted
        assert by_agent[2]["count"] == 2 and by_agent[2]["more"] == 0
        assert by_agent[1]["team"] == "ops"  # the rule's labels, as in any firing's template
        sent_at = max(r.received_at for r in first)
        # Within the interval: held until the previous digest's time + interval.
        insert_events(database_url, [feedback(1), feedback(1)])
        second = webhook_receiver.wait_for(3, timeout=20)[2]
        assert second.json["agent"] == 1 and second.json["count"] == 2
        assert second.received_at - sent_at >= 4 - 1.0  # the interval (minus clock slack)
        _, text = get(f"http://127.0.0.1:{port}/metrics")
        assert metric(text, "engine_digests_sent_total") == 3
    assert query_value(database_url, "SELECT count(*) FROM digest_firings") == 0
    rows = digest_rows(database_url)
    assert [r["event_id"].startswith("digest:[1]:") for r in rows].count(True) == 2
    assert all(r["rule"]["id"] == "low-scores" for r in rows)


def test_telegram_digest_is_split_within_the_limit_and_says_how_many_more(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    api = FakeTelegramAPI({BOT_TOKEN})
    api.start()
    rules = """
rules:
  - id: low-scores
    on: {registry: reputation, event_type: NewFeedback}
    group: {by: [agent_id], wait: 1s, max: 40}
    actions:
      - telegram:
          chat_id: "-100123"
          text: |-
            <b>{{ count }} low scores for agent {{ group.agent_id }}</b>
            {% for f in firings %}{{ f.event.id }} scored {{ f.event.score }}: {{ f.event.tag1 }}
            {% endfor %}{% if more %}and {{ more }} more{% endif %}
"""
    config = configure(
        tmp_path,
        database_url,
        redis_url,
        rules,
        telegram={"api_base_url": api.api_base_url, "bots": {"default": {"token": BOT_TOKEN}}},
    )
    try:
        with engine_processes(config, tmp_path, ["run"], ["worker"]):
            wait_until(lambda: query_value(database_url, "SELECT count(*) FROM triggers"))
            insert_events(database_url, [{**feedback(3), "tag1": "x" * 200} for _ in range(60)])
            wait_until(
                lambda: query_value(database_url, "SELECT status FROM action_results") == "success",
                what="the digest to be delivered",
            )
        messages = api.messages
        assert len(messages) >= 2  # 40 lines of ~250 characters: over one message
        assert all(len(m.plain.encode("utf-16-le")) // 2 <= 4096 for m in messages)
        text = "".join(m.plain for m in messages)
        assert text.startswith("60 low scores for agent 3")
        assert text.count("scored 10") == 40
        assert text.rstrip().endswith("and 20 more")
        assert query_value(database_url, "SELECT count(*) FROM action_results") == 1
    finally:
        api.stop()


# -- kill -9 in a digest window ------------------------------------------------------------


class Stream(threading.Thread):
    """Inserts ``n`` firing events, a few per transaction, while the engine is killed."""

    def __init__(self, database_url: str, n: int) -> None:
        super().__init__(daemon=True)
        self.database_url = database_url
        self.n = n
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for start in range(0, self.n, 3):
                insert_events(
                    self.database_url,
                    [feedback(10 + i % 3) for i in range(start, min(start + 3, self.n))],
                )
                time.sleep(0.05)
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


def test_kill_9_in_a_digest_window_loses_and_doubles_no_firing(
    tmp_path: Path, database_url: str, redis_url: str, receiver: WebhookReceiver
) -> None:
    rules = digest_rule(receiver.url, wait="1s", interval="1s", max_listed=1000)
    config = configure(tmp_path, database_url, redis_url, rules)
    n = 90
    with engine_processes(config, tmp_path, ["worker"]):
        engine = EngineProcess(config, "run", log_path=tmp_path / "run.log").start()
        try:
            wait_until(lambda: query_value(database_url, "SELECT count(*) FROM triggers"))
            stream = Stream(database_url, n)
            stream.start()
            rng = random.Random()
            for _ in range(4):
                time.sleep(rng.uniform(0.3, 1.3))  # lands in a window, or in a flush
                engine.kill()
                engine = EngineProcess(config, "run", log_path=tmp_path / "run.log").start()
            stream.join(30)
            assert stream.error is None
            wait_until(
                lambda: query_value(
                    database_url,
                    "SELECT (SELECT count(*) FROM digest_firings) = 0"
                    " AND (SELECT count(*) FROM digest_groups WHERE due_at IS NOT NULL) = 0"
                    " AND (SELECT count(*) FROM engine_cursors WHERE events >= $1) = 1",
                    n,
                ),
                timeout=30,
                what="every firing sent",
            )
            wait_until(
                lambda: query_value(
                    database_url,
                    "SELECT bool_and(status = 'success') FROM action_results",
                ),
                timeout=30,
                what="every digest delivered",
            )
        finally:
            engine.stop()
    fired = {
        r[0]
        for r in query_all(database_url, "SELECT id FROM events WHERE event_type = 'NewFeedback'")
    }
    in_digests = Counter(
        firing["event"]["id"] for row in digest_rows(database_url) for firing in row["firings"]
    )
    assert set(in_digests) == fired, "a firing was lost"
    assert max(in_digests.values()) == 1, "a firing is in two digests"
    delivered = Counter(i for r in receiver.requests for i in r.json["ids"])
    assert set(delivered) == fired


def test_a_backtest_says_which_digests_and_resolved_notices_would_have_been_sent(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    rules = """
rules:
  - id: low-average
    on: {registry: reputation, event_type: NewFeedback}
    per: agent_id
    when: {avg: {of: score, within: 1d, below: 50}}
    group: {by: [agent_id], wait: 1m, interval: 10m}
    actions: [{rest: {url: "http://127.0.0.1:9/x", body: {n: "{{ count }}"}}}]
    resolve:
      actions: [{rest: {url: "http://127.0.0.1:9/x", body: {ok: "{{ alert.firings }}"}}}]
"""
    config = configure(tmp_path, database_url, redis_url, rules)
    start = 1_767_225_600  # 2026-01-01 00:00 UTC
    # Agent 5: three low scores in the first minute (one digest), two more 20 minutes on
    # (a second digest), then a high score that lifts the average over 50 (resolved).
    stored = [(0, 10), (20, 12), (40, 14), (1200, 16), (1210, 18), (1800, 400)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for n, (offset, score) in enumerate(stored):
            conn.execute(
                """INSERT INTO events (id, chain_id, block_number, block_hash, transaction_hash,
                                       log_index, registry, event_type, agent_id, score,
                                       "timestamp", created_at)
                   VALUES (%s, 1, %s, '0xb', '0xt', 0, 'reputation', 'NewFeedback', 5, %s, %s,
                           to_timestamp(%s))""",
                (f"1-{n}-0", n, score, start + offset, start + offset),
            )
    out = run_engine(
        config,
        "rules",
        "backtest",
        str(tmp_path / "rules.yaml"),
        "--since",
        str(start - 60),
        "--until",
        str(start + 3600),
    )
    assert out.returncode == 0, out.stderr
    assert "low-average: 5 firing(s), 0 suppressed" in out.stdout
    assert "2 digest(s), holding 5 firing(s):" in out.stdout
    assert "3 firing(s), sent 2026-01-01 00:01:00 UTC" in out.stdout  # first + wait
    assert "2 firing(s), sent 2026-01-01 00:21:00 UTC" in out.stdout
    assert "1 resolved notice(s)" in out.stdout

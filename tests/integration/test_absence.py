"""Absence rules (`when.absent`) in `engine run`: fired by time, once, across kill -9.

The end-to-end tests run the real `engine run` and `engine worker` against the webhook
stand-in; the tick's own tests drive engine.absence on a real database.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import asyncpg
import psycopg

from engine.absence import AbsenceTicker, note_seen
from rules import load_rules_text
from tests.fakes.webhook import WebhookReceiver
from tests.integration.tenants.api_fixtures import Api, api
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

__all__ = ["api"]

RULE = """
rules:
  - id: quiet
    on: {{registry: reputation, event_type: NewFeedback}}
    per: agent_id
    when:
      absent: {{for: {period}, expect: {expect}}}
    actions:
      - rest:
          url: {url}/hooks/quiet
          body:
            agent: "{{{{ group.agent_id }}}}"
            quiet_for: "{{{{ absent.for }}}}"
            last_seen_at: "{{{{ absent.last_seen_at }}}}"
        retry: {{attempts: 1}}
"""


def feedback(agent_id: int) -> dict[str, object]:
    return {"registry": "reputation", "event_type": "NewFeedback", "agent_id": agent_id}


def setup(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    url: str,
    *,
    period: str,
    expect: str = "null",
) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.format(url=url, period=period, expect=expect), encoding="utf-8")
    return write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=str(rules),
        extra={"engine": {"absence_tick_interval_s": 0.2, "standby_retry_s": 0.2}},
    )


def agents_posted(receiver: WebhookReceiver) -> list[int]:
    return [r.json["agent"] for r in receiver.requests]


def test_a_quiet_agent_alerts_once_and_again_only_after_being_seen_again(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = setup(
        tmp_path,
        database_url,
        redis_url,
        webhook_receiver.url,
        period="2s",
        expect="[{agent_id: 99}]",
    )
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        wait_until(lambda: query_value(database_url, "SELECT count(*) FROM triggers"))
        insert_events(database_url, [feedback(42)])
        seen_at = time.time()
        requests = webhook_receiver.wait_for(2, timeout=20)
        by_agent = {r.json["agent"]: r for r in requests}
        assert set(by_agent) == {42, 99}
        # Not before its `for` had passed since the event was evaluated.
        assert by_agent[42].received_at >= seen_at + 2 - 0.5
        assert by_agent[42].json["quiet_for"] == "2s"
        assert by_agent[42].json["last_seen_at"] is not None
        assert by_agent[99].json["last_seen_at"] is None  # expected, never seen
        time.sleep(3)  # both stay quiet: no second alert
        assert sorted(agents_posted(webhook_receiver)) == [42, 99]
        insert_events(database_url, [feedback(42)])  # back, then quiet again
        webhook_receiver.wait_for(3, timeout=20)
        time.sleep(1)
        assert sorted(agents_posted(webhook_receiver)) == [42, 42, 99]
    rows = query_all(
        database_url,
        "SELECT event_id, status FROM action_results WHERE trigger_id = 'quiet' ORDER BY id",
    )
    assert len(rows) == 3 and all(status == "success" for _, status in rows)
    assert all(event_id.startswith("absent:") for event_id, _ in rows)
    assert len({event_id for event_id, _ in rows}) == 3
    status = run_engine(config, "status")
    assert "absence groups (when.absent): 2 watched, 0 armed, 0 due now" in status.stdout


def test_kill_9_in_the_middle_of_a_tick_the_standby_alerts_exactly_once(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    """The leader is killed while its tick's transaction is open (held on a lock the test
    takes on the rule's counters): nothing of it commits, and the standby that takes over
    sends each alert once."""
    agents = list(range(1, 21))
    config = setup(tmp_path, database_url, redis_url, webhook_receiver.url, period="3s")
    leader = EngineProcess(config, "run", log_path=tmp_path / "leader.log").start()
    standby = EngineProcess(config, "run", log_path=tmp_path / "standby.log")
    worker = EngineProcess(config, "worker", log_path=tmp_path / "worker.log").start()
    blocker = psycopg.connect(database_url, autocommit=False)
    try:
        wait_until(lambda: query_value(database_url, "SELECT count(*) FROM triggers"))
        standby.start()
        insert_events(database_url, [feedback(a) for a in agents])
        wait_until(
            lambda: query_value(database_url, "SELECT count(*) FROM absence_groups") == 20,
            what="the groups seen",
        )
        # The batch wrote the rule's counters; holding them stops the tick inside its
        # transaction, after it has locked the due groups and written their action rows.
        blocker.execute("SELECT 1 FROM rule_stats WHERE trigger_id = 'quiet' FOR UPDATE")
        wait_until(
            lambda: query_value(
                database_url,
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE '%rule_stats%'",
            ),
            what="the tick waiting inside its transaction",
        )
        leader.kill()
        blocker.rollback()
        assert query_value(database_url, "SELECT count(*) FROM action_results") == 0
        webhook_receiver.wait_for(20, timeout=30)
        time.sleep(1.5)  # the sweep and any second tick had their chance to double
        assert sorted(agents_posted(webhook_receiver)) == agents
        assert query_value(database_url, "SELECT count(*) FROM action_results") == 20
        assert "absence rules fired" in standby.output()
    finally:
        blocker.close()
        for proc in (worker, standby, leader):
            proc.stop()


# -- the tick itself, on a real database ----------------------------------------------------

TICK_RULE = """
rules:
  - id: quiet
    on: {registry: reputation, event_type: NewFeedback}
    per: agent_id
    when: {absent: {for: 1m}}
    actions:
      - telegram: {chat_id: 1, text: "{{ group.agent_id }}"}
      - rest: {url: "http://127.0.0.1:9/x"}
"""


def absence_rules(text: str = TICK_RULE) -> dict:
    result = load_rules_text(text, "rules/test.yaml", environ={})
    assert result.errors == []
    return {rule.id: rule for rule in result.rules}


async def see(conn: asyncpg.Connection, rules: dict, agents: list[int], at: float) -> None:
    rule = rules["quiet"]
    async with conn.transaction():
        await note_seen(conn, [({"agent_id": a}, rule, "") for a in agents], at)


async def test_a_tick_fires_due_groups_in_chunks_once_each(database_url: str) -> None:
    rules = absence_rules()
    conn = await asyncpg.connect(database_url)
    try:
        now = time.time()
        await see(conn, rules, list(range(25)), now - 61)
        await see(conn, rules, [100], now - 30)  # not due yet
        ticker = AbsenceTicker(tick_rows=10, tick_interval_s=60)
        chunks = [await ticker.tick(conn, rules, now) for _ in range(4)]
        assert [(c.fired, c.more) for c in chunks] == [
            (10, True),
            (10, True),
            (5, False),
            (0, False),
        ]
        assert sum(len(c.action_ids) for c in chunks) == 50  # two actions each
        rows = await conn.fetch("SELECT event_id, action_index FROM action_results")
        per_event = Counter(r["event_id"] for r in rows)
        assert len(per_event) == 25 and set(per_event.values()) == {2}
        # Seen again, quiet again: a new period, a new firing.
        await see(conn, rules, [3], now - 62)
        again = await ticker.tick(conn, rules, now)
        assert again.fired == 1
        assert await conn.fetchval("SELECT count(DISTINCT event_id) FROM action_results") == 26
        # Fired groups are left out of the index of due rows.
        assert (
            await conn.fetchval("SELECT count(*) FROM absence_groups WHERE due_at IS NOT NULL") == 1
        )
    finally:
        await conn.close()


async def test_two_engines_ticking_at_once_fire_each_group_once(database_url: str) -> None:
    rules = absence_rules()
    a, b = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        now = time.time()
        await see(a, rules, list(range(200)), now - 61)
        one = AbsenceTicker(tick_rows=50, tick_interval_s=60)
        two = AbsenceTicker(tick_rows=50, tick_interval_s=60)
        fired = 0
        for _ in range(5):
            results = await asyncio.gather(one.tick(a, rules, now), two.tick(b, rules, now))
            fired += sum(r.fired for r in results)
        assert fired == 200
        assert await a.fetchval("SELECT count(*) FROM action_results") == 400
    finally:
        await a.close()
        await b.close()


async def test_expected_groups_and_rules_that_change_or_go(database_url: str) -> None:
    expecting = absence_rules(TICK_RULE.replace("{for: 1m}", "{for: 1m, expect: [{agent_id: 7}]}"))
    conn = await asyncpg.connect(database_url)
    try:
        now = time.time()
        ticker = AbsenceTicker(tick_rows=100, tick_interval_s=60)
        assert (await ticker.tick(conn, expecting, now)).fired == 0  # watched from now
        assert (await ticker.tick(conn, expecting, now + 59)).fired == 0
        # A restarted engine (a new ticker) keeps the watch's start, not its own.
        assert (
            await AbsenceTicker(tick_rows=100, tick_interval_s=60).tick(conn, expecting, now + 60)
        ).fired == 1
        # The rule's logic changes: its groups start afresh.
        await see(conn, expecting, [8], now)
        changed = absence_rules(TICK_RULE.replace("1m", "2m"))
        assert (await ticker.tick(conn, changed, now + 100)).fired == 0
        assert await conn.fetchval("SELECT count(*) FROM absence_groups") == 0
        # A rule no longer loaded: its due groups are dropped, not fired.
        await see(conn, changed, [9], now)
        gone = await ticker.tick(conn, {}, now + 200)
        assert (gone.fired, gone.dropped) == (0, 1)
    finally:
        await conn.close()


# -- the API's rule-test run: the same runner as `engine rules test` -----------------------


def test_the_api_runs_an_absence_rules_advance_tests(api: Api) -> None:
    org = api.org()
    rule = """\
id: quiet
on: {registry: reputation, event_type: NewFeedback}
per: agent_id
when: {absent: {for: 1h}}
actions:
  - rest: {url: "http://127.0.0.1:9/x", body: {since: "{{ absent.last_seen_at }}"}}
tests:
  - name: quiet for an hour
    events: [{agent_id: 1}, {advance: 59m}, {advance: 1m}]
    fires: [2]
    renders: [{firing: 0, contains: "2026-01-01T00:00:00"}]
  - name: a wrong expectation
    events: [{agent_id: 1}, {advance: 2h}]
    fires: []
"""
    events = [{"agent_id": 5}, {"advance": "30m"}, {"agent_id": 6}, {"advance": "45m"}]
    answer = api.call("POST", "/v1/rule-tests", org.viewer, json={"rule": rule, "events": events})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    first, second = report["tests"]
    assert (first["passed"], first["actual_fires"]) == (True, [2])
    assert (second["passed"], second["actual_fires"]) == (False, [1])
    # The request's own steps: agent 5 goes quiet at the second advance, agent 6 not yet.
    assert report["events"]["fired"] == [3]
    [firing] = report["events"]["firings"]
    assert firing["group"] == {"agent_id": 5}
    assert firing["event_id"].startswith("absent:")
    [action] = firing["actions"]
    assert action["rendered"]["body"] == {"since": "2026-01-01T00:00:00.000+00:00"}


def test_a_tenant_sees_only_its_own_absence_groups(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        orgs = [
            conn.execute(
                "INSERT INTO organizations (name) VALUES (%s) RETURNING id", (name,)
            ).fetchone()[0]
            for name in ("acme", "globex")
        ]
        for org in (*orgs, None):
            conn.execute(
                "INSERT INTO absence_groups (trigger_id, group_key, group_values, org_id,"
                " logic_hash, quiet_since) VALUES (%s, '[1]', '{}', %s, 'h', now())",
                (f"{org}/quiet", org),
            )
    with psycopg.connect(database_url) as conn:
        conn.execute("SET LOCAL ROLE engine_tenant")
        conn.execute("SELECT set_config('engine.org_id', %s, true)", (str(orgs[0]),))
        seen = conn.execute("SELECT org_id FROM absence_groups").fetchall()
        assert seen == [(orgs[0],)]


def test_a_backtest_replays_absence_on_the_stored_events_clock(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    config = setup(tmp_path, database_url, redis_url, "http://127.0.0.1:9", period="1h")
    start = 1_767_225_600  # 2026-01-01 00:00 UTC
    with psycopg.connect(database_url, autocommit=True) as conn:
        for n, (agent, minutes) in enumerate([(1, 0), (2, 10), (1, 30), (2, 100)]):
            conn.execute(
                """INSERT INTO events (id, chain_id, block_number, block_hash, transaction_hash,
                                       log_index, registry, event_type, agent_id, "timestamp",
                                       created_at)
                   VALUES (%s, 1, %s, '0xb', '0xt', 0, 'reputation', 'NewFeedback', %s, %s,
                           to_timestamp(%s))""",
                (f"1-{n}-0", n, agent, start + minutes * 60, start + minutes * 60),
            )
    rules = str(tmp_path / "rules.yaml")
    since, until = str(start - 60), str(start + 200 * 60)
    out = run_engine(config, "rules", "backtest", rules, "--since", since, "--until", until)
    assert out.returncode == 0, out.stderr
    quiet = [line for line in out.stdout.splitlines() if line.startswith("quiet: quiet for")]
    # Agent 2 went quiet at 01:10 (fired before agent 2's next event at 01:40, listed
    # there), agent 1 at 01:30, agent 2 again at 02:40; the backtest ends at 03:20.
    assert quiet == [
        "quiet: quiet for 1h at 2026-01-01T01:10:00.000+00:00"
        ' (last seen 2026-01-01T00:10:00.000+00:00) group {"agent_id": 2}',
        "quiet: quiet for 1h at 2026-01-01T01:30:00.000+00:00"
        ' (last seen 2026-01-01T00:30:00.000+00:00) group {"agent_id": 1}',
        "quiet: quiet for 1h at 2026-01-01T02:40:00.000+00:00"
        ' (last seen 2026-01-01T01:40:00.000+00:00) group {"agent_id": 2}',
    ]
    assert "quiet: 3 firing(s)" in out.stdout


def test_the_api_backtests_a_stored_absence_rule(api: Api) -> None:
    org = api.org()
    agent = 777_000_000 + int(time.time()) % 1000  # the module's events table is shared
    rule = f"""\
id: quiet
on: {{registry: reputation, event_type: NewFeedback}}
where: {{agent_id: {agent}}}
per: agent_id
when: {{absent: {{for: 1s}}}}
actions:
  - rest: {{url: "http://127.0.0.1:9/x", body: {{agent: "{{{{ group.agent_id }}}}"}}}}
"""
    put = api.call("PUT", "/v1/rules/quiet", org.editor, body=rule, content_type="application/yaml")
    assert put.status_code == 201, put.text
    insert_events(api.dsn, [feedback(agent)])
    time.sleep(2)  # the backtest runs to now: the agent has been quiet for longer than 1s
    answer = api.call("POST", "/v1/rules/quiet/backtest", org.viewer, json={"since": "1d"})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["complete"], report["fired"]) == (True, 1)
    [firing] = report["firings"]
    assert firing["group"] == {"agent_id": agent}
    assert firing["actions"][0]["rendered"]["body"] == {"agent": agent}

"""`resolve:` end to end: a group that fired is resolved once, by its next event that does
not meet `when`, or by `after` passing without a firing (also across a kill -9)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fakes.webhook import WebhookReceiver
from tests.processes import (
    EngineProcess,
    engine_processes,
    insert_events,
    query_value,
    run_engine,
    wait_until,
    write_config,
)


def feedback(agent_id: int, score: int) -> dict[str, object]:
    return {
        "registry": "reputation",
        "event_type": "NewFeedback",
        "agent_id": agent_id,
        "score": score,
    }


def resolve_rule(url: str, after: str | None = None) -> str:
    after_line = f"\n      after: {after}" if after else ""
    return f"""
rules:
  - id: low-average
    on: {{registry: reputation, event_type: NewFeedback}}
    per: agent_id
    when:
      avg: {{of: score, within: 1d, below: 50}}
    actions:
      - rest:
          url: {url}
          body: {{kind: fired, agent: "{{{{ event.agent_id }}}}"}}
    resolve:{after_line}
      actions:
        - rest:
            url: {url}
            body:
              kind: resolved
              agent: "{{{{ group.agent_id }}}}"
              firings: "{{{{ alert.firings }}}}"
              fired_at: "{{{{ alert.fired_at }}}}"
              resolved_at: "{{{{ alert.resolved_at }}}}"
              by: "{{{{ event.id }}}}"
"""


def configure(tmp_path: Path, database_url: str, redis_url: str, rules: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(rules, encoding="utf-8")
    return write_config(tmp_path, database_url=database_url, redis_url=redis_url, rules=str(path))


def kinds(receiver: WebhookReceiver) -> list[tuple[str, int]]:
    return [(r.json["kind"], r.json["agent"]) for r in receiver.requests]


def test_the_next_event_not_meeting_when_resolves_once(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = configure(tmp_path, database_url, redis_url, resolve_rule(webhook_receiver.url))
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        wait_until(lambda: query_value(database_url, "SELECT count(*) FROM triggers"))
        insert_events(database_url, [feedback(1, 10), feedback(1, 20), feedback(2, 10)])
        webhook_receiver.wait_for(3)
        # Agent 1's average climbs back over 50: resolved; agent 2 stays low.
        insert_events(database_url, [feedback(1, 200), feedback(2, 30)])
        insert_events(database_url, [feedback(1, 200)])  # still fine: no second notice
        requests = webhook_receiver.wait_for(5)
        wait_until(
            lambda: (
                query_value(
                    database_url, "SELECT count(*) FROM action_results WHERE status <> 'success'"
                )
                == 0
            )
        )
    assert sorted(kinds(webhook_receiver)) == [
        ("fired", 1),
        ("fired", 1),
        ("fired", 2),
        ("fired", 2),
        ("resolved", 1),
    ]
    [resolved] = [r.json for r in requests if r.json["kind"] == "resolved"]
    assert resolved["firings"] == 2
    assert resolved["fired_at"] < resolved["resolved_at"]
    assert query_value(database_url, "SELECT count(*) FROM open_alerts") == 1  # agent 2
    status = run_engine(config, "status", "--json")
    assert json.loads(status.stdout)["digests"]["open_alerts"] == 1
    assert "open alerts (resolve): 1" in run_engine(config, "status").stdout


def test_after_resolves_a_quiet_group_once_also_across_a_kill_9(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    rules = resolve_rule(webhook_receiver.url, after="2s")
    config = configure(tmp_path, database_url, redis_url, rules)
    with engine_processes(config, tmp_path, ["worker"]):
        engine = EngineProcess(config, "run", log_path=tmp_path / "run.log").start()
        try:
            wait_until(lambda: query_value(database_url, "SELECT count(*) FROM triggers"))
            insert_events(database_url, [feedback(5, 10)])
            webhook_receiver.wait_for(1)
            engine.kill()  # the alert is open; nobody is there when `after` passes
            engine = EngineProcess(config, "run", log_path=tmp_path / "run.log").start()
            webhook_receiver.wait_for(2, timeout=20)
            engine.kill()
            engine = EngineProcess(config, "run", log_path=tmp_path / "run.log").start()
            wait_until(
                lambda: query_value(
                    database_url, "SELECT bool_and(status = 'success') FROM action_results"
                ),
                what="the notice delivered",
            )
            insert_events(database_url, [feedback(5, 10)])  # a new alert: fires again
            webhook_receiver.wait_for(4, timeout=20)  # and is resolved again by `after`
        finally:
            engine.stop()
    assert kinds(webhook_receiver) == [
        ("fired", 5),
        ("resolved", 5),
        ("fired", 5),
        ("resolved", 5),
    ]
    assert query_value(database_url, "SELECT count(*) FROM open_alerts") == 0
    event_ids = [r.json["by"] for r in webhook_receiver.requests if r.json["kind"] == "resolved"]
    assert len(set(event_ids)) == 2  # the last firing's event of each alert

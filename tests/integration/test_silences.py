"""Silences and runtime disables end to end: `engine silence …` and `engine rules
disable|enable` as an operator types them, `engine run` and `engine worker` as they run,
the webhook stand-in as the receiver that must (not) be called."""

from __future__ import annotations

import time
from pathlib import Path

from tests.fakes.webhook import WebhookReceiver
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

REFRESH_S = 0.2  # engine.silences_refresh_s of these tests
SEEN_S = 3 * REFRESH_S + 0.5  # every process has read the silences again by then

RULES = """
rules:
  - id: page-agent-drop
    labels: {{severity: page, team: ops}}
    on: {{registry: reputation, event_type: NewFeedback}}
    per: agent_id
    when: {{count: {{within: 1h, at_least: 1}}}}
    actions:
      - rest:
          url: {url}/page
          body: {{agent: "{{{{ event.agent_id }}}}", severity: "{{{{ rule.labels.severity }}}}"}}
  - id: marker
    on: {{registry: identity, event_type: URIUpdated}}
    actions:
      - rest: {{url: "{url}/marker", body: {{uri: "{{{{ event.token_uri }}}}"}}}}
"""


def feedback(agent_id: int) -> dict[str, object]:
    return {"registry": "reputation", "event_type": "NewFeedback", "agent_id": agent_id}


def marker(uri: str) -> dict[str, object]:
    return {"registry": "identity", "event_type": "URIUpdated", "agent_id": 1, "token_uri": uri}


def configure(tmp_path: Path, database_url: str, redis_url: str, url: str) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(url=url), encoding="utf-8")
    return write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=str(rules),
        extra={"engine": {"silences_refresh_s": REFRESH_S}},
    )


def engine_ok(config: Path, *args: str) -> str:
    done = run_engine(config, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def add_silence(config: Path, *args: str) -> int:
    out = engine_ok(config, "silence", "add", *args)
    return int(out.strip().splitlines()[-1])  # the id alone on the last line


def paths(receiver: WebhookReceiver) -> list[tuple[str, str]]:
    return [(r.path, r.body.decode()) for r in receiver.requests]


def rows_of(database_url: str, rule: str) -> list[tuple[object, ...]]:
    return query_all(
        database_url,
        "SELECT context->'event'->>'agent_id', status, silence_id FROM action_results"
        " WHERE trigger_id = $1 ORDER BY id",
        rule,
    )


def test_silenced_firing_is_recorded_not_sent_and_fires_again_once_expired(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = configure(tmp_path, database_url, redis_url, webhook_receiver.url)
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        silence_id = add_silence(
            config,
            "--rule", "page-*",
            "--match", "agent_id=7",
            "--match", "severity=page",
            "--for", "2h",
            "--comment", "agent 7 is being migrated",
        )  # fmt: skip
        listed = engine_ok(config, "silence", "list")
        assert f"{silence_id}  active  rule page-*  agent_id=7 severity=page" in listed
        assert "agent 7 is being migrated" in listed
        time.sleep(SEEN_S)
        insert_events(database_url, [feedback(7), feedback(8)])
        webhook_receiver.wait_for(1)
        wait_until(lambda: len(rows_of(database_url, "page-agent-drop")) == 2, what="both rows")
        time.sleep(1.0)  # had the silenced one been enqueued, it would have arrived by now
        assert paths(webhook_receiver) == [("/page", '{"agent":8,"severity":"page"}')]
        assert rows_of(database_url, "page-agent-drop") == [
            ("7", "silenced", silence_id),
            ("8", "success", None),
        ]
        # Held back by the evaluator itself: never enqueued, so no worker ever claimed it.
        assert (
            query_value(
                database_url, "SELECT attempts FROM action_results WHERE status = 'silenced'"
            )
            == 0
        )
        # The silenced firing still counted in its group's state.
        assert (
            query_value(
                database_url,
                "SELECT count(*) FROM trigger_state WHERE trigger_id = 'page-agent-drop'",
            )
            == 2
        )
        assert "silences" in engine_ok(config, "status")

        assert "expired" in engine_ok(config, "silence", "expire", str(silence_id))
        assert "no active silences" in engine_ok(config, "silence", "list")
        time.sleep(SEEN_S)
        insert_events(database_url, [feedback(7)])
        webhook_receiver.wait_for(2)
    assert paths(webhook_receiver)[1] == ("/page", '{"agent":7,"severity":"page"}')
    assert query_value(
        database_url, "SELECT expired_by LIKE 'user:%' FROM silences WHERE id = $1", silence_id
    )


def test_a_silence_that_ran_out_holds_nothing_back(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = configure(tmp_path, database_url, redis_url, webhook_receiver.url)
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        add_silence(config, "--rule", "*", "--for", "3s", "--comment", "a short one")
        time.sleep(SEEN_S)
        insert_events(database_url, [feedback(7)])
        wait_until(lambda: rows_of(database_url, "page-agent-drop"), what="the silenced row")
        time.sleep(3.0)  # the silence has ended by now, whatever the processes last read
        insert_events(database_url, [feedback(7)])
        webhook_receiver.wait_for(1)
    assert [s for s, *_ in [r[1:] for r in rows_of(database_url, "page-agent-drop")]] == [
        "silenced",
        "success",
    ]
    assert len(webhook_receiver.requests) == 1


def test_a_silence_made_while_firings_are_queued_holds_them_back_at_send_time(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = configure(tmp_path, database_url, redis_url, webhook_receiver.url)
    with engine_processes(config, tmp_path, ["run"]):  # no worker yet: the jobs wait
        insert_events(database_url, [feedback(7), feedback(8)])
        wait_until(
            lambda: (
                [r[1] for r in rows_of(database_url, "page-agent-drop")] == ["queued", "queued"]
            ),
            what="two queued rows",
        )
    silence_id = add_silence(
        config, "--rule", "page-agent-drop", "--match", "agent_id=7", "--for", "1h",
        "--comment", "queued ones too",
    )  # fmt: skip
    worker = EngineProcess(config, "worker", log_path=tmp_path / "worker.log").start()
    try:
        webhook_receiver.wait_for(1)
        wait_until(
            lambda: (
                {r[1] for r in rows_of(database_url, "page-agent-drop")} == {"silenced", "success"}
            ),
            what="one row silenced, the other sent",
        )
        time.sleep(0.5)
    finally:
        worker.stop()
    assert paths(webhook_receiver) == [("/page", '{"agent":8,"severity":"page"}')]
    assert rows_of(database_url, "page-agent-drop") == [
        ("7", "silenced", silence_id),
        ("8", "success", None),
    ]
    # Held back by the worker, at what would have been its first attempt.
    assert (
        query_value(database_url, "SELECT attempts FROM action_results WHERE status = 'silenced'")
        == 1
    )


def test_a_disabled_rule_is_not_evaluated_across_a_restart_until_enabled(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = configure(tmp_path, database_url, redis_url, webhook_receiver.url)

    def marked(uri: str) -> None:
        """Insert feedback and then a marker: once the marker is sent, the feedback
        was evaluated (one cursor, in order)."""
        insert_events(database_url, [feedback(7), marker(uri)])
        wait_until(lambda: ("/marker", f'{{"uri":"{uri}"}}') in paths(webhook_receiver))

    missing = run_engine(config, "rules", "disable", "no-such-rule")
    assert missing.returncode == 1
    assert "no rule 'no-such-rule' is loaded" in missing.stderr
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        wait_until(lambda: query_value(database_url, "SELECT count(*) FROM triggers") == 2)
        out = engine_ok(
            config, "rules", "disable", "page-agent-drop", "--comment", "too noisy today"
        )
        assert "page-agent-drop  until enabled  by user:" in out
        time.sleep(SEEN_S)
        marked("one")
    status = engine_ok(config, "status")
    assert "rules disabled at runtime" in status
    assert "too noisy today" in status
    with engine_processes(config, tmp_path, ["run"], ["worker"]):  # a restart
        marked("two")
        assert rows_of(database_url, "page-agent-drop") == []
        assert (
            query_value(
                database_url,
                "SELECT count(*) FROM trigger_state WHERE trigger_id = 'page-agent-drop'",
            )
            == 0
        )
        assert "enabled" in engine_ok(config, "rules", "enable", "page-agent-drop")
        time.sleep(SEEN_S)
        insert_events(database_url, [feedback(7)])
        wait_until(lambda: ("/page", '{"agent":7,"severity":"page"}') in paths(webhook_receiver))
    assert [r[1] for r in rows_of(database_url, "page-agent-drop")] == ["success"]


def test_a_disable_for_a_while_ends_by_itself(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    config = configure(tmp_path, database_url, redis_url, webhook_receiver.url)
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        wait_until(lambda: query_value(database_url, "SELECT count(*) FROM triggers") == 2)
        engine_ok(config, "rules", "disable", "page-agent-drop", "--for", "2s")
        time.sleep(SEEN_S)
        insert_events(database_url, [feedback(7), marker("during")])
        wait_until(lambda: ("/marker", '{"uri":"during"}') in paths(webhook_receiver))
        assert rows_of(database_url, "page-agent-drop") == []
        time.sleep(2.0)
        insert_events(database_url, [feedback(7)])
        wait_until(lambda: rows_of(database_url, "page-agent-drop"), what="the rule to fire")

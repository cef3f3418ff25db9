"""Actions through the real engine and worker processes: Telegram, MCP, retries, dead
letters and replay, each against a local server speaking the real protocol."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from tests.fakes.mcp_server import FakeMCPServer
from tests.fakes.telegram_api import FakeTelegramAPI
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

BOT_TOKEN = "123456:TEST-token-abcdef"
NASTY = "https://agent.example/a_b*c[d](e)~f>g#h+i-j=k|l{m}n.o!p<q&r>"


def identity_event(**fields: object) -> dict[str, object]:
    return {"registry": "identity", "event_type": "URIUpdated", "agent_id": 7, **fields}


@pytest.fixture
def telegram_api() -> Iterator[FakeTelegramAPI]:
    api = FakeTelegramAPI({BOT_TOKEN})
    api.start()
    yield api
    api.stop()


@pytest.fixture
def mcp_server() -> Iterator[FakeMCPServer]:
    server = FakeMCPServer(token="mcp-token-s3cret")
    server.start()
    yield server
    server.stop()


def configure(
    tmp_path: Path, database_url: str, redis_url: str, rules: str, **extra: object
) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(rules, encoding="utf-8")
    return write_config(
        tmp_path, database_url=database_url, redis_url=redis_url, rules=str(path), extra=extra
    )


@pytest.mark.parametrize("parse_mode", ["HTML", "MarkdownV2", "none"])
def test_telegram_message_arrives_with_inserted_values_intact(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    telegram_api: FakeTelegramAPI,
    parse_mode: str,
) -> None:
    bold = {"HTML": "<b>URI</b>", "MarkdownV2": "*URI*", "none": "URI"}[parse_mode]
    rules = f"""
rules:
  - id: uri-changed
    on: {{registry: identity, event_type: URIUpdated}}
    actions:
      - telegram:
          chat_id: "-1001234567890"
          parse_mode: {parse_mode}
          text: "{bold} {{{{ event.token_uri }}}}"
"""
    config = configure(
        tmp_path,
        database_url,
        redis_url,
        rules,
        telegram={
            "api_base_url": telegram_api.api_base_url,
            "bots": {"default": {"token": BOT_TOKEN}},
        },
    )
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        insert_events(database_url, [identity_event(token_uri=NASTY)])
        wait_until(lambda: telegram_api.messages, what="the Telegram message")
        wait_until(
            lambda: query_value(database_url, "SELECT status FROM action_results") == "success",
            what="the row to succeed",
        )
    [message] = telegram_api.messages
    assert message.plain == f"URI {NASTY}"
    assert str(message.chat_id) == "-1001234567890"
    data = query_value(database_url, "SELECT response_data FROM action_results")
    assert BOT_TOKEN not in json.dumps(data)


def test_mcp_tool_called_with_typed_arguments_and_idempotency_key(
    tmp_path: Path, database_url: str, redis_url: str, mcp_server: FakeMCPServer
) -> None:
    rules = f"""
rules:
  - id: tell-agent
    on: {{registry: identity}}
    actions:
      - mcp:
          url: {mcp_server.url}
          token: ${{MCP_TOKEN}}
          tool: notify
          arguments:
            message: "agent {{{{ event.agent_id }}}} changed"
            severity: warning
            payload: {{agent: "{{{{ event.agent_id }}}}"}}
"""
    # A name like a token reaches rules only when rules_env names it exactly.
    config = configure(tmp_path, database_url, redis_url, rules, rules_env=["MCP_TOKEN"])
    env = {"MCP_TOKEN": "mcp-token-s3cret"}
    with engine_processes(config, tmp_path, ["run"], ["worker"], env=env):
        insert_events(database_url, [identity_event(token_uri="https://x.example/a.json")])
        wait_until(lambda: mcp_server.calls, what="the MCP tool call")
        wait_until(
            lambda: query_value(database_url, "SELECT status FROM action_results") == "success",
            what="the row to succeed",
        )
    [call] = mcp_server.calls
    assert call.arguments == {
        "message": "agent 7 changed",
        "severity": "warning",
        "payload": {"agent": 7},
    }
    action_id = query_value(database_url, "SELECT id FROM action_results")
    assert str(call.meta.get("idempotency_key")) == str(action_id)
    spec, data = query_all(
        database_url, "SELECT spec::text, response_data::text FROM action_results"
    )[0]
    assert "${MCP_TOKEN}" in spec  # the secret is expanded by the worker, never stored
    assert "mcp-token-s3cret" not in spec + data


RETRY_RULE = """
rules:
  - id: hook
    on: {{registry: identity}}
    actions:
      - rest:
          url: "{url}/hook"
          secret: whsec_c2VjcmV0LWtleS0xMjM0NQ==
          body: {{agent: "{{{{ event.agent_id }}}}"}}
        retry: {{attempts: {attempts}, backoff: 1s, max_backoff: 2s}}
"""


def test_retries_follow_the_backoff_then_succeed(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.set_behaviour(fail_first=2, fail_status=503)
    rules = RETRY_RULE.format(url=webhook_receiver.url, attempts=5)
    config = configure(tmp_path, database_url, redis_url, rules)
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        insert_events(database_url, [identity_event()])
        requests = webhook_receiver.wait_for(3, timeout=30)
        wait_until(
            lambda: query_value(database_url, "SELECT status FROM action_results") == "success",
            what="success on the third attempt",
        )
    assert query_value(database_url, "SELECT attempts FROM action_results") == 3
    times = [r.received_monotonic for r in requests]
    # backoff 1s: the first wait is in [0.5, 1] s, the second in [1, 2] s (jittered)
    assert times[1] - times[0] >= 0.5
    assert times[2] - times[1] >= 1.0
    assert len({r.header("webhook-id") for r in requests}) == 1
    # each attempt is signed afresh, verifiable as a receiver would
    receiver = Webhook("whsec_c2VjcmV0LWtleS0xMjM0NQ==")
    for request in requests:
        receiver.verify(request.body, request.headers)


def test_dead_letter_listed_and_replayed(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.set_behaviour(status=500)
    rules = RETRY_RULE.format(url=webhook_receiver.url, attempts=2)
    config = configure(tmp_path, database_url, redis_url, rules)
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        insert_events(database_url, [identity_event()])
        wait_until(
            lambda: query_value(database_url, "SELECT status FROM action_results") == "failed",
            timeout=30,
            what="the dead letter",
        )
        action_id = query_value(database_url, "SELECT id FROM action_results")
        listed = run_engine(config, "actions", "failed")
        assert listed.returncode == 0
        assert str(action_id) in listed.stdout and "hook" in listed.stdout
        assert "gave up after 2 attempts" in listed.stdout

        webhook_receiver.set_behaviour(status=200)
        replay = run_engine(config, "actions", "retry", str(action_id))
        assert replay.returncode == 0, replay.stderr
        assert f"re-queued 1 action(s): {action_id}" in replay.stdout
        wait_until(
            lambda: query_value(database_url, "SELECT status FROM action_results") == "success",
            what="the replay to succeed",
        )
    requests = webhook_receiver.requests
    assert len(requests) == 3
    assert {r.header("webhook-id") for r in requests} == {str(action_id)}
    assert "no failed actions" in run_engine(config, "actions", "failed").stdout

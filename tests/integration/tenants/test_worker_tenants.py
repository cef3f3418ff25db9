"""A tenant's action in a real ``engine worker --burst``: its organization's secrets, sealed
with the config's secrets_key, go where the rule names them and nowhere else; its URLs
pass the network guard by its organization's policy, not the config's."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.config import WorkerTunables
from engine.dispatcher import Dispatcher
from engine.tenants.secrets_box import SecretsBox, agent_token_aad, new_secrets_key, secret_aad
from tests.fakes.mcp_server import FakeMCPServer
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.webhook import RecordedRequest, Response, WebhookReceiver
from tests.processes import insert_events, query_all, run_engine, write_config

KEY = new_secrets_key()
API_KEY = "sk-live-Zq8v3Xw9Tm2Kp7Lr"
ACCOUNT = "acct-Hn4Rb8Qe1"  # a secret in a header whose name does not say so
CONTEXT = {
    "event": {"agent_id": 42, "chain_id": 8453, "score": 12},
    "rule": {"id": "low-feedback", "description": None, "owner": None},
    "group": {},
    "state": {},
    "fired_at": "2025-01-01T00:00:00Z",
}


def _org(dsn: str, name: str, *, allow_private: bool) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(
            conn.execute(
                "INSERT INTO organizations (name, allow_private) VALUES (%s, %s) RETURNING id",
                (name, allow_private),
            ).fetchone()[0]
        )


def _secret(dsn: str, org_id: int, name: str, value: str) -> None:
    sealed = SecretsBox(KEY).seal(value, secret_aad(org_id, name))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO secrets (org_id, name, ciphertext) VALUES (%s, %s, %s)",
            (org_id, name, sealed),
        )


def _action(dsn: str, org_id: int | None, spec: dict[str, Any], kind: str = "rest") -> int:
    """A row as the evaluator writes it for a tenant's rule (org_id set), and its job."""
    trigger = "low-feedback" if org_id is None else f"{org_id}/low-feedback"
    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(
            conn.execute(
                "INSERT INTO action_results (trigger_id, event_id, action_index, action_type,"
                " max_attempts, spec, context, org_id) VALUES (%s, %s, 0, %s, 3, %s, %s, %s)"
                " RETURNING id",
                (
                    trigger,
                    f"8453-{uuid.uuid4().int % 10**9}-0",
                    kind,
                    json.dumps(spec),
                    json.dumps(CONTEXT),
                    org_id,
                ),
            ).fetchone()[0]
        )


def _run_worker(config: Path, redis_url: str, *action_ids: int) -> None:
    dispatcher = Dispatcher(redis_url, WorkerTunables())
    try:
        dispatcher.enqueue(list(action_ids))
    finally:
        dispatcher.close()
    done = run_engine(config, "worker", "--burst", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _row(dsn: str, action_id: int) -> dict[str, Any]:
    rows = query_all(
        dsn,
        "SELECT status, attempts, error_message, response_data::text, row_to_json(a)::text"
        " FROM action_results a WHERE id = $1",
        action_id,
    )
    status, attempts, error, response, whole = rows[0]
    return {
        "status": status,
        "attempts": attempts,
        "error": error or "",
        "response": response,
        "whole": whole,
    }


@pytest.fixture
def config(tmp_path: Path, database_url: str, redis_url: str) -> Path:
    # network.allow_private is true (write_config's default): it must not apply to tenants.
    return write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=[],
        extra={"secrets_key": KEY},
    )


def _echo_headers(request: RecordedRequest) -> Response:
    """A receiver that sends back what it was sent: the worker must not record it."""
    return Response(200, json.dumps({"got": request.headers}).encode())


def test_a_secret_goes_into_its_header_and_nowhere_into_the_audit_row(
    config: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    org = _org(database_url, "acme", allow_private=True)
    _secret(database_url, org, "API_KEY", API_KEY)
    _secret(database_url, org, "SIGNING", "whsec_c2lnbmluZy1rZXktZm9yLXRlc3Rz")
    _secret(database_url, org, "ACCOUNT", ACCOUNT)
    webhook_receiver.set_behaviour(responder=_echo_headers)
    spec = {
        "url": f"{webhook_receiver.url}/hook",
        "headers": {
            "Authorization": {"secret": "API_KEY", "prefix": "Bearer "},
            "X-Account": {"secret": "ACCOUNT"},
            "X-Plain": "score {{ event.score }}",
            "X-Env": "${HOME}",
        },
        "secret": {"secret": "SIGNING"},
        "body": {"agent": "{{ event.agent_id }}"},
    }
    action_id = _action(database_url, org, spec)
    _run_worker(config, redis_url, action_id)

    (request,) = webhook_receiver.wait_for(1)
    assert request.header("authorization") == f"Bearer {API_KEY}"
    assert request.header("x-plain") == "score 12"  # the rest is rendered as before
    assert request.header("x-env") == "${HOME}"  # a tenant rule never reads the environment
    assert request.header("x-account") == ACCOUNT
    assert request.header("webhook-signature").startswith("v1,")
    assert request.json == {"agent": 42}
    row = _row(database_url, action_id)
    assert row["status"] == "success", row
    assert "[redacted]" in row["response"]  # the echo was there, and masked
    for value in (
        API_KEY,
        ACCOUNT,
        "whsec_c2lnbmluZy1rZXktZm9yLXRlc3Rz",
        "c2lnbmluZy1rZXktZm9yLXRlc3Rz",
    ):
        assert value.lower() not in row["whole"].lower()


def test_an_unknown_secret_is_a_dead_letter_naming_it(
    config: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    org = _org(database_url, "acme", allow_private=True)
    _secret(database_url, org, "API_KEY", API_KEY)
    spec = {"url": f"{webhook_receiver.url}/hook", "headers": {"X-Key": {"secret": "MISSING"}}}
    action_id = _action(database_url, org, spec)
    _run_worker(config, redis_url, action_id)
    row = _row(database_url, action_id)
    assert row["status"] == "failed" and row["attempts"] == 1, row
    assert "secret 'MISSING' is not stored for this organization" in row["error"]
    assert webhook_receiver.requests == []


def test_another_organizations_secret_of_the_same_name_is_not_used(
    config: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    acme = _org(database_url, "acme", allow_private=True)
    globex = _org(database_url, "globex", allow_private=True)
    _secret(database_url, globex, "API_KEY", API_KEY)
    spec = {"url": f"{webhook_receiver.url}/hook", "headers": {"X-Key": {"secret": "API_KEY"}}}
    action_id = _action(database_url, acme, spec)
    _run_worker(config, redis_url, action_id)
    row = _row(database_url, action_id)
    assert row["status"] == "failed" and "'API_KEY' is not stored" in row["error"], row
    assert webhook_receiver.requests == []


def test_a_tenant_reaches_a_private_address_only_when_its_organization_may(
    config: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    closed = _org(database_url, "acme", allow_private=False)
    opened = _org(database_url, "globex", allow_private=True)
    spec = {"url": f"{webhook_receiver.url}/hook", "body": {"n": 1}}
    refused = _action(database_url, closed, spec)
    allowed = _action(database_url, opened, spec)
    operators = _action(database_url, None, spec)  # a file rule: the config allows it
    _run_worker(config, redis_url, refused, allowed, operators)
    row = _row(database_url, refused)
    assert row["status"] == "failed" and row["attempts"] == 1, row
    assert "network guard refused 127.0.0.1" in row["error"]
    assert "engine orgs set NAME allow_private=true" in row["error"]
    assert _row(database_url, allowed)["status"] == "success"
    assert _row(database_url, operators)["status"] == "success"
    assert len(webhook_receiver.requests) == 2


def test_a_file_rule_naming_a_secret_is_told_to_use_a_variable(
    config: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    spec = {"url": f"{webhook_receiver.url}/hook", "secret": {"secret": "SIGNING"}}
    action_id = _action(database_url, None, spec)
    _run_worker(config, redis_url, action_id)
    row = _row(database_url, action_id)
    assert row["status"] == "failed", row
    assert "file rules have no organization's secrets: use ${VAR}" in row["error"]
    assert webhook_receiver.requests == []


AGENT_TOKEN = "agent-42-token-Pq9sW2"
BOT_TOKEN = "123456:tenant-bot-Hx7Jk2Lm"


@pytest.fixture
def mcp_server() -> Iterator[FakeMCPServer]:
    server = FakeMCPServer(token=AGENT_TOKEN)
    server.start()
    yield server
    server.stop()


def test_an_agent_mode_mcp_call_uses_the_organizations_token_for_that_agent(
    config: Path, database_url: str, redis_url: str, mcp_server: FakeMCPServer
) -> None:
    org = _org(database_url, "acme", allow_private=True)
    sealed = SecretsBox(KEY).seal(AGENT_TOKEN, agent_token_aad(org, 8453, 42))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO agent_tokens (org_id, chain_id, agent_id, ciphertext)"
            " VALUES (%s, 8453, 42, %s)",
            (org, sealed),
        )
    registration = {"services": [{"name": "MCP", "endpoint": mcp_server.url}]}
    uri = (
        "data:application/json;base64,"
        + base64.b64encode(json.dumps(registration).encode()).decode()
    )
    event = {"registry": "identity", "event_type": "URIUpdated", "agent_id": 42}
    insert_events(database_url, [{**event, "chain_id": 8453, "token_uri": uri}])
    spec = {"agent": "{{ event.agent_id }}", "tool": "notify", "arguments": {"message": "hi"}}
    action_id = _action(database_url, org, spec, kind="mcp")
    _run_worker(config, redis_url, action_id)
    row = _row(database_url, action_id)
    assert row["status"] == "success", row  # the server refuses any other token (401)
    assert [call.arguments["message"] for call in mcp_server.calls] == ["hi"]
    assert AGENT_TOKEN.lower() not in row["whole"].lower()


def test_a_tenants_telegram_action_sends_with_its_own_bot_token(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    api = FakeTelegramAPI({BOT_TOKEN})
    api.start()
    try:
        config = write_config(
            tmp_path,
            database_url=database_url,
            redis_url=redis_url,
            rules=[],
            extra={"secrets_key": KEY, "telegram": {"api_base_url": api.api_base_url}},
        )
        org = _org(database_url, "acme", allow_private=False)
        _secret(database_url, org, "BOT", BOT_TOKEN)
        own = {"chat_id": 77, "text": "score {{ event.score }}", "bot_token": {"secret": "BOT"}}
        borrowed = {"chat_id": 77, "text": "via the operator's bot"}
        sent = _action(database_url, org, own, kind="telegram")
        refused = _action(database_url, org, borrowed, kind="telegram")
        _run_worker(config, redis_url, sent, refused)
    finally:
        api.stop()
    assert [(m.chat_id, m.text) for m in api.messages] == [(77, "score 12")]
    assert _row(database_url, sent)["status"] == "success"
    row = _row(database_url, refused)
    assert row["status"] == "failed" and "bot_token: {secret: NAME}" in row["error"], row
    assert BOT_TOKEN.split(":")[1].lower() not in _row(database_url, sent)["whole"].lower()

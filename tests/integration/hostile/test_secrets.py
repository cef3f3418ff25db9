"""No secret value reaches action_results or a log line, and nothing but secrets is masked.

Live: the real `engine run` and `engine worker` against a local webhook receiver and a
fake Telegram Bot API.  After each test, ``secret_sweep`` searches every column of every
action_results row, the captured log records and both processes' output, ignoring case,
for each secret value the test used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.webhook import RecordedRequest, Response, WebhookReceiver
from tests.processes import (
    engine_processes,
    insert_events,
    query_all,
    wait_until,
    write_config,
)

BOT_TOKEN = "123456:TEST-token-abcdef"
EVENT = {"registry": "identity", "event_type": "URIUpdated", "agent_id": 7}


def _forms(needle: str) -> set[str]:
    return {needle.lower(), json.dumps(needle)[1:-1].lower()}


def _texts_of_rows(database_url: str) -> list[str]:
    texts = []
    for row in query_all(database_url, "SELECT * FROM action_results"):
        for value in row:
            texts.append(
                json.dumps(value, ensure_ascii=False)
                if isinstance(value, dict | list)
                else str(value)
            )
    return texts


@pytest.fixture
def secret_sweep(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, database_url: str
) -> Iterator[list[str]]:
    """Append each secret value a test uses; fails the test if one is found anywhere."""
    needles: list[str] = []
    yield needles
    rows = _texts_of_rows(database_url)
    assert rows, "no action_results row: the sweep would search nothing"
    places = {"action_results": "\n".join(rows), "caplog": caplog.text}
    for log in tmp_path.glob("*.log"):
        places[log.name] = log.read_text(encoding="utf-8", errors="replace")
    for needle in needles:
        for where, text in places.items():
            found = [form for form in _forms(needle) if form in text.lower()]
            assert not found, f"secret {needle!r} found in {where}:\n{text}"


def _run_rule(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    rule: str,
    env: dict[str, str],
    **extra: object,
) -> tuple[str, str | None, dict | None]:
    """Load ``rule``, fire it once, wait for its row to finish; (status, error, data)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules:\n{rule}", encoding="utf-8")
    config = write_config(
        tmp_path, database_url=database_url, redis_url=redis_url, rules=str(rules), extra=extra
    )
    with engine_processes(config, tmp_path, ["run"], ["worker"], env=env):
        insert_events(database_url, [EVENT])
        finished = "SELECT status, error_message, response_data FROM action_results"

        def done() -> tuple | None:
            found = query_all(database_url, finished)
            return found[0] if found and found[0][0] in ("success", "failed") else None

        status, error, data = wait_until(done, what="the action to finish")
    return status, error, data


def _rest_rule(url: str, headers: str = "{}", body: str = "{agent: 7}") -> str:
    return f"""
  - id: hook
    on: {{registry: identity}}
    actions:
      - rest: {{url: "{url}", headers: {headers}, body: {body}}}
        retry: {{attempts: 1}}
"""


def test_a_header_expanded_to_an_illegal_value_is_refused_without_quoting_it(
    tmp_path, database_url, redis_url, webhook_receiver: WebhookReceiver, secret_sweep
):
    tail = "Injected: s3cr3t-note-value"
    note = f"line one\r\n{tail}"
    secret_sweep += [note, tail]
    status, error, _ = _run_rule(
        tmp_path,
        database_url,
        redis_url,
        _rest_rule(f"{webhook_receiver.url}/hook", headers='{X-Note: "${PARTNER_NOTE}"}'),
        {"PARTNER_NOTE": note},
    )
    assert status == "failed"
    assert error.startswith("rest.headers.X-Note is not a valid HTTP header value")
    assert webhook_receiver.requests == []


def test_a_header_that_cannot_be_encoded_is_refused_without_quoting_it(
    tmp_path, database_url, redis_url, webhook_receiver: WebhookReceiver, secret_sweep
):
    hint = "café-s3cr3t-hint"
    secret_sweep.append(hint)
    status, error, _ = _run_rule(
        tmp_path,
        database_url,
        redis_url,
        _rest_rule(f"{webhook_receiver.url}/hook", headers='{X-Hint: "${PARTNER_HINT}"}'),
        {"PARTNER_HINT": hint},
    )
    assert status == "failed"
    assert error.startswith("rest.headers.X-Hint is not a valid HTTP header value")


def test_a_telegram_error_quoting_the_bot_path_in_lower_case_is_masked(
    tmp_path, database_url, redis_url, secret_sweep
):
    secret_sweep.append(BOT_TOKEN)
    api = FakeTelegramAPI({BOT_TOKEN})
    api.start()
    api.fail_next("echo_path")
    rule = """
  - id: tell
    on: {registry: identity}
    actions:
      - telegram: {chat_id: "-1001234567890", text: "agent {{ event.agent_id }}"}
        retry: {attempts: 1}
"""
    try:
        status, error, _ = _run_rule(
            tmp_path,
            database_url,
            redis_url,
            rule,
            {},
            telegram={"api_base_url": api.api_base_url, "bots": {"default": {"token": BOT_TOKEN}}},
        )
    finally:
        api.stop()
    assert status == "failed"
    assert error == "telegram rejected (400): Chat not found for /bot[redacted]/sendmessage"


def _echo(request: RecordedRequest) -> Response:
    """An endpoint that answers with what it was sent, once as is and once upper-cased."""
    sent = request.body.decode()
    echoed = {"you_sent": sent, "shouting": sent.upper(), sent: "as a key"}
    return Response(200, json.dumps(echoed).encode(), {"Content-Type": "application/json"})


def test_an_endpoint_echoing_expanded_values_gets_them_masked(
    tmp_path, database_url, redis_url, webhook_receiver: WebhookReceiver, secret_sweep
):
    account = "acct-7f3a9c2e-payout"
    secret_sweep.append(account)
    webhook_receiver.set_behaviour(responder=_echo)
    status, _, data = _run_rule(
        tmp_path,
        database_url,
        redis_url,
        _rest_rule(f"{webhook_receiver.url}/hook", body='{account: "${PAYOUT_ACCOUNT}"}'),
        {"PAYOUT_ACCOUNT": account},
    )
    assert status == "success"
    [request] = webhook_receiver.requests
    assert request.json == {"account": account}  # the endpoint did get the value
    assert "[redacted]" in data["body"]


def test_a_plain_accept_header_is_not_treated_as_a_secret(
    tmp_path, database_url, redis_url, webhook_receiver: WebhookReceiver
):
    webhook_receiver.set_behaviour(body={"format": "application/json"})
    status, _, data = _run_rule(
        tmp_path,
        database_url,
        redis_url,
        _rest_rule(f"{webhook_receiver.url}/hook", headers="{Accept: application/json}"),
        {},
    )
    assert status == "success"
    assert json.loads(data["body"]) == {"format": "application/json"}
    assert data["headers"]["content-type"] == "application/json"

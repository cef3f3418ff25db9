"""The tenant flow as people run it, against the real ``engine api``, ``engine run`` and
``engine worker`` processes and local fakes of a webhook endpoint and the Telegram Bot API.

The operator makes an organization and its key with the CLI; the tenant stores its secrets,
pushes a directory of rules with ``engine rules push``, sees them fire on new events, reads
its audit rows, retries a dead letter; a second organization sees none of it and keeps a
rule of the same id of its own.  No secret value is ever written to an audit row.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devkit.localstack import free_port
from engine.tenants.secrets_box import new_secrets_key
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.webhook import RecordedRequest, Response, WebhookReceiver
from tests.processes import engine_processes, query_all, run_engine, wait_until, write_config

HOOK_TOKEN = "hk-Live-7Qw2Zr9Xv4Lm"
BOT_TOKEN = "987654:Tenant-Bot-Tok3n-xYz"
DELIVERY_TIMEOUT_S = 20


class Endpoint:
    """Answers 200 with the request's headers in its body (so a secret header comes back
    to the worker, which must not record it), except ``/flaky``: 500 to its first
    request, 200 afterwards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.flaky_seen = 0

    def __call__(self, request: RecordedRequest) -> Response:
        if request.path == "/flaky":
            with self._lock:
                self.flaky_seen += 1
                if self.flaky_seen == 1:
                    return Response(500, b'{"error": "down for a moment"}')
        return Response(200, json.dumps({"headers": request.headers}).encode())


@pytest.fixture
def telegram() -> Iterator[FakeTelegramAPI]:
    api = FakeTelegramAPI({BOT_TOKEN})
    api.start()
    try:
        yield api
    finally:
        api.stop()


def _tenant_rules(directory: Path, hook_url: str) -> Path:
    """The tenant's rules repository: a REST rule with a secret header, a Telegram rule
    with its own bot, and a rule whose endpoint fails once and allows one attempt."""
    on = {"registry": "reputation", "event_type": "NewFeedback"}
    where = {"agent_id": 42, "score": {"lt": 30}}
    rules = [
        {
            "id": "low-feedback",
            "on": on,
            "where": where,
            "actions": [
                {
                    "rest": {
                        "url": f"{hook_url}/hook",
                        "headers": {"X-Hook-Token": {"secret": "HOOK_TOKEN"}},
                        "body": {"agent": "{{ event.agent_id }}", "score": "{{ event.score }}"},
                    }
                }
            ],
        },
        {
            "id": "low-feedback-telegram",
            "on": on,
            "where": where,
            "actions": [
                {
                    "telegram": {
                        "bot_token": {"secret": "BOT_TOKEN"},
                        "chat_id": 1001,
                        "text": "score <b>{{ event.score }}</b> for agent {{ event.agent_id }}",
                    }
                }
            ],
        },
    ]
    flaky = {
        "id": "flaky-endpoint",
        "on": on,
        "where": where,
        "actions": [{"rest": {"url": f"{hook_url}/flaky"}, "retry": {"attempts": 1}}],
    }
    directory.mkdir()
    (directory / "feedback.yaml").write_text(yaml.safe_dump({"rules": rules}, sort_keys=False))
    (directory / "flaky.yaml").write_text(yaml.safe_dump({"rules": [flaky]}, sort_keys=False))
    return directory


def _cli(config: Path, *args: str) -> str:
    done = run_engine(config, *args)
    assert done.returncode == 0, f"engine {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


class Tenant:
    """An organization's calls to the API with its key."""

    def __init__(self, api: str, key: str) -> None:
        self.client = httpx.Client(
            base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )

    def get(self, path: str, **params: Any) -> Any:
        answer = self.client.get(path, params=params)
        assert answer.status_code == 200, f"GET {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def actions(self) -> dict[str, dict[str, Any]]:
        """The organization's audit rows by rule id (one action per rule here)."""
        return {row["rule"]: row for row in self.get("/v1/actions")["actions"]}


def _wait_status(tenant: Tenant, wanted: dict[str, str]) -> dict[str, dict[str, Any]]:
    def reached() -> dict[str, dict[str, Any]] | None:
        rows = tenant.actions()
        got = {rule: row["status"] for rule, row in rows.items()}
        return rows if got == wanted else None

    return wait_until(
        reached, timeout=DELIVERY_TIMEOUT_S, interval=0.2, what=f"audit rows {wanted}"
    )


def test_a_tenant_pushes_rules_sees_them_fire_retries_a_dead_letter_and_is_alone(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    webhook_receiver: WebhookReceiver,
    telegram: FakeTelegramAPI,
) -> None:
    endpoint = Endpoint()
    webhook_receiver.set_behaviour(responder=endpoint)
    api_url = f"http://127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=[],
        extra={
            "api": {"listen": api_url.removeprefix("http://")},
            "secrets_key": new_secrets_key(),
            "telegram": {"api_base_url": telegram.api_base_url},
        },
    )

    # The operator: an organization allowed to reach the local fakes, and an editor key.
    _cli(config, "orgs", "create", "acme")
    _cli(config, "orgs", "set", "acme", "allow_private=true")
    acme_key = _cli(config, "keys", "create", "--org", "acme", "--role", "editor").splitlines()[-1]

    with engine_processes(config, tmp_path, ["api"], ["run"], ["worker"]) as procs:

        def api_up() -> bool:
            assert all(p.alive() for p in procs), "\n".join(p.output() for p in procs)
            try:
                return httpx.get(f"{api_url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(api_up, timeout=30, interval=0.1, what="engine api to answer /healthz")
        acme = Tenant(api_url, acme_key)

        # The tenant: its secrets first, then its rules repository.
        for name, value in (("HOOK_TOKEN", HOOK_TOKEN), ("BOT_TOKEN", BOT_TOKEN)):
            stored = acme.client.put(f"/v1/secrets/{name}", json={"value": value})
            assert stored.status_code == 201, stored.text
        rules_dir = _tenant_rules(tmp_path / "rules", webhook_receiver.url)
        push = run_engine(
            None, "rules", "push", str(rules_dir), "--api", api_url, "--key", acme_key
        )
        assert push.returncode == 0, push.stdout + push.stderr
        assert "3 to create" in push.stdout
        assert sorted(r["id"] for r in acme.get("/v1/rules")["rules"]) == [
            "flaky-endpoint",
            "low-feedback",
            "low-feedback-telegram",
        ]

        # A new event: the webhook carries the secret, the message goes out with the
        # organization's own bot, the flaky endpoint's single attempt is a dead letter.
        _cli(config, "emit", "reputation", "NewFeedback", "agent_id=42", "score=12")
        rows = _wait_status(
            acme,
            {
                "low-feedback": "success",
                "low-feedback-telegram": "success",
                "flaky-endpoint": "failed",
            },
        )
        hook = [r for r in webhook_receiver.requests if r.path == "/hook"]
        assert len(hook) == 1
        assert hook[0].header("x-hook-token") == HOOK_TOKEN
        assert hook[0].json == {"agent": 42, "score": 12}
        assert [(m.chat_id, m.plain) for m in telegram.messages] == [
            (1001, "score 12 for agent 42")
        ]
        assert {token for token, _, _ in telegram.requests} == {BOT_TOKEN}
        assert "500" in (rows["flaky-endpoint"]["error_message"] or "")

        # The dead letter, retried: it runs again and this time succeeds.
        dead = rows["flaky-endpoint"]["id"]
        retried = acme.client.post(f"/v1/actions/{dead}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "queued"
        rows = _wait_status(
            acme,
            {
                "low-feedback": "success",
                "low-feedback-telegram": "success",
                "flaky-endpoint": "success",
            },
        )
        assert endpoint.flaky_seen == 2
        assert rows["flaky-endpoint"]["id"] == dead

        # Another organization sees none of it.
        _cli(config, "orgs", "create", "beta")
        _cli(config, "orgs", "set", "beta", "allow_private=true")
        beta_key = _cli(config, "keys", "create", "--org", "beta", "--role", "editor")
        beta = Tenant(api_url, beta_key.splitlines()[-1])
        assert beta.get("/v1/rules")["rules"] == []
        assert beta.get("/v1/actions")["actions"] == []
        assert beta.get("/v1/secrets")["secrets"] == []
        assert beta.client.get("/v1/rules/low-feedback-telegram").status_code == 404
        assert beta.client.post(f"/v1/actions/{dead}/retry").status_code == 404
        assert beta.client.delete("/v1/secrets/HOOK_TOKEN").status_code == 404

        # ... and has a `low-feedback` of its own, beside acme's, firing on its own agent.
        own = {
            "on": {"registry": "reputation", "event_type": "NewFeedback"},
            "where": {"agent_id": 7},
            "actions": [{"rest": {"url": f"{webhook_receiver.url}/beta"}}],
        }
        created = beta.client.put("/v1/rules/low-feedback", json=own)
        assert created.status_code == 201, created.text
        _cli(config, "emit", "reputation", "NewFeedback", "agent_id=7", "score=90")
        wait_until(
            lambda: [r for r in webhook_receiver.requests if r.path == "/beta"],
            timeout=DELIVERY_TIMEOUT_S,
            what="beta's delivery",
        )
        beta_rows = _wait_status(beta, {"low-feedback": "success"})
        assert beta_rows["low-feedback"]["id"] not in {row["id"] for row in rows.values()}
        assert set(acme.actions()) == set(rows)
        acme_rule = acme.get("/v1/rules/low-feedback")["rule"]
        assert acme_rule["actions"][0]["rest"]["url"] == f"{webhook_receiver.url}/hook"
        assert beta.get("/v1/rules/low-feedback")["rule"]["where"] == {"agent_id": 7}

    # No secret value in any column of any audit row, in any letter case.
    audit = query_all(database_url, "SELECT row_to_json(a)::text FROM action_results a")
    assert len(audit) == 4
    for (row,) in audit:
        for value in (HOOK_TOKEN, BOT_TOKEN):
            assert value.lower() not in row.lower(), row

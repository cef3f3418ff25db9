"""Secrets and agent tokens through a real `engine api`: stored sealed, never answered,
kept per organization, written only by editors, refused clearly without secrets_key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devkit.localstack import PostgresServer
from engine.tenants.secrets_box import SecretsBox, agent_token_aad, new_secrets_key, secret_aad
from tests.integration.tenants.api_fixtures import Api, api, start_api
from tests.processes import query_all, query_value

__all__ = ["api"]

VALUE = "hunter2-webhook-signing-secret-0123456789"
TOKEN = "mcp-bearer-token-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def secrets_key() -> str:
    return new_secrets_key()


@pytest.fixture(scope="module")
def keyed_api(
    pg_server: PostgresServer,
    template_database: str,
    tmp_path_factory: pytest.TempPathFactory,
    secrets_key: str,
) -> Iterator[Api]:
    """An `engine api` with a secrets_key configured, on a database of its own."""
    name = f"api_{uuid.uuid4().hex}"
    dsn = pg_server.create_database(name, template=template_database)
    running = start_api(tmp_path_factory.mktemp("api"), dsn, top_level={"secrets_key": secrets_key})
    try:
        yield running
    finally:
        running.process.stop()
        pg_server.drop_database(name)


def _everything_answered(api: Api, key: str) -> str:
    """The text of every answer that lists or describes the organization's things."""
    paths = ("/v1/secrets", "/v1/agent-tokens", "/v1/rules", "/v1/actions", "/v1/keys")
    return "\n".join(api.call("GET", path, key).text for path in paths)


def test_a_secret_is_stored_sealed_and_never_answered(keyed_api: Api, secrets_key: str) -> None:
    org = keyed_api.org()
    created = keyed_api.call("PUT", "/v1/secrets/WEBHOOK_SECRET", org.editor, json={"value": VALUE})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "WEBHOOK_SECRET"
    assert created.json()["created"] is True
    assert VALUE not in created.text

    sealed = query_value(
        keyed_api.dsn,
        "SELECT ciphertext FROM secrets WHERE org_id = $1 AND name = 'WEBHOOK_SECRET'",
        org.id,
    )
    assert VALUE.encode() not in bytes(sealed)
    box = SecretsBox(secrets_key)
    assert box.open(sealed, secret_aad(org.id, "WEBHOOK_SECRET")) == VALUE

    replaced = keyed_api.call(
        "PUT", "/v1/secrets/WEBHOOK_SECRET", org.editor, json={"value": VALUE + "-2"}
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["created"] is False

    listed = keyed_api.call("GET", "/v1/secrets", org.viewer)
    assert listed.status_code == 200
    assert [s["name"] for s in listed.json()["secrets"]] == ["WEBHOOK_SECRET"]
    assert set(listed.json()["secrets"][0]) == {"name", "created_at", "updated_at"}
    assert VALUE not in _everything_answered(keyed_api, org.admin)

    gone = keyed_api.call("DELETE", "/v1/secrets/WEBHOOK_SECRET", org.editor)
    assert gone.status_code == 204
    assert keyed_api.call("GET", "/v1/secrets", org.viewer).json() == {"secrets": []}
    again = keyed_api.call("DELETE", "/v1/secrets/WEBHOOK_SECRET", org.editor)
    assert again.status_code == 404


def test_another_organizations_secret_is_404_and_untouched(keyed_api: Api) -> None:
    owner, other = keyed_api.org(), keyed_api.org()
    assert (
        keyed_api.call("PUT", "/v1/secrets/TOKEN", owner.editor, json={"value": VALUE}).status_code
        == 201
    )
    assert keyed_api.call("GET", "/v1/secrets", other.viewer).json() == {"secrets": []}
    deleted = keyed_api.call("DELETE", "/v1/secrets/TOKEN", other.editor)
    assert deleted.status_code == 404
    assert "does not exist in your organization" in deleted.json()["message"]
    # Storing a secret of the same name makes the other organization's own, not a change.
    mine = keyed_api.call("PUT", "/v1/secrets/TOKEN", other.editor, json={"value": "x" * 20})
    assert mine.status_code == 201
    rows = query_all(keyed_api.dsn, "SELECT org_id FROM secrets WHERE name = 'TOKEN'")
    assert sorted(r[0] for r in rows) == sorted([owner.id, other.id])


def test_a_viewer_cannot_write_secrets_or_tokens(keyed_api: Api) -> None:
    org = keyed_api.org()
    refused = [
        keyed_api.call("PUT", "/v1/secrets/S", org.viewer, json={"value": VALUE}),
        keyed_api.call("PUT", "/v1/agent-tokens/1/2", org.viewer, json={"token": TOKEN}),
        keyed_api.call("DELETE", "/v1/secrets/S", org.viewer),
    ]
    for answer in refused:
        assert answer.status_code == 403, answer.text
        assert "a viewer key may not" in answer.json()["message"]
    assert query_value(keyed_api.dsn, "SELECT count(*) FROM secrets WHERE org_id = $1", org.id) == 0


def test_an_agent_token_is_sealed_for_its_agent_and_listed_by_ids(
    keyed_api: Api, secrets_key: str
) -> None:
    org, other = keyed_api.org(), keyed_api.org()
    put = keyed_api.call("PUT", "/v1/agent-tokens/84532/42", org.editor, json={"token": TOKEN})
    assert put.status_code == 201, put.text
    assert TOKEN not in put.text
    sealed = query_value(
        keyed_api.dsn, "SELECT ciphertext FROM agent_tokens WHERE org_id = $1", org.id
    )
    assert TOKEN.encode() not in bytes(sealed)
    assert SecretsBox(secrets_key).open(sealed, agent_token_aad(org.id, 84532, 42)) == TOKEN
    again = keyed_api.call("PUT", "/v1/agent-tokens/84532/42", org.editor, json={"token": "t" * 20})
    assert again.status_code == 200

    listed = keyed_api.call("GET", "/v1/agent-tokens", org.viewer).json()["agent_tokens"]
    assert [(t["chain_id"], t["agent_id"]) for t in listed] == [(84532, 42)]
    assert TOKEN not in _everything_answered(keyed_api, org.admin)
    assert keyed_api.call("GET", "/v1/agent-tokens", other.viewer).json() == {"agent_tokens": []}
    assert keyed_api.call("DELETE", "/v1/agent-tokens/84532/42", other.editor).status_code == 404
    assert keyed_api.call("DELETE", "/v1/agent-tokens/84532/42", org.editor).status_code == 204
    assert keyed_api.call("GET", "/v1/agent-tokens", org.viewer).json() == {"agent_tokens": []}


def test_bad_secret_requests_answer_422_and_store_nothing(keyed_api: Api) -> None:
    org = keyed_api.org()
    bad = [
        ("/v1/secrets/1-starts-with-a-digit", {"value": VALUE}),
        ("/v1/secrets/S", {"value": ""}),
        ("/v1/secrets/S", {"value": VALUE, "extra": 1}),
        ("/v1/secrets/S", {"value": 42}),
        ("/v1/agent-tokens/0/1", {"token": TOKEN}),
    ]
    for path, body in bad:
        answer = keyed_api.call("PUT", path, org.editor, json=body)
        assert answer.status_code == 422, (path, body, answer.text)
    surrogate = keyed_api.call(
        "PUT",
        "/v1/secrets/S",
        org.editor,
        body='{"value": "abc\\ud800"}',
        content_type="application/json",
    )
    assert surrogate.status_code == 422, surrogate.text
    assert "body.value" in surrogate.json()["message"]
    assert query_value(keyed_api.dsn, "SELECT count(*) FROM secrets WHERE org_id = $1", org.id) == 0


def test_without_secrets_key_storing_a_secret_is_a_clear_503(api: Api) -> None:
    org = api.org()
    answer = api.call("PUT", "/v1/secrets/S", org.editor, json={"value": VALUE})
    assert answer.status_code == 503, answer.text
    assert "no secrets_key is configured" in answer.json()["message"]
    token = api.call("PUT", "/v1/agent-tokens/1/2", org.editor, json={"token": TOKEN})
    assert token.status_code == 503
    assert query_value(api.dsn, "SELECT count(*) FROM secrets WHERE org_id = $1", org.id) == 0

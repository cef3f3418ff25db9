"""POST/GET/DELETE /v1/follows of a real `engine api`: a follow is an ordinary rule that
matches every event of one agent on one chain, replaced by a second follow, counted in
the quota, and removed with its state."""

from __future__ import annotations

import json

import httpx

from rules import RuleIndex, load_rules_text
from tests.integration.tenants.api_fixtures import Api, api
from tests.processes import query_all, query_value

__all__ = ["api"]

ACTIONS = [{"rest": {"url": "https://example.com/hook", "body": {"id": "{{ event.id }}"}}}]


def _follow(api: Api, key: str, chain_id: int = 84532, agent_id: int = 42) -> httpx.Response:
    body = {"chain_id": chain_id, "agent_id": agent_id, "actions": ACTIONS}
    return api.call("POST", "/v1/follows", key, json=body)


def test_following_an_agent_makes_a_rule_that_matches_all_its_events(api: Api) -> None:
    org = api.org()
    created = _follow(api, org.editor)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["chain_id"], body["agent_id"]) == (84532, 42)
    [rule] = body["rules"]
    assert (rule["id"], rule["created"], rule["version"]) == ("follow-84532-42", True, 1)

    stored = api.call("GET", "/v1/rules/follow-84532-42", org.viewer)
    assert stored.status_code == 200
    document = stored.json()["rule"]
    assert document["actions"] == ACTIONS

    # The stored document means what it says: every event of agent 42 on chain 84532.
    loaded = load_rules_text(json.dumps({"rules": [document]}), "follow.yaml", environ={})
    assert not loaded.errors, loaded.errors
    index = RuleIndex(loaded.rules)
    events = [
        {"chain_id": 84532, "registry": "reputation", "event_type": "NewFeedback", "agent_id": 42},
        {"chain_id": 84532, "registry": "identity", "event_type": "Registered", "agent_id": 42},
        {"chain_id": 84532, "registry": "validation", "event_type": "X", "agent_id": 42},
        {"chain_id": 84532, "registry": "reputation", "event_type": "NewFeedback", "agent_id": 7},
        {"chain_id": 1, "registry": "reputation", "event_type": "NewFeedback", "agent_id": 42},
    ]
    assert [bool(index.matching(e)) for e in events] == [True, True, True, False, False]

    listed = api.call("GET", "/v1/follows", org.viewer).json()
    assert [(f["chain_id"], f["agent_id"]) for f in listed["follows"]] == [(84532, 42)]
    assert listed["follows"][0]["rule"]["id"] == "follow-84532-42"
    assert [r["id"] for r in api.call("GET", "/v1/rules", org.viewer).json()["rules"]] == [
        "follow-84532-42"
    ]


def test_following_again_replaces_the_rule(api: Api) -> None:
    org = api.org()
    assert _follow(api, org.editor).status_code == 201
    other_actions = [{"rest": {"url": "https://example.com/other", "body": {}}}]
    again = api.call(
        "POST",
        "/v1/follows",
        org.editor,
        json={"chain_id": 84532, "agent_id": 42, "actions": other_actions},
    )
    assert again.status_code == 200, again.text
    [rule] = again.json()["rules"]
    assert (rule["created"], rule["version"], rule["state"]) == (False, 2, "kept")
    assert rule["rule"]["actions"] == other_actions
    count = query_value(api.dsn, "SELECT count(*) FROM triggers WHERE org_id = $1", org.id)
    assert count == 1


def test_unfollowing_deletes_the_rule_and_its_state(api: Api) -> None:
    org, other = api.org(), api.org()
    assert _follow(api, org.editor).status_code == 201
    tid = f"{org.id}/follow-84532-42"
    query_all(
        api.dsn,
        "INSERT INTO trigger_state (trigger_id, group_key, state, org_id)"
        " VALUES ($1, '', '{}', $2) RETURNING trigger_id",
        tid,
        org.id,
    )
    assert api.call("DELETE", "/v1/follows/84532/42", other.editor).status_code == 404
    assert api.call("DELETE", "/v1/follows/84532/42", org.viewer).status_code == 403
    assert api.call("DELETE", "/v1/follows/84532/42", org.editor).status_code == 204
    assert query_value(api.dsn, "SELECT count(*) FROM triggers WHERE id = $1", tid) == 0
    assert (
        query_value(api.dsn, "SELECT count(*) FROM trigger_state WHERE trigger_id = $1", tid) == 0
    )
    assert api.call("GET", "/v1/follows", org.viewer).json() == {"follows": [], "next": None}
    assert api.call("DELETE", "/v1/follows/84532/42", org.editor).status_code == 404


def test_a_follow_counts_in_the_quota_and_its_mistakes_are_422(api: Api) -> None:
    org = api.org(max_rules=1)
    assert _follow(api, org.editor, agent_id=1).status_code == 201
    over = _follow(api, org.editor, agent_id=2)
    assert over.status_code == 409
    assert "quota of 1 rules" in over.json()["message"]

    bad = api.call(
        "POST",
        "/v1/follows",
        org.editor,
        json={"chain_id": 1, "agent_id": 1, "actions": [{"rest": {"body": {}}}]},
    )
    assert bad.status_code == 422, bad.text
    assert bad.json()["errors"][0]["path"].startswith("actions[0]")
    secret_env = api.call(
        "POST",
        "/v1/follows",
        org.editor,
        json={"chain_id": 1, "agent_id": 1, "actions": [{"rest": {"url": "${HOOK}"}}]},
    )
    assert secret_env.status_code == 422
    assert "{secret: NAME}" in secret_env.json()["message"]
    for body in (
        {"chain_id": 0, "agent_id": 1, "actions": ACTIONS},
        {"chain_id": 1, "agent_id": -1, "actions": ACTIONS},
        {"chain_id": 1, "agent_id": 1, "actions": []},
        {"chain_id": 1, "agent_id": 1, "actions": ACTIONS, "where": {}},
    ):
        assert api.call("POST", "/v1/follows", org.editor, json=body).status_code == 422, body
    not_utf8 = api.call(
        "POST", "/v1/follows", org.editor, body=b"\xff\xfe{", content_type="application/json"
    )
    assert not_utf8.status_code == 422, not_utf8.text
    assert "malformed JSON" in not_utf8.json()["message"]
    assert _follow(api, org.viewer, agent_id=3).status_code == 403
    assert query_value(api.dsn, "SELECT count(*) FROM triggers WHERE org_id = $1", org.id) == 1

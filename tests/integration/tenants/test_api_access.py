"""Who may do what through a real `engine api`: 401 for any bad key, 403 by role, keys
managed by admins of their own organization only, and results and events as read."""

from __future__ import annotations

import pytest

from engine.tenants.keys import key_digest, key_lookup
from tests.integration.tenants.api_fixtures import Api, api
from tests.processes import insert_events, query_all, query_value

__all__ = ["api"]

RULE = {
    "on": {"registry": "reputation"},
    "actions": [{"rest": {"url": "https://example.com/hook", "body": {}}}],
}


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-key",
        "Bearer te_AAAAAAAAAAAA_" + "A" * 43,  # well formed, unknown
    ],
)
def test_a_missing_or_bad_key_answers_401_with_a_challenge(api: Api, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    answer = api.call("GET", "/v1/rules", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["message"]


def test_a_revoked_key_answers_401(api: Api) -> None:
    org = api.org()
    revoked = api.key(org.id, "admin", revoked=True)
    answer = api.call("GET", "/v1/rules", revoked)
    assert answer.status_code == 401
    assert "revoked" in answer.json()["message"]
    # A key whose secret part is wrong is unknown, whatever its lookup.
    forged = org.admin[:-4] + ("AAAA" if not org.admin.endswith("AAAA") else "BBBB")
    assert api.call("GET", "/v1/rules", forged).status_code == 401


def test_roles_viewer_reads_editor_writes_admin_manages_keys(api: Api) -> None:
    org = api.org()
    expected = {
        # (method, path, body): statuses for viewer, editor, admin
        ("GET", "/v1/rules", None): (200, 200, 200),
        ("GET", "/v1/actions", None): (200, 200, 200),
        ("GET", "/v1/events", None): (200, 200, 200),
        ("PUT", "/v1/rules/r", "rule"): (403, 201, 200),
        ("GET", "/v1/keys", None): (403, 403, 200),
        ("POST", "/v1/keys", "key"): (403, 403, 201),
    }
    bodies = {"rule": RULE, "key": {"role": "viewer"}, None: None}
    for (method, path, body), statuses in expected.items():
        got = tuple(
            api.call(method, path, org.keys[role], json=bodies[body]).status_code
            for role in ("viewer", "editor", "admin")
        )
        assert got == statuses, (method, path)
    forbidden = api.call("PUT", "/v1/rules/r", org.viewer, json=RULE).json()["message"]
    assert forbidden == "a viewer key may not change rules: it takes an editor or admin key"


def test_an_admin_creates_lists_and_revokes_keys_of_its_own_organization(api: Api) -> None:
    org, other = api.org(), api.org()
    made = api.call("POST", "/v1/keys", org.admin, json={"role": "editor", "name": "ci"})
    assert made.status_code == 201
    key = made.json()["key"]
    assert api.call("PUT", "/v1/rules/from-ci", key, json=RULE).status_code == 201
    stored = query_all(
        api.dsn, "SELECT lookup, hash FROM api_keys WHERE id = $1", made.json()["id"]
    )
    assert stored == [(key_lookup(key), key_digest(key))]  # only a hash is kept
    listed = api.call("GET", "/v1/keys", org.admin).json()["keys"]
    assert "key" not in listed[0]
    assert {k["name"] for k in listed} == {"test", "ci"}
    key_id = made.json()["id"]

    # Another organization's admin: 404, and the key keeps working.
    assert api.call("DELETE", f"/v1/keys/{key_id}", other.admin).status_code == 404
    assert api.call("GET", "/v1/rules", key).status_code == 200
    assert all(k["id"] != key_id for k in api.call("GET", "/v1/keys", other.admin).json()["keys"])

    assert api.call("DELETE", f"/v1/keys/{key_id}", org.admin).status_code == 204
    assert api.call("GET", "/v1/rules", key).status_code == 401
    assert api.call("DELETE", "/v1/keys/999999999", org.admin).status_code == 404


def _action_rows(api: Api, org_id: int, rule: str, statuses: list[str]) -> list[int]:
    ids = []
    for i, status in enumerate(statuses):
        ids.append(
            query_value(
                api.dsn,
                "INSERT INTO action_results (trigger_id, event_id, action_index, action_type,"
                " status, attempts, error_message, spec, context, org_id)"
                " VALUES ($1, $2, 0, 'rest', $3, 5, 'HTTP 500', '{\"url\": \"s\"}',"
                " '{\"secret\": 1}', $4) RETURNING id",
                f"{org_id}/{rule}",
                f"ev-{i}",
                status,
                org_id,
            )
        )
    return ids


def test_action_results_are_listed_newest_first_and_a_dead_letter_is_retried(api: Api) -> None:
    org, other = api.org(), api.org()
    ids = _action_rows(api, org.id, "low", ["success", "failed", "failed", "success"])
    theirs = _action_rows(api, other.id, "low", ["failed"])[0]
    page = api.call("GET", "/v1/actions", org.viewer, params={"limit": 3}).json()
    assert [a["id"] for a in page["actions"]] == ids[::-1][:3]
    assert page["next"] == ids[1]
    rest = api.call("GET", "/v1/actions", org.viewer, params={"before": page["next"]}).json()
    assert [a["id"] for a in rest["actions"]] == [ids[0]]
    first = page["actions"][0]
    assert first["rule"] == "low"
    assert "spec" not in first and "context" not in first
    failed = api.call("GET", "/v1/actions", org.viewer, params={"status": "failed", "rule": "low"})
    assert [a["id"] for a in failed.json()["actions"]] == [ids[2], ids[1]]

    retried = api.call("POST", f"/v1/actions/{ids[1]}/retry", org.editor)
    assert retried.status_code == 200
    assert (retried.json()["status"], retried.json()["attempts"]) == ("queued", 0)
    again = api.call("POST", f"/v1/actions/{ids[1]}/retry", org.editor)
    assert again.status_code == 409
    assert "'queued'" in again.json()["message"]
    assert api.call("POST", f"/v1/actions/{ids[2]}/retry", org.viewer).status_code == 403
    assert api.call("POST", f"/v1/actions/{theirs}/retry", org.editor).status_code == 404
    assert query_all(
        api.dsn, "SELECT status, attempts FROM action_results WHERE id = $1", theirs
    ) == [("failed", 5)]
    assert all(
        a["id"] != theirs for a in api.call("GET", "/v1/actions", org.admin).json()["actions"]
    )


def test_events_are_read_newest_first_with_filters(api: Api) -> None:
    org = api.org()
    agent = 900_000 + org.id
    insert_events(
        api.dsn,
        [
            {"registry": "reputation", "event_type": "NewFeedback", "agent_id": agent, "score": s}
            for s in (10, 20, 30)
        ]
        + [{"registry": "identity", "event_type": "Registered", "agent_id": agent}],
    )
    params = {"agent_id": agent, "event_type": "NewFeedback", "limit": 2}
    page = api.call("GET", "/v1/events", org.viewer, params=params).json()
    assert [e["score"] for e in page["events"]] == [30, 20]
    rest = api.call(
        "GET", "/v1/events", org.viewer, params={**params, "before": page["next"]}
    ).json()
    assert [e["score"] for e in rest["events"]] == [10]
    assert rest["next"] is None
    everything = api.call("GET", "/v1/events", org.viewer, params={"agent_id": agent}).json()
    assert len(everything["events"]) == 4

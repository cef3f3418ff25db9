"""Silences and runtime disables through a real `engine api`: each organization sees,
expires, disables and enables only its own, the API says 404 for another's, and the
database refuses it too (row-level security, whatever SQL runs)."""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.tenants.api_fixtures import Api, api
from tests.processes import query_value

__all__ = ["api"]

RULE = {
    "on": {"registry": "reputation", "event_type": "NewFeedback"},
    "labels": {"severity": "page"},
    "actions": [{"rest": {"url": "https://example.com/hook", "body": {"a": 1}}}],
}
SILENCE = {"rule": "low-*", "matchers": {"agent_id": "42"}, "for": "2h", "comment": "on it"}


def test_an_organization_sees_and_expires_only_its_own_silences(api: Api) -> None:
    a, b = api.org(), api.org()
    made = api.call("POST", "/v1/silences", a.editor, json=SILENCE)
    assert made.status_code == 201, made.text
    silence = made.json()
    assert (silence["rule"], silence["matchers"], silence["active"]) == (
        "low-*",
        {"agent_id": "42"},
        True,
    )
    assert silence["created_by"] == "key:test"
    assert query_value(api.dsn, "SELECT org_id FROM silences WHERE id = $1", silence["id"]) == a.id

    assert api.call("POST", "/v1/silences", a.viewer, json=SILENCE).status_code == 403
    assert [s["id"] for s in api.call("GET", "/v1/silences", a.viewer).json()["silences"]] == [
        silence["id"]
    ]
    assert api.call("GET", "/v1/silences", b.viewer).json()["silences"] == []
    stolen = api.call("POST", f"/v1/silences/{silence['id']}/expire", b.editor)
    assert stolen.status_code == 404
    assert "does not exist in your organization" in stolen.json()["message"]

    expired = api.call("POST", f"/v1/silences/{silence['id']}/expire", a.editor)
    assert expired.json() == {"id": silence["id"], "was_active": True}
    assert api.call("GET", "/v1/silences", a.viewer).json()["silences"] == []
    [listed] = api.call("GET", "/v1/silences", a.viewer, params={"all": "true"}).json()["silences"]
    assert (listed["active"], listed["expired_by"]) == (False, "key:test")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"until": "2026-01-01T00:00:00Z"}, "either --for DURATION or --until TIME"),
        ({"for": None}, "either --for DURATION or --until TIME"),
        ({"for": "-3h"}, "--for must be a positive duration"),
        ({"for": None, "until": "2001-01-01T00:00:00"}, "is in the past"),
        ({"comment": " "}, "needs a comment"),
    ],
)
def test_a_malformed_silence_is_refused_with_advice(
    api: Api, change: dict[str, object], message: str
) -> None:
    org = api.org()
    answer = api.call("POST", "/v1/silences", org.editor, json={**SILENCE, **change})
    assert answer.status_code == 422
    assert message in answer.text
    assert query_value(api.dsn, "SELECT count(*) FROM silences WHERE org_id = $1", org.id) == 0


def test_an_organization_disables_and_enables_only_its_own_rules(api: Api) -> None:
    a, b = api.org(), api.org()
    assert api.call("PUT", "/v1/rules/low-feedback", a.editor, json=RULE).status_code == 201
    disabled = api.call(
        "POST", "/v1/rules/low-feedback/disable", a.editor, json={"for": "1h", "comment": "noisy"}
    )
    assert disabled.status_code == 200, disabled.text
    body = disabled.json()
    assert (body["rule"], body["disabled_by"], body["comment"]) == (
        "low-feedback",
        "key:test",
        "noisy",
    )
    assert body["until"] is not None
    assert api.call("POST", "/v1/rules/low-feedback/disable", b.editor).status_code == 404
    assert api.call("POST", "/v1/rules/low-feedback/enable", b.editor).status_code == 404
    assert api.call("GET", "/v1/disabled-rules", b.viewer).json() == {"disabled_rules": []}
    [listed] = api.call("GET", "/v1/disabled-rules", a.viewer).json()["disabled_rules"]
    assert listed["rule"] == "low-feedback"
    assert query_value(api.dsn, "SELECT org_id FROM rule_disables") == a.id

    enabled = api.call("POST", "/v1/rules/low-feedback/enable", a.editor)
    assert enabled.json() == {"rule": "low-feedback", "was_disabled": True}
    assert api.call("GET", "/v1/disabled-rules", a.viewer).json() == {"disabled_rules": []}


def test_row_level_security_keeps_silences_and_disables_apart(api: Api) -> None:
    a, b = api.org(), api.org()
    theirs = api.call("POST", "/v1/silences", b.editor, json=SILENCE).json()["id"]
    assert api.call("PUT", "/v1/rules/low-feedback", b.editor, json=RULE).status_code == 201
    api.call("POST", "/v1/rules/low-feedback/disable", b.editor)
    with psycopg.connect(api.dsn) as conn:
        conn.execute("SET LOCAL ROLE engine_tenant")
        conn.execute("SELECT set_config('engine.org_id', %s, true)", (str(a.id),))
        assert conn.execute("SELECT count(*) FROM silences").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM rule_disables").fetchone() == (0,)
        ended = conn.execute("UPDATE silences SET ends_at = now() WHERE id = %s", (theirs,))
        assert ended.rowcount == 0
        assert conn.execute("DELETE FROM rule_disables").rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO silences (org_id, rule_glob, ends_at, created_by, comment)"
                " VALUES (%s, '*', now() + interval '1h', 'x', 'y')",
                (b.id,),
            )
    assert query_value(api.dsn, "SELECT ends_at > now() FROM silences WHERE id = $1", theirs)
    assert query_value(api.dsn, "SELECT count(*) FROM rule_disables WHERE org_id = $1", b.id) == 1


def test_an_action_held_back_names_its_silence(api: Api) -> None:
    org = api.org()
    silence_id = api.call("POST", "/v1/silences", org.editor, json=SILENCE).json()["id"]
    query_value(
        api.dsn,
        "INSERT INTO action_results (trigger_id, org_id, event_id, action_index, action_type,"
        " status, spec, context, silence_id)"
        " VALUES ($1, $2, 'ev1', 0, 'rest', 'silenced', '{}', '{}', $3) RETURNING id",
        f"{org.id}/low-feedback",
        org.id,
        silence_id,
    )
    [row] = api.call("GET", "/v1/actions", org.viewer, params={"status": "silenced"}).json()[
        "actions"
    ]
    assert (row["rule"], row["status"], row["silence_id"]) == (
        "low-feedback",
        "silenced",
        silence_id,
    )

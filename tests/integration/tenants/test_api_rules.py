"""PUT/GET/DELETE /v1/rules of a real `engine api`: stored as the daemon reads them, the
same compiler and messages as rule files, state kept or reset, quotas, pagination."""

from __future__ import annotations

from rules import load_rules_text
from tests.integration.tenants.api_fixtures import Api, api
from tests.processes import query_all, query_value

__all__ = ["api"]

RULE = {
    "on": {"registry": "reputation", "event_type": "NewFeedback"},
    "where": {"agent_id": 42, "score": {"lt": 30}},
    "actions": [{"rest": {"url": "https://example.com/hook", "body": {"a": 1}}}],
}

YAML_RULE = """\
on: {registry: reputation, event_type: NewFeedback}
per: agent_id
when:
  ema: {of: score, window: -3, below: 60}
actions:
  - rest: {url: "https://example.com/hook", body: {a: 1}}
"""


def _state_rows(api: Api, trigger_id: str) -> int:
    return query_value(
        api.dsn, "SELECT count(*) FROM trigger_state WHERE trigger_id = $1", trigger_id
    )


def _add_state(api: Api, org_id: int, trigger_id: str) -> None:
    query_all(
        api.dsn,
        "INSERT INTO trigger_state (trigger_id, group_key, state, org_id)"
        " VALUES ($1, '', '{\"n\": 3}', $2) RETURNING trigger_id",
        trigger_id,
        org_id,
    )


def test_a_json_rule_is_created_stored_and_replaced(api: Api) -> None:
    org = api.org()
    created = api.call("PUT", "/v1/rules/low-feedback", org.editor, json=RULE)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["id"], body["version"], body["created"], body["state"]) == (
        "low-feedback",
        1,
        True,
        "new",
    )
    assert body["rule"] == {"id": "low-feedback", **RULE}
    row = query_all(
        api.dsn,
        "SELECT id, org_id, rule_id, source_file, document->>'id', enabled FROM triggers"
        " WHERE org_id = $1",
        org.id,
    )
    assert row == [(f"{org.id}/low-feedback", org.id, "low-feedback", None, "low-feedback", True)]

    same = api.call("PUT", "/v1/rules/low-feedback", org.editor, json=RULE)
    assert same.status_code == 200
    assert (same.json()["version"], same.json()["changed"]) == (1, False)

    tid = f"{org.id}/low-feedback"
    _add_state(api, org.id, tid)
    actions_only = {**RULE, "actions": [{"rest": {"url": "https://example.com/b", "body": {}}}]}
    kept = api.call("PUT", "/v1/rules/low-feedback", org.editor, json=actions_only)
    assert kept.status_code == 200
    assert (kept.json()["version"], kept.json()["state"], kept.json()["changed"]) == (
        2,
        "kept",
        True,
    )
    assert _state_rows(api, tid) == 1

    logic = {**actions_only, "where": {"agent_id": 42, "score": {"lt": 10}}}
    reset = api.call("PUT", "/v1/rules/low-feedback", org.editor, json=logic)
    assert (reset.json()["version"], reset.json()["state"]) == (3, "reset")
    assert _state_rows(api, tid) == 0
    changes = query_all(
        api.dsn, "SELECT op FROM trigger_changes WHERE trigger_id = $1 ORDER BY seq", tid
    )
    assert changes == [("upsert",)] * 3  # the unchanged PUT wrote nothing

    got = api.call("GET", "/v1/rules/low-feedback", org.viewer)
    assert got.status_code == 200
    assert (got.json()["version"], got.json()["rule"]["where"]["score"]) == (3, {"lt": 10})


def test_a_yaml_rule_and_a_one_rule_file_are_accepted(api: Api) -> None:
    org = api.org()
    text = YAML_RULE.replace("-3", "10")
    plain = api.call("PUT", "/v1/rules/ema", org.editor, body=text, content_type="application/yaml")
    assert plain.status_code == 201, plain.text
    assert plain.json()["rule"]["when"]["ema"]["window"] == 10
    as_file = "rules:\n  - id: ema2\n" + "".join(f"    {line}\n" for line in text.splitlines())
    filed = api.call(
        "PUT", "/v1/rules/ema2", org.editor, body=as_file, content_type="application/yaml"
    )
    assert filed.status_code == 201, filed.text
    two = as_file + "  - id: other\n    actions: []\n"
    refused = api.call("PUT", "/v1/rules/ema2", org.editor, body=two, content_type="text/yaml")
    assert refused.status_code == 422
    assert "exactly one" in refused.json()["message"]


def test_a_rule_that_does_not_compile_gets_engine_checks_messages_with_path_and_line(
    api: Api,
) -> None:
    org = api.org()
    answer = api.call(
        "PUT", "/v1/rules/drop", org.editor, body=YAML_RULE, content_type="application/yaml"
    )
    assert answer.status_code == 422, answer.text
    file_text = "rules:\n  - id: drop\n" + "".join(
        f"    {line}\n" for line in YAML_RULE.splitlines()
    )
    expected = load_rules_text(file_text, "ops.yaml", environ={}).errors
    assert [e.message for e in expected] == [e["message"] for e in answer.json()["errors"]]
    error = answer.json()["errors"][0]
    assert error["path"] == "when.ema.window"
    assert error["line"] == 4
    assert error["message"].startswith("when.ema.window must be")
    as_json = api.call(
        "PUT",
        "/v1/rules/drop",
        org.editor,
        json={**RULE, "when": {"ema": {"of": "score", "window": -3, "below": 60}}},
    )
    assert as_json.status_code == 422
    assert [(e["path"], e["line"]) for e in as_json.json()["errors"]] == [("when.ema.window", None)]
    assert query_value(api.dsn, "SELECT count(*) FROM triggers WHERE org_id = $1", org.id) == 0


def test_environment_variables_are_refused_in_tenant_rules(api: Api) -> None:
    org = api.org()
    rule = {**RULE, "actions": [{"rest": {"url": "${WEBHOOK_URL}", "body": {"a": 1}}}]}
    answer = api.call("PUT", "/v1/rules/env", org.editor, json=rule)
    assert answer.status_code == 422
    error = answer.json()["errors"][0]
    assert error["path"] == "actions[0].rest.url"
    assert "{secret: NAME}" in error["message"]
    defaulted = {**RULE, "description": "${HOME:-x}"}
    assert api.call("PUT", "/v1/rules/env", org.editor, json=defaulted).status_code == 422
    assert query_value(api.dsn, "SELECT count(*) FROM triggers WHERE org_id = $1", org.id) == 0


def test_the_body_id_must_be_the_urls(api: Api) -> None:
    org = api.org()
    answer = api.call("PUT", "/v1/rules/a", org.editor, json={**RULE, "id": "b"})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["path"] == "id"
    assert api.call("PUT", "/v1/rules/a", org.editor, json={**RULE, "id": "a"}).status_code == 201
    bad = api.call("PUT", "/v1/rules/Not_Valid", org.editor, json=RULE)
    assert bad.status_code == 422
    assert "must match" in bad.json()["message"]


def test_creating_beyond_max_rules_is_refused_but_replacing_is_not(api: Api) -> None:
    org = api.org(max_rules=2)
    for rule_id in ("r1", "r2"):
        assert api.call("PUT", f"/v1/rules/{rule_id}", org.editor, json=RULE).status_code == 201
    third = api.call("PUT", "/v1/rules/r3", org.editor, json=RULE)
    assert third.status_code == 409
    assert "quota of 2 rules (max_rules)" in third.json()["message"]
    replaced = api.call("PUT", "/v1/rules/r2", org.editor, json={**RULE, "description": "x"})
    assert replaced.status_code == 200
    assert api.call("DELETE", "/v1/rules/r1", org.editor).status_code == 204
    assert api.call("PUT", "/v1/rules/r3", org.editor, json=RULE).status_code == 201


def test_rules_are_listed_a_page_at_a_time(api: Api) -> None:
    org = api.org()
    ids = [f"rule-{i}" for i in range(5)]
    for rule_id in reversed(ids):
        assert api.call("PUT", f"/v1/rules/{rule_id}", org.editor, json=RULE).status_code == 201
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = api.call("GET", "/v1/rules", org.viewer, params=params).json()
        seen += [rule["id"] for rule in page["rules"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert seen == ids
    assert pages == 3


def test_a_deleted_rule_is_gone_with_its_state(api: Api) -> None:
    org = api.org()
    assert api.call("PUT", "/v1/rules/gone", org.editor, json=RULE).status_code == 201
    tid = f"{org.id}/gone"
    _add_state(api, org.id, tid)
    deleted = api.call("DELETE", "/v1/rules/gone", org.editor)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert api.call("GET", "/v1/rules/gone", org.viewer).status_code == 404
    assert api.call("DELETE", "/v1/rules/gone", org.editor).status_code == 404
    assert _state_rows(api, tid) == 0
    last = query_all(
        api.dsn, "SELECT op FROM trigger_changes WHERE trigger_id = $1 ORDER BY seq", tid
    )
    assert last[-1] == ("delete",)


def test_another_organizations_rule_answers_404_and_is_unchanged(api: Api) -> None:
    acme, globex = api.org(), api.org()
    assert api.call("PUT", "/v1/rules/shared-name", acme.editor, json=RULE).status_code == 201
    assert api.call("GET", "/v1/rules/shared-name", globex.admin).status_code == 404
    assert api.call("DELETE", "/v1/rules/shared-name", globex.admin).status_code == 404
    assert api.call("GET", "/v1/rules", globex.viewer).json()["rules"] == []
    # The same rule id in another organization is another rule.
    other = {**RULE, "description": "globex's"}
    assert api.call("PUT", "/v1/rules/shared-name", globex.editor, json=other).status_code == 201
    rows = query_all(
        api.dsn,
        "SELECT id, version, document->>'description' FROM triggers WHERE rule_id = 'shared-name'"
        " ORDER BY org_id",
    )
    assert rows == [
        (f"{acme.id}/shared-name", 1, None),
        (f"{globex.id}/shared-name", 1, "globex's"),
    ]

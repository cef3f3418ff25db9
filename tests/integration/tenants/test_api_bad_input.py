"""Bad input to every endpoint of a real `engine api` answers 4xx with a clear message,
never a 5xx, and changes nothing."""

from __future__ import annotations

from typing import Any

from tests.integration.tenants.api_fixtures import Api, Org, api
from tests.processes import query_all

__all__ = ["api"]

RULE = (
    '{"on": {"registry": "reputation"},'
    ' "actions": [{"rest": {"url": "https://e.com", "body": {}}}]}'
)
TABLES = ("triggers", "trigger_changes", "trigger_state", "api_keys", "action_results")


def _counts(api: Api) -> list[Any]:
    return [
        query_all(
            api.dsn,
            f"SELECT count(*), max(version) FROM {t}"
            if t == "triggers"
            else f"SELECT count(*) FROM {t}",
        )[0]
        for t in TABLES
    ]


def _bad_requests(org: Org, action_id: int) -> list[tuple[str, str, dict[str, Any], int]]:
    json = "application/json"
    deep = "[" * 5000 + "]" * 5000
    return [
        ("PUT", "/v1/rules/r", {"body": "{not json", "content_type": json}, 422),
        ("PUT", "/v1/rules/r", {"body": "", "content_type": json}, 422),
        ("PUT", "/v1/rules/r", {"body": "[1, 2]", "content_type": json}, 422),
        ("PUT", "/v1/rules/r", {"body": deep, "content_type": json}, 422),
        ("PUT", "/v1/rules/r", {"body": '{"on": NaN}', "content_type": json}, 422),
        ("PUT", "/v1/rules/r", {"body": '{"on": 1e999}', "content_type": json}, 422),
        ("PUT", "/v1/rules/r", {"body": b"\xff\xfe", "content_type": json}, 422),
        (
            "PUT",
            "/v1/rules/r",
            {"body": RULE.replace("e.com", "e.com\\u0000"), "content_type": json},
            422,
        ),
        (
            "PUT",
            "/v1/rules/r",
            {"body": RULE.replace("e.com", "\\ud800"), "content_type": json},
            422,
        ),
        ("PUT", "/v1/rules/r", {"body": RULE[:-1] + ', "colour": 1}', "content_type": json}, 422),
        ("PUT", "/v1/rules/r", {"body": "on: [unclosed", "content_type": "application/yaml"}, 422),
        (
            "PUT",
            "/v1/rules/r",
            {"body": "a: !!python/object x", "content_type": "application/yaml"},
            422,
        ),
        ("PUT", "/v1/rules/r", {"body": "a: &a [*a]", "content_type": "application/yaml"}, 422),
        ("PUT", "/v1/rules/r", {"body": "just text", "content_type": "application/yaml"}, 422),
        ("PUT", "/v1/rules/r", {"body": RULE, "content_type": "text/plain"}, 415),
        ("PUT", "/v1/rules/r", {"body": RULE}, 415),
        ("PUT", "/v1/rules/r", {"body": "x" * (1024 * 1024 + 1), "content_type": json}, 413),
        ("PUT", "/v1/rules/a%2Fb", {"body": RULE, "content_type": json}, 404),
        ("GET", "/v1/rules", {"params": {"limit": 0}}, 422),
        ("GET", "/v1/rules", {"params": {"limit": "many"}}, 422),
        ("GET", "/v1/rules", {"params": {"after": "\x00"}}, 422),
        ("GET", "/v1/rules/%00", {}, 404),
        ("GET", "/v1/actions", {"params": {"status": "lost"}}, 422),
        ("GET", "/v1/actions", {"params": {"before": 2**70}}, 422),
        ("GET", "/v1/actions", {"params": {"rule": "../x"}}, 422),
        ("POST", f"/v1/actions/{2**70}/retry", {}, 422),
        ("POST", "/v1/actions/abc/retry", {}, 422),
        ("GET", "/v1/events", {"params": {"chain_id": 2**64}}, 422),
        ("GET", "/v1/events", {"params": {"before": "x.y"}}, 422),
        ("GET", "/v1/events", {"params": {"registry": "a'b"}}, 422),
        ("POST", "/v1/keys", {"json": {"role": "owner"}}, 422),
        ("POST", "/v1/keys", {"json": {"role": "viewer", "extra": 1}}, 422),
        ("POST", "/v1/keys", {"json": {"role": "viewer", "name": "a\x00b"}}, 422),
        ("POST", "/v1/keys", {"json": {"role": 3}}, 422),
        ("POST", "/v1/keys", {"body": "{", "content_type": json}, 422),
        ("POST", "/v1/keys", {"json": ["viewer"]}, 422),
        ("DELETE", "/v1/keys/-1", {}, 422),
        ("DELETE", "/v1/keys/x", {}, 422),
    ]


def test_bad_input_answers_4xx_with_a_message_and_changes_nothing(api: Api) -> None:
    org = api.org()
    action_id = query_all(
        api.dsn,
        "INSERT INTO action_results (trigger_id, action_index, action_type, status, spec,"
        " context, org_id) VALUES ($1, 0, 'rest', 'success', '{}', '{}', $2) RETURNING id",
        f"{org.id}/r",
        org.id,
    )[0][0]
    before = _counts(api)
    for method, path, request, status in _bad_requests(org, action_id):
        answer = api.call(method, path, org.admin, **request)
        what = f"{method} {path} {str(request)[:80]}"
        assert answer.status_code == status, (what, answer.text[:300])
        assert answer.headers["content-type"] == "application/json", what
        assert answer.json()["message"], what
        if status == 422:
            assert answer.json()["errors"], what
    assert _counts(api) == before

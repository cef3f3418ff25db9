"""`GET /v1/events/{id}/explain` through a real `engine api`, on an event a real
`engine run` evaluated: each organization sees its own rules' verdicts and action rows,
never another's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.tenants.api_fixtures import Api, api
from tests.processes import engine_processes, insert_events, query_value, wait_until, write_config

__all__ = ["api"]

HOOK = "https://example.com/hook"


def rule(score_below: int) -> dict[str, Any]:
    return {
        "on": {"registry": "reputation", "event_type": "NewFeedback"},
        "where": {"score": {"lt": score_below}},
        "actions": [{"rest": {"url": HOOK, "body": {}}}],
    }


def test_an_organization_explains_only_against_its_own_rules(
    api: Api, redis_url: str, tmp_path: Path
) -> None:
    a, b = api.org(), api.org()
    assert api.call("PUT", "/v1/rules/low", a.editor, json=rule(5)).status_code == 201
    assert api.call("PUT", "/v1/rules/low", b.editor, json=rule(50)).status_code == 201
    assert api.call("PUT", "/v1/rules/b-only", b.editor, json=rule(90)).status_code == 201
    insert_events(
        api.dsn,
        [{"registry": "reputation", "event_type": "NewFeedback", "agent_id": 4242, "score": 10}],
    )
    event_id = query_value(api.dsn, "SELECT id FROM events WHERE agent_id = 4242")
    config = write_config(tmp_path, database_url=api.dsn, redis_url=redis_url, rules=[])
    with engine_processes(config, tmp_path, ["run"]):
        wait_until(
            lambda: (
                query_value(
                    api.dsn, "SELECT count(*) FROM action_results WHERE event_id = $1", event_id
                )
                == 2
            ),
            what="B's two rules to fire",
        )

    path = f"/v1/events/{event_id}/explain"
    answer = api.call("GET", path, a.viewer)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["evaluated"] is True  # engine_tenant may read the cursor's position
    assert [r["rule"] for r in body["rules"]] == ["low"]
    mine = body["rules"][0]
    assert mine["fired"] is False and mine["actions"] == []  # B's rows stay B's
    assert mine["source"] is None
    where = next(v for v in mine["verdicts"] if v["step"] == "where")
    assert where["summary"] == "fails: where.score.lt: score is 10, expected lt 5"

    refused = api.call("GET", path, a.viewer, params={"rule": "b-only"})
    assert refused.status_code == 404
    assert "no rule 'b-only'" in refused.json()["message"]

    theirs = api.call("GET", path, b.viewer).json()
    assert sorted(r["rule"] for r in theirs["rules"]) == ["b-only", "low"]
    assert all(len(r["actions"]) == 1 and r["fired"] for r in theirs["rules"])

    unknown = api.call("GET", "/v1/events/1-0-404/explain", a.viewer)
    assert unknown.status_code == 404
    assert "no event with id '1-0-404'" in unknown.json()["message"]
    assert api.call("GET", path).status_code == 401

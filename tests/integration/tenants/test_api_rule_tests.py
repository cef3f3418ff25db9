"""Rule tests and backtests through a real `engine api`: the same runner as `engine rules
test`, the same backtest as `engine rules backtest`, and no side effect of any kind (no
row written, no request sent, the rule's state untouched)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devkit.localstack import PostgresServer
from tests.fakes.webhook import WebhookReceiver
from tests.integration.tenants.api_fixtures import Api, Org, api, start_api
from tests.processes import insert_events, query_value

__all__ = ["api"]


def _yaml_rule(url: str, agent: int = 42) -> str:
    return f"""\
id: low-score
on: {{registry: reputation, event_type: NewFeedback}}
where: {{agent_id: {agent}, score: {{lt: 30}}}}
actions:
  - rest: {{url: "{url}", body: {{score: "{{{{ event.score }}}}", who: "{{{{ rule.id }}}}"}}}}
tests:
  - name: a low score fires
    events: [{{agent_id: {agent}, score: 90}}, {{agent_id: {agent}, score: 10}}]
    fires: [1]
    renders: [{{firing: 0, contains: '"score": 10'}}]
  - name: a wrong expectation
    events: [{{agent_id: {agent}, score: 10}}]
    fires: []
"""


def _side_effects(api: Api, org: Org) -> tuple[int, int, int]:
    return (
        query_value(api.dsn, "SELECT count(*) FROM triggers WHERE org_id = $1", org.id),
        query_value(api.dsn, "SELECT count(*) FROM trigger_state WHERE org_id = $1", org.id),
        query_value(api.dsn, "SELECT count(*) FROM action_results WHERE org_id = $1", org.id),
    )


def test_a_given_rule_runs_its_tests_and_events_without_side_effects(api: Api) -> None:
    org = api.org()
    with WebhookReceiver() as receiver:
        answer = api.call(
            "POST",
            "/v1/rule-tests",
            org.viewer,
            json={
                "rule": _yaml_rule(receiver.url),
                "events": [
                    {"agent_id": 42, "score": 5},
                    {"agent_id": 7, "score": 5},
                    {"agent_id": 42, "score": 50},
                    {"agent_id": 42, "score": 29},
                ],
            },
        )
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert report["rule_id"] == "low-score"
        assert report["passed"] is False
        first, second = report["tests"]
        assert (first["name"], first["passed"], first["actual_fires"]) == (
            "a low score fires",
            True,
            [1],
        )
        assert first["line"] == 7
        assert (second["passed"], second["expected_fires"], second["actual_fires"]) == (
            False,
            [],
            [0],
        )
        assert report["events"]["fired"] == [0, 3]
        firing = report["events"]["firings"][1]
        assert firing["event_index"] == 3
        [action] = firing["actions"]
        assert action["kind"] == "rest"
        assert action["rendered"]["body"] == {"score": 29, "who": "low-score"}
        assert action["rendered"]["url"] == receiver.url
        time.sleep(0.3)
        assert receiver.requests == []
    assert _side_effects(api, org) == (0, 0, 0)


def test_a_rule_that_does_not_compile_is_a_422_with_its_line(api: Api) -> None:
    org = api.org()
    broken = "on: {registry: reputation}\nper: agent_id\nwhen:\n  ema: {of: score, window: -3}\n"
    answer = api.call("POST", "/v1/rule-tests", org.viewer, json={"rule": broken + "actions: []\n"})
    assert answer.status_code == 422, answer.text
    lines = [e["line"] for e in answer.json()["errors"]]
    assert 4 in lines
    bad_event = api.call(
        "POST",
        "/v1/rule-tests",
        org.viewer,
        json={"rule": _yaml_rule("https://example.com/h"), "events": [{"no_such_field": 1}]},
    )
    assert bad_event.status_code == 422
    assert "is not an event field" in bad_event.json()["message"]


def test_a_stored_rule_runs_its_tests_and_keeps_its_state(api: Api) -> None:
    org, other = api.org(), api.org()
    put = api.call(
        "PUT",
        "/v1/rules/low-score",
        org.editor,
        body=_yaml_rule("https://example.com/h"),
        content_type="application/yaml",
    )
    assert put.status_code == 201, put.text
    before = _side_effects(api, org)
    answer = api.call("POST", "/v1/rules/low-score/test", org.viewer)
    assert answer.status_code == 200, answer.text
    assert [t["passed"] for t in answer.json()["tests"]] == [True, False]
    assert answer.json()["events"] is None
    with_events = api.call(
        "POST",
        "/v1/rules/low-score/test",
        org.viewer,
        json={"events": [{"agent_id": 42, "score": 1}]},
    )
    assert with_events.json()["events"]["fired"] == [0]
    assert _side_effects(api, org) == before
    version = api.call("GET", "/v1/rules/low-score", org.viewer).json()["version"]
    assert version == 1
    assert api.call("POST", "/v1/rules/low-score/test", other.viewer).status_code == 404


@pytest.fixture(scope="module")
def small_api(
    pg_server: PostgresServer, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """An `engine api` whose backtests read at most 3 events."""
    name = f"api_{uuid.uuid4().hex}"
    dsn = pg_server.create_database(name, template=template_database)
    running = start_api(tmp_path_factory.mktemp("api"), dsn, extra={"backtest_max_events": 3})
    try:
        yield running
    finally:
        running.process.stop()
        pg_server.drop_database(name)


def _stored_events(api: Api, agent: int, scores: list[int], start: int) -> None:
    insert_events(
        api.dsn,
        [
            {
                "registry": "reputation",
                "event_type": "NewFeedback",
                "agent_id": agent,
                "score": score,
                "timestamp": start + i * 60,
            }
            for i, score in enumerate(scores)
        ],
    )


def _store_rule(api: Api, org: Org, agent: int) -> None:
    with WebhookReceiver() as receiver:
        rule = _yaml_rule(receiver.url, agent)
    put = api.call(
        "PUT", "/v1/rules/low-score", org.editor, body=rule, content_type="application/yaml"
    )
    assert put.status_code == 201, put.text


def test_a_backtest_lists_the_stored_rules_firings_over_stored_events(api: Api) -> None:
    org = api.org()
    agent = random.randint(10**6, 10**9)  # the events table is shared by the module's tests
    start = int(time.time()) - 3 * 3600
    _stored_events(api, agent, [90, 10, 20, 95, 5], start)
    _store_rule(api, org, agent)
    before = _side_effects(api, org)

    answer = api.call("POST", "/v1/rules/low-score/backtest", org.viewer, json={"since": "1d"})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["events"] >= 5, report["complete"], report["fired"]) == (True, True, 3)
    assert report["truncated"] is False
    assert [f["timestamp"] for f in report["firings"]] == [start + 60, start + 120, start + 240]
    assert report["firings"][0]["actions"][0]["rendered"]["body"]["score"] == 10

    limited = api.call(
        "POST", "/v1/rules/low-score/backtest", org.viewer, json={"since": "1d", "limit": 1}
    ).json()
    assert (limited["fired"], len(limited["firings"]), limited["truncated"]) == (3, 1, True)

    ranged = api.call(
        "POST",
        "/v1/rules/low-score/backtest",
        org.viewer,
        json={"since": str(start + 100), "until": str(start + 200)},
    ).json()
    assert [f["timestamp"] for f in ranged["firings"]] == [start + 120]
    assert _side_effects(api, org) == before

    bad = api.call("POST", "/v1/rules/low-score/backtest", org.viewer, json={"since": "soon"})
    assert bad.status_code == 422
    assert "since: expected a duration" in bad.json()["message"]
    other = api.org()
    assert (
        api.call("POST", "/v1/rules/low-score/backtest", other.viewer, json={}).status_code == 404
    )


def test_a_backtest_reads_at_most_backtest_max_events(small_api: Api) -> None:
    org = small_api.org()
    agent = random.randint(10**6, 10**9)
    start = int(time.time()) - 3600
    _stored_events(small_api, agent, [10, 10, 10, 10, 10], start)
    _store_rule(small_api, org, agent)
    report = small_api.call(
        "POST", "/v1/rules/low-score/backtest", org.viewer, json={"since": "1d"}
    ).json()
    assert (report["events"], report["complete"], report["fired"]) == (3, False, 3)


# Each `sum` is one C call the sandbox's guards never see between: in a plain process
# this renders for minutes.
_TEMPLATE_BOMB = "{{ ([range(100000)] * 60000) | map('sum') | sum }}"


def test_a_template_over_the_render_budget_is_a_422_and_others_are_answered_meanwhile(
    api: Api,
) -> None:
    org = api.org()
    rule = {
        "id": "bomb",
        "on": {"registry": "reputation", "event_type": "NewFeedback"},
        "actions": [{"rest": {"url": "http://127.0.0.1:9/", "body": {"x": _TEMPLATE_BOMB}}}],
    }
    answers: list[tuple[float, Any]] = []

    def send_bomb() -> None:
        began = time.monotonic()
        response = api.call(
            "POST", "/v1/rule-tests", org.viewer, json={"rule": rule, "events": [{"score": 1}]}
        )
        answers.append((time.monotonic() - began, response))

    bomber = threading.Thread(target=send_bomb)
    bomber.start()
    time.sleep(0.5)
    began = time.monotonic()
    listed = api.call("GET", "/v1/rules", org.viewer)
    listing_took = time.monotonic() - began
    bomber.join(timeout=15)

    assert listed.status_code == 200
    assert listing_took < 1.5, f"GET /v1/rules waited {listing_took:.1f} s for the bomb"
    assert answers, "POST /v1/rule-tests did not answer"
    took, response = answers[0]
    assert response.status_code == 422, response.text
    assert response.json()["message"] == (
        "rule 'bomb': template of actions[0].rest.body exceeded its render budget (2.0 s / 256 MiB)"
    )
    assert took < 8, f"the over-budget rule test took {took:.1f} s"
    # The jail's next child serves the next request.
    calm = {**rule, "actions": [{"rest": {"url": "http://127.0.0.1:9/", "body": {"x": "ok"}}}]}
    after = api.call(
        "POST", "/v1/rule-tests", org.viewer, json={"rule": calm, "events": [{"score": 1}]}
    )
    assert after.status_code == 200, after.text
    assert after.json()["events"]["firings"][0]["actions"][0]["rendered"]["body"] == {"x": "ok"}

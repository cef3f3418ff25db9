"""Fairness between organizations: one organization's flood of actions does not delay
another's.  Each organization's jobs wait in a queue of their own and workers take from
the queues in turn (engine/dispatcher.py, engine/worker.py; docs/tenants.md, "Fairness").

Real `engine run` and `engine worker` processes; a local webhook receiver that answers
in 20 ms, so that the flooding organization's 2,000 actions take about ten seconds on a
worker running 4 at a time.  With one queue for everyone the other organization's single
action would wait behind all of them.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.fakes.webhook import WebhookReceiver
from tests.integration.tenants.test_live_rules import stored_rows
from tests.processes import (
    engine_processes,
    insert_events,
    query_all,
    query_value,
    wait_until,
    write_config,
)

FLOOD = 2000
CONCURRENCY = 4
ANSWER_DELAY_S = 0.02
#: The other organization's action, from its event's commit to the request's arrival.
#: Generous for a shared machine; the flood alone takes FLOOD * ANSWER_DELAY_S /
#: CONCURRENCY = 10 s to drain.
MOST_DELAY_S = 2.5


def feedback(agent_id: int) -> dict[str, object]:
    return {"registry": "reputation", "event_type": "NewFeedback", "agent_id": agent_id}


def hook_rule(rule_id: str, agent_id: int, url: str) -> dict[str, object]:
    return {
        "id": rule_id,
        "on": {"registry": "reputation", "event_type": "NewFeedback"},
        "where": {"agent_id": agent_id},
        "actions": [{"rest": {"url": url}}],
    }


def create_org(database_url: str, name: str, per_minute: int | None = None) -> int:
    org_id: int = query_value(
        database_url,
        "INSERT INTO organizations (name, max_firings_per_minute, allow_private)"
        " VALUES ($1, $2, true) RETURNING id",
        name,
        per_minute,
    )
    return org_id


def put_rule(database_url: str, org_id: int, document: dict[str, object]) -> None:
    """The triggers row `PUT /v1/rules/{id}` writes."""
    (row,) = stored_rows(org_id, [document])
    query_all(
        database_url,
        "INSERT INTO triggers (id, org_id, rule_id, document, content_hash, logic_hash)"
        " VALUES ($1, $2, $3, $4::jsonb, $5, $6) RETURNING id",
        *row,
    )


def test_one_organization_s_flood_does_not_delay_another_s_action(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.set_behaviour(delay_s=ANSWER_DELAY_S)
    flood_org = create_org(database_url, "flood", per_minute=100_000)
    calm_org = create_org(database_url, "calm")
    put_rule(database_url, flood_org, hook_rule("everything", 1, f"{webhook_receiver.url}/flood"))
    put_rule(database_url, calm_org, hook_rule("the-one", 2, f"{webhook_receiver.url}/calm"))
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n", encoding="utf-8")
    config = write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=str(rules),
        extra={"engine": {"poll_interval_s": 0.2}, "worker": {"concurrency": CONCURRENCY}},
    )

    def delivered(path: str) -> list[float]:
        return [r.received_monotonic for r in webhook_receiver.requests if r.path == path]

    with engine_processes(config, tmp_path, ["run"], ["worker"]) as (run, worker):
        insert_events(database_url, [feedback(1)] * FLOOD)
        wait_until(lambda: len(delivered("/flood")) >= 20, timeout=20, what="the flood")
        assert len(delivered("/flood")) < FLOOD // 4, "no backlog to test"

        committed = time.monotonic()
        insert_events(database_url, [feedback(2)])
        try:
            wait_until(lambda: delivered("/calm"), timeout=MOST_DELAY_S * 4, interval=0.01)
        except AssertionError:
            raise AssertionError(
                f"the calm organization's action was not delivered within "
                f"{MOST_DELAY_S * 4:g}s; {len(delivered('/flood'))} of the flood's "
                f"{FLOOD} were delivered meanwhile"
            ) from None
        (arrived,) = delivered("/calm")
        flood_before = sum(1 for at in delivered("/flood") if at < arrived)
        assert arrived - committed <= MOST_DELAY_S, (
            f"the calm organization's action took {arrived - committed:.2f}s, behind "
            f"{flood_before} of the flood's actions"
        )
        assert flood_before < FLOOD // 2, "the flood had drained: nothing was shown"
        assert run.alive() and worker.alive()
    statuses = query_all(
        database_url,
        "SELECT org_id, status FROM action_results WHERE org_id = $1",
        calm_org,
    )
    assert statuses == [(calm_org, "success")]

"""A cursor from a logical restore (ahead of this cluster's transaction ids) stops
evaluation loudly instead of silently skipping every new event."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.webhook import WebhookReceiver
from tests.processes import (
    engine_processes,
    insert_events,
    query_all,
    query_value,
    wait_until,
    write_config,
)

RULE = """
rules:
  - id: every-feedback
    on: {{registry: reputation}}
    actions:
      - rest: {{url: "{url}/hook"}}
"""


def test_cursor_ahead_of_the_cluster_stops_evaluation_until_fixed(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.format(url=webhook_receiver.url), encoding="utf-8")
    config = write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=str(rules),
        extra={"engine": {"reconnect_max_s": 1}},
    )
    # What a pg_dump of a busier cluster restored here looks like.
    query_all(
        database_url,
        "INSERT INTO engine_cursors (name, txid, seq) VALUES ('main', '900000000000', 5)"
        " RETURNING name",
    )
    event = {"registry": "reputation", "event_type": "NewFeedback", "agent_id": 1}
    with engine_processes(config, tmp_path, ["run"], ["worker"]) as (engine, _worker):
        insert_events(database_url, [event])
        wait_until(
            lambda: "restored from a logical dump" in engine.output(),
            what="the refusal logged",
        )
        assert query_value(database_url, "SELECT count(*) FROM action_results") == 0
        assert engine.alive()

        # The documented remedy for a new deployment: evaluate the table again.
        query_all(database_url, "DELETE FROM engine_cursors RETURNING name")
        webhook_receiver.wait_for(1, timeout=20)
    assert query_value(database_url, "SELECT events FROM engine_cursors") == 1

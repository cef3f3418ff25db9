"""A row whose worker died mid-attempt is taken over after its lease; a row whose
workers died on every attempt allowed ends as a dead letter instead of looping."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fakes.webhook import WebhookReceiver
from tests.processes import engine_processes, query_all, wait_until, write_config

ABANDON = """
INSERT INTO action_results (trigger_id, event_id, action_index, action_type, status,
                            attempts, max_attempts, lease_expires_at, spec, context)
VALUES ('hook', $1, 0, 'rest', 'running', $2, 1, now() - interval '1 minute',
        $3::jsonb, '{"event": {}, "rule": {"id": "hook"}, "group": {}, "state": {}}'::jsonb)
"""


def test_crashed_attempts_are_retried_then_dead_lettered(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    rules = tmp_path / "none.yaml"
    rules.write_text("rules: []\n", encoding="utf-8")
    config = write_config(
        tmp_path, database_url=database_url, redis_url=redis_url, rules=str(rules)
    )
    spec = json.dumps({"url": f"{webhook_receiver.url}/taken-over"})
    query_all(database_url, ABANDON + " RETURNING id", "crashed-once", 1, spec)
    query_all(database_url, ABANDON + " RETURNING id", "crashed-always", 3, spec)

    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        webhook_receiver.wait_for(1, timeout=20)

        def finished() -> dict[str, tuple[str, int, str | None]]:
            rows = query_all(
                database_url,
                "SELECT event_id, status, attempts, error_message FROM action_results"
                " WHERE status IN ('success', 'failed')",
            )
            return {r[0]: (r[1], r[2], r[3]) for r in rows} if len(rows) == 2 else {}

        outcome = wait_until(finished, what="both rows to end")
    assert outcome["crashed-once"][:2] == ("success", 2)
    status, attempts, error = outcome["crashed-always"]
    assert (status, attempts) == ("failed", 3)
    assert error is not None and "stopped during each of its 3 attempts" in error
    assert [r.path for r in webhook_receiver.requests] == ["/taken-over"]

"""Hostile templates through a real `engine worker`: a render that spins inside one C call
or allocates gigabytes ends within the render budget with a clear permanent error, while
the other actions of the same worker are still delivered."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fakes.webhook import WebhookReceiver
from tests.processes import engine_processes, insert_events, query_all, wait_until, write_config

#: Work inside builtins and filters, which no trace hook on template frames sees.
SPINS_IN_C = "{{ ([range(100000)] * 60000) | map('sum') | sum }}"
ALLOCATES_GIGABYTES = "{{ ([[1] * 60000] * 60000) | map('list') | list | length }}"

RULES = """
rules:
  - id: hostile
    on: {{registry: identity}}
    actions:
      - rest: {{url: "{url}/hostile", body: {{a: "{hostile}"}}}}
      - rest: {{url: "{url}/same-event", body: {{agent: "{{{{ event.agent_id }}}}"}}}}
  - id: benign
    on: {{registry: reputation}}
    actions:
      - rest: {{url: "{url}/later", body: {{score: "{{{{ event.score }}}}"}}}}
"""


@pytest.mark.parametrize("hostile", [SPINS_IN_C, ALLOCATES_GIGABYTES], ids=["cpu", "memory"])
def test_a_hostile_render_ends_within_its_budget_and_the_worker_goes_on(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    webhook_receiver: WebhookReceiver,
    hostile: str,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(url=webhook_receiver.url, hostile=hostile), encoding="utf-8")
    config = write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=str(rules),
        extra={"worker": {"render_timeout_s": 1.0, "render_memory_mb": 128}},
    )
    with engine_processes(config, tmp_path, ["run"], ["worker"]):
        insert_events(database_url, [{"registry": "identity", "event_type": "URIUpdated"}])
        started = time.monotonic()
        [same_event] = webhook_receiver.wait_for(1, timeout=30)
        failed = wait_until(
            lambda: query_all(
                database_url,
                "SELECT attempts, error_message FROM action_results"
                " WHERE action_index = 0 AND status = 'failed'",
            ),
            timeout=30,
            what="the hostile action to fail",
        )
        took = time.monotonic() - started
        # The render process was killed and a new one renders the next firing.
        insert_events(
            database_url, [{"registry": "reputation", "event_type": "NewFeedback", "score": 9}]
        )
        requests = webhook_receiver.wait_for(2, timeout=30)
    assert failed == [
        (
            1,
            "rule 'hostile': template of actions[0].rest.body exceeded its render budget"
            " (1.0 s / 128 MiB)",
        )
    ]
    assert took < 10, f"the hostile render held its action {took:.1f}s"
    assert same_event.path == "/same-event" and same_event.json == {"agent": None}
    assert [r.path for r in requests] == ["/same-event", "/later"]
    assert requests[1].json == {"score": 9}
    statuses = query_all(
        database_url, "SELECT trigger_id, action_index, status FROM action_results ORDER BY id"
    )
    assert sorted(statuses) == [
        ("benign", 0, "success"),
        ("hostile", 0, "failed"),
        ("hostile", 1, "success"),
    ]

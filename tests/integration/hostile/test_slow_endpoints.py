"""An endpoint that never answers holds one worker slot for its kind's maximum, and no
more: the actions batched with it and the jobs enqueued after it are delivered meanwhile."""

from __future__ import annotations

import socket
import threading
import time
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

RULES = """
rules:
  - id: silent-hook
    on: {{registry: reputation, event_type: NewFeedback}}
    where: {{score: {{lt: 10}}}}
    actions:
      - rest: {{url: "{silent}/never"}}
        retry: {{attempts: 1}}
  - id: answering-hook
    on: {{registry: reputation, event_type: NewFeedback}}
    where: {{score: {{ge: 10}}}}
    actions:
      - rest: {{url: "{url}/fast", body: {{agent: "{{{{ event.agent_id }}}}"}}}}
        retry: {{attempts: 1}}
"""
MAX_REST_TIMEOUT_S = 5


class SilentServer:
    """Accepts connections and reads requests, and never answers."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.accepted = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            self._held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self._socket.close()
        for conn in self._held:
            conn.close()


def _feedback(agent_id: int, *, score: int) -> dict[str, object]:
    return {
        "registry": "reputation",
        "event_type": "NewFeedback",
        "agent_id": agent_id,
        "score": score,
    }


def _row(database_url: str, trigger_id: str) -> tuple[str, str | None, int | None]:
    rows = query_all(
        database_url,
        "SELECT status, error_message, duration_ms FROM action_results WHERE trigger_id = $1",
        trigger_id,
    )
    return rows[0] if rows else ("none", None, None)


def test_a_silent_endpoint_holds_neither_its_batch_nor_the_next_jobs(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    silent = SilentServer()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(silent=silent.url, url=webhook_receiver.url), encoding="utf-8")
    config = write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=str(rules),
        extra={"worker": {"max_rest_timeout_s": MAX_REST_TIMEOUT_S, "concurrency": 4}},
    )
    try:
        with engine_processes(config, tmp_path, ["run"], ["worker"]):
            wait_until(
                lambda: query_value(database_url, "SELECT count(*) FROM triggers") == 2,
                what="the rules loaded",
            )
            # The silent action first, two answering ones in the same batch behind it.
            insert_events(
                database_url,
                [_feedback(1, score=1), _feedback(2, score=50), _feedback(3, score=60)],
            )
            webhook_receiver.wait_for(2, timeout=30)
            assert silent.accepted.wait(10), "the silent endpoint was never called"
            # A job enqueued while the silent one still waits is not stuck behind it.
            enqueued = time.monotonic()
            insert_events(
                database_url,
                [_feedback(4, score=70)],
            )
            webhook_receiver.wait_for(3, timeout=30)
            delivered_after_s = time.monotonic() - enqueued
            assert _row(database_url, "silent-hook")[0] == "running"
            assert delivered_after_s < 3.5, delivered_after_s
            # The silent one ends at the kind's maximum, not at the executor's default
            # timeout (10 s) nor at job_timeout_s (20 s in tests).
            _, error, duration_ms = wait_until(
                lambda: (r := _row(database_url, "silent-hook"))[0] == "failed" and r,
                timeout=15,
                what="the silent action to time out",
            )
            assert error is not None and error.startswith(
                f"timed out after {MAX_REST_TIMEOUT_S}s, the longest a rest action may take "
                "(worker.max_rest_timeout_s)"
            ), error
            assert duration_ms is not None
            assert MAX_REST_TIMEOUT_S * 1000 <= duration_ms < (MAX_REST_TIMEOUT_S + 2) * 1000
    finally:
        silent.close()
    agents = sorted(r.json["agent"] for r in webhook_receiver.requests)
    assert agents == [2, 3, 4]

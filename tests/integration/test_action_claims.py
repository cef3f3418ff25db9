"""The claim/lease state machine (actions.claims) against a real PostgreSQL: one claim
wins, a finish is fenced by its attempt, NUL never reaches the database, and waiting for
an unavailable database never stalls the worker's event loop."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

import sql
from actions.claims import ActionClaims, ActionStatus, ReconnectBackoff
from devkit.localstack.common import free_port
from tests.processes import query_all

BACKOFF = ReconnectBackoff(min_s=0.1, max_s=0.4, deadline_s=5.0)
LEASE_S, CRASH_ATTEMPTS = 60.0, 2
QUEUED = """
INSERT INTO action_results (trigger_id, event_id, action_index, action_type, status,
                            max_attempts, spec, context)
VALUES ('hook', 'e1', 0, 'rest', 'queued', 3, '{"url": "http://x"}'::jsonb,
        '{"event": {}}'::jsonb)
RETURNING id
"""


def queued_row(database_url: str) -> int:
    return int(query_all(database_url, QUEUED)[0][0])


async def test_one_of_concurrent_claims_wins(database_url: str) -> None:
    action_id = queued_row(database_url)
    workers = [ActionClaims(database_url, BACKOFF) for _ in range(4)]
    try:
        claimed = await asyncio.gather(
            *(w.claim(action_id, LEASE_S, CRASH_ATTEMPTS) for w in workers)
        )
    finally:
        for w in workers:
            await w.aclose()
    (winner,) = [c for c in claimed if c is not None]
    assert (winner.id, winner.attempt, winner.spec) == (action_id, 1, {"url": "http://x"})


async def test_a_finish_is_fenced_by_its_attempt_and_stores_no_nul(database_url: str) -> None:
    action_id = queued_row(database_url)
    claims = ActionClaims(database_url, BACKOFF)
    try:
        first = await claims.claim(action_id, LEASE_S, CRASH_ATTEMPTS)
        assert first is not None
        query_all(
            database_url,
            "UPDATE action_results SET lease_expires_at = now() - interval '1 minute' RETURNING id",
        )
        second = await claims.claim(action_id, LEASE_S, CRASH_ATTEMPTS)
        assert second is not None and second.attempt == 2
        late = await claims.finish(first, status=ActionStatus.SUCCESS, duration_ms=1)
        assert late is False
        recorded = await claims.finish(
            second,
            status=ActionStatus.FAILED,
            duration_ms=2,
            error="bad\x00body",
            response_data={"k\x00": ["v\x00"]},
        )
        assert recorded is True
    finally:
        await claims.aclose()
    ((status, attempts, error, response),) = query_all(
        database_url,
        "SELECT status, attempts, error_message, response_data::text FROM action_results",
    )
    assert (status, attempts, error) == ("failed", 2, "bad\ufffdbody")
    assert json.loads(response) == {"k\ufffd": ["v\ufffd"]}


async def test_an_unavailable_database_does_not_stall_the_event_loop() -> None:
    """While one action's claim waits for the database (reconnecting until its deadline),
    everything else on the worker's loop keeps running."""
    claims = ActionClaims(
        f"postgresql://engine@127.0.0.1:{free_port()}/engine",
        ReconnectBackoff(min_s=0.2, max_s=0.4, deadline_s=1.5),
    )
    gaps: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            gaps.append(time.monotonic() - before)

    ticking = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        with pytest.raises(sql.DatabaseError, match="database unavailable"):
            await claims.claim(1, LEASE_S, CRASH_ATTEMPTS)
    finally:
        ticking.cancel()
        await claims.aclose()
    assert time.monotonic() - started >= 1.0  # it did keep trying, with backoff
    assert len(gaps) > 50
    assert max(gaps) < 0.15, f"the loop stalled for {max(gaps):.3f}s"

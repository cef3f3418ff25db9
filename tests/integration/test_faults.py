"""Faults on purpose (issue 5): kills, restarts, outages, a blocking transaction, a standby,
and hostile input — with the real ``engine`` processes, PostgreSQL and Redis.

Every scenario writes a known stream of events while something breaks, then
``faults_support.verify`` checks: each event evaluated exactly once (cursor count and
per-agent ``count`` state equal the reference), one ``action_results`` row per expected
firing, every row ``success`` (or ``failed`` where the endpoint was made to fail), every
delivery seen at least once and duplicates only under the same ``webhook-id``.

``make test`` runs a short version of each scenario; ``make test-faults`` (marker
``faults``) the longer, repeated ones.  Run with ``-s`` to see the figures each checked.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from engine.localstack import PostgresServer, RedisServer, free_port
from tests.faults_support import (
    Inserter,
    Scenario,
    cursor_events,
    plan_events,
    verify,
)
from tests.fakes.webhook import WebhookReceiver
from tests.processes import query_all, query_value, run_engine, wait_until

# -- 1. kill -9 of `engine run` ------------------------------------------------------------


def _kill_engine_repeatedly(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    receiver: WebhookReceiver,
    *,
    n_events: int,
    kills: int,
) -> None:
    sc = Scenario(tmp_path, database_url, redis_url, receiver)
    events = plan_events(n_events)
    sc.start("worker")
    engine = sc.start("run")
    sc.wait_rules_loaded()
    inserter = Inserter(database_url, events, per_tx=2, pause_s=0.03)
    inserter.start()
    rng = random.Random()
    progress = []
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 1.2))
            engine.kill()
            progress.append(cursor_events(database_url))
            time.sleep(rng.uniform(0.0, 0.3))
            engine = sc.start("run")
        inserted = inserter.join_checked()
        outcome = verify("1 kill -9 engine run", database_url, receiver, inserted, timeout=60)
    finally:
        sc.stop_all()
    outcome.extra = {"kills": kills, "cursor_at_kills": progress}
    outcome.report()


def test_engine_killed_repeatedly_while_events_arrive(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    _kill_engine_repeatedly(
        tmp_path, database_url, redis_url, webhook_receiver, n_events=120, kills=4
    )


@pytest.mark.faults
def test_engine_killed_many_times_long(
    tmp_path: Path, database_url: str, redis_url: str, webhook_receiver: WebhookReceiver
) -> None:
    _kill_engine_repeatedly(
        tmp_path, database_url, redis_url, webhook_receiver, n_events=600, kills=15
    )

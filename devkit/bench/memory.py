"""Figure 5: RSS of ``engine run`` with many rules loaded and many state groups written."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devkit.bench.data import EventGenerator, chunked, live_rule_yaml, rule_set_yaml
from devkit.bench.evaluation import insert_backlog
from devkit.bench.inserter import LIVE
from devkit.bench.processes import (
    engine_command,
    rss_kib,
    scalar,
    spawned,
    wait_engine_ready,
    wait_for,
    write_config,
)
from devkit.bench.stack import reset_database


def engine_rss_mib(
    dsn: str, redis_url: str, workdir: Path, *, rules: int, groups: int, url: str
) -> tuple[float, float, int]:
    """(RSS, peak RSS) in MiB after catching up on ``groups`` events with distinct agents;
    and the number of state groups written."""
    reset_database(dsn)
    text = [live_rule_yaml(url, stateful_groups=True), *chunked(rule_set_yaml, rules - 1, url)]
    config = write_config(
        workdir, database_url=dsn, redis_url=redis_url, rules_text=text, name="memory"
    )
    rows = [EventGenerator(prefix=f"M{i}-", seed=i).row(**LIVE, agent_id=i) for i in range(groups)]
    with spawned([engine_command(config, "run")], workdir) as (proc,):
        wait_engine_ready(dsn, rules, proc)
        asyncio.run(insert_backlog(dsn, rows))
        wait_for(
            lambda: scalar(dsn, "SELECT events FROM engine_cursors") >= groups,
            "memory backlog evaluated",
            timeout_s=600,
        )
        written = int(scalar(dsn, "SELECT count(*) FROM trigger_state"))
        rss, peak = rss_kib(proc.pid)
    return rss / 1024, peak / 1024, written

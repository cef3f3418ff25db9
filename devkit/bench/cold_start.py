"""Cold start of a large rule set: how long until N rules are compiled, indexed, evaluating.

A profiling script, not a test::

    python -m devkit.bench.cold_start 100000 [files|tenants|daemon ...] [--profile]

- ``files``: N bench rules in YAML files, loaded as the daemon loads them (RuleBook.load),
  then indexed;
- ``tenants``: N bench rules stored as organizations' documents in ``triggers`` (a private
  PostgreSQL), loaded as a new leader loads them (TenantRules.load_all), then indexed;
- ``daemon``: a real Daemon in this process with those N stored tenant rules: from its
  start to the leader lock, to the rules indexed, to the first batch evaluated.

With no mode, all three.  Each step prints its wall-clock and CPU seconds and the cost
per rule; ``--profile`` prints the top of cProfile's report of the files and tenants steps.
"""

from __future__ import annotations

import asyncio
import cProfile
import hashlib
import logging
import pstats
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from devkit.bench.data import RULES_PER_FILE, chunked, rule_set_yaml
from devkit.bench.stack import bench_stack
from engine.config import EngineTunables, Settings
from engine.rulebook import RuleBook
from engine.tenant_rules import TenantRules
from rules import RuleIndex
from rules.compile import LOGIC_KEYS
from rules.model import canonical_json, document_json
from rules.yaml_source import parse_yaml

URL = "http://127.0.0.1:9/h"
MODES = ("files", "tenants", "daemon")


@dataclass
class Clock:
    """Wall-clock and CPU seconds since the clock was made (or last read)."""

    wall: float = 0.0
    cpu: float = 0.0

    def __post_init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        took = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return took


def report(step: str, took: tuple[float, float], count: int) -> None:
    wall, cpu = took
    per_rule_ms = 1000 * cpu / count if count else 0.0
    print(f"  {step:<32} {wall:6.1f}s wall {cpu:6.1f}s cpu  {per_rule_ms:.3f} ms/rule (cpu)")


@contextmanager
def profiled(enabled: bool) -> Iterator[None]:
    profile = cProfile.Profile() if enabled else None
    if profile is not None:
        profile.enable()
    try:
        yield
    finally:
        if profile is not None:
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)


def bench_documents(count: int) -> list[dict[str, Any]]:
    """The bench's rule set as the documents the API stores (parsed from its YAML)."""
    documents: list[dict[str, Any]] = []
    for text in chunked(rule_set_yaml, count, URL):
        documents.extend(parse_yaml(text).data["rules"])
    return documents


def files_step(count: int, profile: bool) -> None:
    print(f"file rules: {count}")
    with tempfile.TemporaryDirectory() as directory:
        for start in range(0, count, RULES_PER_FILE):
            text = rule_set_yaml(min(RULES_PER_FILE, count - start), URL, start)
            Path(directory, f"rules-{start:07d}.yaml").write_text(text, encoding="utf-8")
        book = RuleBook(paths=(directory,), environ={})
        with profiled(profile):
            clock = Clock()
            loaded = book.load()
            report("load+compile (RuleBook.load)", clock.lap(), count)
            index = RuleIndex(loaded.rules)
            report("index (RuleIndex)", clock.lap(), count)
    print(f"  {len(index)} rules, {len(loaded.errors)} errors")


async def store_tenant_rules(dsn: str, count: int) -> None:
    """``count`` bench rules of one organization, written as the API writes them."""
    rows = []
    for document in bench_documents(count):
        logic = {key: document.get(key) for key in LOGIC_KEYS}
        rows.append(
            (
                f"1/{document['id']}",
                1,
                document["id"],
                document_json(document),
                _sha256(canonical_json(document)),
                _sha256(canonical_json(logic)),
            )
        )
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO organizations (id, name) OVERRIDING SYSTEM VALUE "
            "VALUES (1, 'bench') ON CONFLICT DO NOTHING"
        )
        await conn.copy_records_to_table(
            "triggers",
            records=rows,
            columns=("id", "org_id", "rule_id", "document", "content_hash", "logic_hash"),
        )
    finally:
        await conn.close()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def tenants_step(dsn: str, count: int, profile: bool) -> None:
    print(f"organizations' rules: {count}")
    conn = await asyncpg.connect(dsn)
    try:
        with profiled(profile):
            clock = Clock()
            rules = await TenantRules().load_all(conn)
            report("read+compile (load_all)", clock.lap(), count)
            index = RuleIndex(rules)
            report("index (RuleIndex)", clock.lap(), count)
    finally:
        await conn.close()
    print(f"  {len(index)} rules")


async def daemon_step(dsn: str, redis_url: str, workdir: Path, count: int) -> None:
    from engine.daemon import Daemon
    from tests.processes import insert_events

    print(f"daemon cold start with {count} organizations' rules")
    rules = workdir / "rules.yaml"
    rules.write_text("rules: []\n", encoding="utf-8")
    # One event a bench rule (r0: agent_id, score below its bound) fires on.
    first = bench_documents(1)[0]
    agent = first["where"]["agent_id"]
    insert_events(
        dsn,
        [{"registry": "reputation", "event_type": "NewFeedback", "agent_id": agent, "score": 1}],
    )
    settings = Settings(
        database_url=dsn,
        redis_url=redis_url,
        rules=(str(rules),),
        http_listen=None,
        engine=EngineTunables(poll_interval_s=0.2),
    )
    daemon = Daemon(settings)
    clock = Clock()
    running = asyncio.create_task(daemon.run())
    marks: dict[str, tuple[float, float]] = {}
    while "evaluated" not in marks:
        await asyncio.sleep(0.005)
        if "leader" not in marks and daemon.leader.held:
            marks["leader"] = clock.lap()
        if "indexed" not in marks and daemon.rulebook.index is not None:
            marks["indexed"] = clock.lap()
        if daemon.stats.batches >= 1:
            marks["evaluated"] = clock.lap()
        if running.done():
            running.result()
            raise SystemExit("the daemon stopped")
    daemon.stopping.set()
    await asyncio.wait_for(running, 60)
    report("start -> leader", marks["leader"], count)
    report("leader -> rules indexed", marks["indexed"], count)
    report("indexed -> first batch evaluated", marks["evaluated"], count)
    total = tuple(sum(m[i] for m in marks.values()) for i in (0, 1))
    report("cold start (start -> first batch)", (total[0], total[1]), count)
    print(f"  events evaluated {daemon.stats.events}, fired {daemon.stats.fired}")


async def database_steps(count: int, modes: list[str], profile: bool) -> None:
    with bench_stack(None, None) as stack:
        clock = Clock()
        await store_tenant_rules(stack.database_url, count)
        print(f"  ({count} rules stored in {clock.lap()[0]:.1f}s)")
        if "tenants" in modes:
            await tenants_step(stack.database_url, count, profile)
        if "daemon" in modes:
            await daemon_step(stack.database_url, stack.redis_url, stack.workdir, count)


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    count = next((int(a) for a in argv if a.isdigit()), 100_000)
    modes = [a for a in argv if a in MODES] or list(MODES)
    profile = "--profile" in argv
    if "files" in modes:
        files_step(count, profile)
    if "tenants" in modes or "daemon" in modes:
        asyncio.run(database_steps(count, modes, profile))


if __name__ == "__main__":
    main(sys.argv[1:])

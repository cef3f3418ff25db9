"""What the tenants figures stand on: organizations and keys made as the operator's CLI
makes them, organizations' rules stored in bulk, an ``engine api`` process, single
events written and their queued action rows watched.

Rules are stored by SQL (COPY into ``triggers``, whose trigger records each change as
the API's writes do), not through the API: 100,000 PUTs would take longer than the
whole section.  Their stored form is the API's (the document with its ``id`` first,
the compiler's content and logic hashes), checked against the compiler on a sample.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import psycopg

from devkit.bench.data import COLUMNS, EventGenerator
from devkit.bench.inserter import INSERT_EVENT, LIVE
from devkit.bench.processes import wait_for
from engine.tenants.keys import Role, new_key
from rules.compile import LOGIC_KEYS
from rules.loader import load_tenant_rule
from rules.model import canonical_json, document_json

_TRIGGER_COLUMNS = (
    "id",
    "org_id",
    "rule_id",
    "owner",
    "description",
    "enabled",
    "document",
    "source_file",
    "content_hash",
    "logic_hash",
)
#: Stored rules whose hashes are compared with the compiler's before a bulk write.
_HASH_SAMPLE = 20


@dataclass(frozen=True)
class Org:
    id: int
    name: str
    key: str  # an editor key: writes rules


def create_org(
    dsn: str, name: str, *, max_rules: int | None = None, max_firings_per_minute: int | None = None
) -> Org:
    """An organization allowed to post to the bench's local receiver, and an editor key
    (only its hash stored, as ``engine keys create`` does)."""
    key = new_key()
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO organizations (name, max_rules, max_firings_per_minute, allow_private)"
            " VALUES (%s, %s, %s, true) RETURNING id",
            (name, max_rules, max_firings_per_minute),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO api_keys (org_id, role, name, lookup, hash) VALUES (%s, %s, %s, %s, %s)",
            (row[0], Role.EDITOR.value, "bench", key.lookup, key.digest),
        )
    return Org(id=int(row[0]), name=name, key=key.text)


def stored_rule_row(org_id: int, doc: dict[str, Any]) -> tuple[Any, ...]:
    """A ``triggers`` row as the API writes it for ``doc`` (which has its ``id`` first)."""
    logic = {key: doc.get(key) for key in LOGIC_KEYS}
    return (
        f"{org_id}/{doc['id']}",
        org_id,
        doc["id"],
        None,
        None,
        True,
        document_json(doc),
        None,
        hashlib.sha256(canonical_json(doc).encode()).hexdigest(),
        hashlib.sha256(canonical_json(logic).encode()).hexdigest(),
    )


def _check_hashes(org_id: int, docs: Sequence[dict[str, Any]]) -> None:
    """The bulk rows must be what the API would store, or the daemon and the API would
    see every bench rule as changed: compare a sample with the compiler's own."""
    shared: dict[Any, Any] = {}
    for doc in docs[:_HASH_SAMPLE]:
        row = stored_rule_row(org_id, doc)
        rule, errors = load_tenant_rule(doc, engine_id=row[0], org_id=org_id, shared=shared)
        if rule is None:
            raise RuntimeError(f"bench rule {doc['id']} does not compile: {errors}")
        if (rule.document_json, rule.content_hash, rule.logic_hash) != (row[6], row[8], row[9]):
            raise RuntimeError(
                f"bench rule {doc['id']}: the stored form differs from the compiler's; "
                "devkit/bench/tenant_setup.py stored_rule_row must follow rules/compile.py"
            )


async def store_rules(dsn: str, org_id: int, docs: Sequence[dict[str, Any]]) -> float:
    """Write ``docs`` as ``org_id``'s rules in one transaction; the seconds it took."""
    _check_hashes(org_id, docs)
    rows = [stored_rule_row(org_id, doc) for doc in docs]
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "triggers", records=rows, columns=list(_TRIGGER_COLUMNS)
            )
        await conn.execute("ANALYZE triggers, trigger_changes")
    finally:
        await conn.close()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_client(base_url: str, org: Org) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, headers={"authorization": f"Bearer {org.key}"}, timeout=30.0
    )


def wait_api_ready(base_url: str) -> None:
    def answers() -> bool:
        try:
            return httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, "engine api to answer", timeout_s=60)


async def put_rule(
    client: httpx.AsyncClient, doc: dict[str, Any], *, changed: bool | None = None
) -> None:
    """PUT ``doc``; ``changed``: what the answer must say of it (None: either)."""
    answer = await client.put(f"/v1/rules/{doc['id']}", json=doc)
    if answer.status_code not in (200, 201):
        raise RuntimeError(f"PUT /v1/rules/{doc['id']}: {answer.status_code} {answer.text}")
    if changed is not None and answer.json()["changed"] is not changed:
        raise RuntimeError(f"PUT /v1/rules/{doc['id']}: expected changed={changed}: {answer.text}")


class EventWriter:
    """Single events committed one at a time; ``write`` returns the wall clock right
    after the COMMIT returned."""

    def __init__(self, conn: asyncpg.Connection, prefix: str) -> None:
        self._conn = conn
        self._gen = EventGenerator(prefix=prefix)
        self._statement: asyncpg.prepared_stmt.PreparedStatement | None = None

    @classmethod
    async def open(cls, dsn: str, prefix: str) -> EventWriter:
        return cls(await asyncpg.connect(dsn), prefix)

    async def write(self, tag: str) -> tuple[str, float]:
        """(event id, commit time) of one event with ``tag1: tag``."""
        if self._statement is None:
            self._statement = await self._conn.prepare(INSERT_EVENT)
        row = self._gen.row(**{**LIVE, "tag1": tag})
        await self._statement.fetch(*row)
        return str(row[0]), time.time()

    async def copy(self, tag: str, count: int) -> tuple[set[str], float]:
        """(event ids, commit time) of ``count`` events with ``tag1: tag`` in one COPY."""
        rows = self._gen.rows(count, **{**LIVE, "tag1": tag})
        await self._conn.copy_records_to_table("events", records=rows, columns=list(COLUMNS))
        return {str(row[0]) for row in rows}, time.time()

    async def close(self) -> None:
        await self._conn.close()


@dataclass
class QueuedWatch:
    """Hears the bench's ``bench_queued`` notification (devkit/bench/stack.py): the commit
    of the evaluator's queued action rows, with their id range."""

    dsn: str
    _listen: asyncpg.Connection | None = None
    _query: asyncpg.Connection | None = None
    _heard: asyncio.Queue[tuple[float, int, int]] = field(default_factory=asyncio.Queue)

    def _on(self, _c: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload:
            low, _, high = payload.partition(",")
            self._heard.put_nowait((time.time(), int(low), int(high)))

    async def start(self) -> None:
        self._listen = await asyncpg.connect(self.dsn)
        self._query = await asyncpg.connect(self.dsn)
        await self._listen.add_listener("bench_queued", self._on)

    async def stop(self) -> None:
        for conn in (self._listen, self._query):
            if conn is not None:
                await conn.close()

    async def queued_at(self, trigger_id: str, event_id: str, timeout_s: float) -> float:
        """When the action row of (``trigger_id``, ``event_id``) was committed queued."""
        assert self._query is not None
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"bench: no action row of {trigger_id} for event {event_id}")
            heard_at, low, high = await asyncio.wait_for(self._heard.get(), remaining)
            row_id = await self._query.fetchval(
                "SELECT id FROM action_results WHERE trigger_id = $1 AND event_id = $2",
                trigger_id,
                event_id,
            )
            if row_id is not None and low <= row_id <= high:
                return heard_at

    def forget(self) -> None:
        """Drop what was heard so far (earlier commits of no interest)."""
        while not self._heard.empty():
            self._heard.get_nowait()

"""Organizations' rules (``triggers`` rows with an org_id), followed through ``trigger_changes``.

The boundary, what the API promises: a rule written (or deleted) through the API is
evaluated (or not) for every event committed after the API answered.  How the daemon
keeps it, inside each batch's transaction:

1. ``catch_up`` reads ``trigger_changes WHERE seq > last`` and applies them, before
   the batch reads its events.  Changes are numbered in commit order
   (sql/005_quota.sql), so a change seen means no lower number is still to come.
2. The batch reads its events (the gap-safe cursor: committed transactions only).
3. ``changed_since`` asks again.  READ COMMITTED gives each statement a new snapshot:
   an event read in step 2 committed before that read, a change committed before the
   event is therefore visible to step 3, and a batch that finds one rolls back and
   starts over (from step 1).  Without step 3, a change committing between steps 1
   and 2 would miss the events committed right after it.

A stored rule that no longer compiles (the compiler got stricter in an upgrade) is
logged and left out; it never stops the daemon.  Compiling runs in a thread, and
changes are compiled ahead of the batches that need them (``prefetch``), so a batch
mostly finds them ready.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from rules import Rule, RuleIndex
from rules.gc_pause import gc_paused
from rules.loader import load_tenant_rule
from sql import query

log = logging.getLogger(__name__)

#: Changes read per statement; a burst of more is read in several.
CHANGES_PAGE = 5000
#: Compiled-ahead rules kept at most (by id and content hash); beyond it the oldest go.
MAX_PREFETCHED = 20_000


class RulesChangedDuringRead(Exception):
    """A rule change committed while a batch read its events: the batch starts over."""


@dataclass(frozen=True)
class StoredRule:
    """One ``triggers`` row of an organization, as read."""

    id: str
    org_id: int
    document: str
    content_hash: str


@dataclass
class RuleChanges:
    """What changed after ``last_seq``: rules to put (compiled) and ids to remove."""

    upserts: list[StoredRule] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    last_seq: int = 0


def compile_stored(
    rows: Sequence[StoredRule], bot_names: Collection[str] | None = None
) -> dict[str, Rule | None]:
    """Compile stored rules (CPU only: run it in a thread); None for one that fails."""
    with gc_paused():
        return _compile_rows(rows, bot_names)


def _compile_rows(
    rows: Sequence[StoredRule], bot_names: Collection[str] | None
) -> dict[str, Rule | None]:
    shared: dict[Any, Any] = {}
    compiled: dict[str, Rule | None] = {}
    for row in rows:
        try:
            document = json.loads(row.document)
            rule, errors = load_tenant_rule(
                document, engine_id=row.id, org_id=row.org_id, bot_names=bot_names, shared=shared
            )
            problems = [str(error) for error in errors]
        except Exception as exc:  # a stored document must never stop the daemon
            rule, problems = None, [repr(exc)]
        if rule is None:
            log.error(
                "stored rule does not compile: skipped",
                extra={"trigger_id": row.id, "error": "; ".join(problems)[:1000]},
            )
        compiled[row.id] = rule
    return compiled


class TenantRules:
    """The organizations' rules the daemon follows, and how far it has followed them."""

    def __init__(self, bot_names: Collection[str] | None = None) -> None:
        self.bot_names = bot_names
        self.last_seq: int | None = None  # None: not loaded (not leading yet)
        self.ids: set[str] = set()  # tenant rules in the index
        self._prefetched: dict[tuple[str, str], Rule | None] = {}
        self._prefetch_seq = 0

    async def load_all(self, conn: asyncpg.Connection) -> list[Rule]:
        """Every organization's rule, compiled, as of one snapshot; sets ``last_seq``."""
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            last = await conn.fetchval(query("tenant_changes_last"))
            rows = [_stored(r) for r in await conn.fetch(query("tenant_rules_all"))]
        compiled = await asyncio.to_thread(compile_stored, rows, self.bot_names)
        rules = [rule for rule in compiled.values() if rule is not None]
        self.ids = {rule.id for rule in rules}
        self.last_seq = self._prefetch_seq = int(last)
        self._prefetched.clear()
        log.info("organizations' rules loaded", extra={"rules": len(rules)})
        return rules

    async def read_changes(self, conn: asyncpg.Connection, since: int) -> RuleChanges:
        """The changes of organizations' rules committed after ``since``, latest first
        per rule (a rule changed twice is put once)."""
        changes = RuleChanges(last_seq=since)
        latest: dict[str, StoredRule | None] = {}
        while True:
            rows = await conn.fetch(query("tenant_changes_since"), changes.last_seq, CHANGES_PAGE)
            for row in rows:
                if row["org_id"] is not None:
                    stored = None if row["document"] is None else _stored(row, "trigger_id")
                    latest[row["trigger_id"]] = stored
            if rows:
                changes.last_seq = rows[-1]["seq"]
            if len(rows) < CHANGES_PAGE:
                break
        for trigger_id, stored in latest.items():
            if stored is None:
                changes.deleted.append(trigger_id)
            else:
                changes.upserts.append(stored)
        return changes

    async def catch_up(self, conn: asyncpg.Connection, index: RuleIndex) -> int:
        """Apply to ``index`` every change committed after ``last_seq``; how many rules
        changed.  Call it inside the batch's transaction, before the events are read."""
        if self.last_seq is None:
            return 0
        changes = await self.read_changes(conn, self.last_seq)
        if not changes.upserts and not changes.deleted:
            self.last_seq = changes.last_seq
            return 0
        compiled = await self._compile(changes.upserts)
        for trigger_id in changes.deleted:
            index.remove(trigger_id)
            self.ids.discard(trigger_id)
        for stored in changes.upserts:
            rule = compiled[stored.id]
            if rule is None:
                index.remove(stored.id)
                self.ids.discard(stored.id)
            else:
                index.put(rule)
                self.ids.add(stored.id)
        self.last_seq = changes.last_seq
        count = len(changes.upserts) + len(changes.deleted)
        log.info("organizations' rule changes applied", extra={"rules": count})
        return count

    async def changed_since(self, conn: asyncpg.Connection) -> bool:
        """Whether a change committed after the last one applied (see the module's step 3)."""
        if self.last_seq is None:
            return False
        return bool(await conn.fetchval(query("tenant_changes_after"), self.last_seq))

    async def prefetch(self, conn: asyncpg.Connection) -> int:
        """Compile, ahead of the batch that will apply them, the changes committed since
        the last prefetch; how many were compiled.  Touches nothing a batch reads but
        the cache of compiled rules."""
        if self.last_seq is None:
            return 0
        since = max(self._prefetch_seq, self.last_seq)
        changes = await self.read_changes(conn, since)
        self._prefetch_seq = changes.last_seq
        todo = [s for s in changes.upserts if (s.id, s.content_hash) not in self._prefetched]
        if not todo:
            return 0
        compiled = await asyncio.to_thread(compile_stored, todo, self.bot_names)
        if len(self._prefetched) + len(todo) > MAX_PREFETCHED:
            self._prefetched.clear()
        for stored in todo:
            self._prefetched[(stored.id, stored.content_hash)] = compiled[stored.id]
        return len(todo)

    async def _compile(self, rows: list[StoredRule]) -> dict[str, Rule | None]:
        """The compiled rules of ``rows``: ready ones from the prefetch, the rest now (in a
        thread: the event loop and /healthz go on)."""
        compiled: dict[str, Rule | None] = {}
        missing: list[StoredRule] = []
        for stored in rows:
            key = (stored.id, stored.content_hash)
            if key in self._prefetched:
                compiled[stored.id] = self._prefetched.pop(key)
            else:
                missing.append(stored)
        if missing:
            compiled.update(await asyncio.to_thread(compile_stored, missing, self.bot_names))
        return compiled


def _stored(row: asyncpg.Record, id_column: str = "id") -> StoredRule:
    return StoredRule(
        id=row[id_column],
        org_id=row["org_id"],
        document=row["document"],
        content_hash=row["content_hash"],
    )

"""Organizations' rules (``triggers`` rows with an org_id), followed through ``trigger_changes``.

The boundary, what the API promises: a rule written (or deleted) through the API is
evaluated (or not) for every event committed after the API answered.  Rule changes are
compiled off the evaluation loop and a batch never waits for them, nor starts over:

1. ``refresh`` (a background task, compiling in a thread) reads a *horizon* first: the
   xmin of a snapshot, below which every transaction had finished when it was taken.
   Then, in a later statement, the changes numbered after the last one it read: every
   change committed before the horizon's snapshot is among them.  It compiles them and
   publishes them with their last number and the horizon.
2. A batch (``apply``, inside its transaction, before it reads events) asks in one
   statement for a fresh horizon and whether a change is numbered after the published
   ones.  None: the batch may read every event below the fresh horizon.  Some: it reads
   only below the published horizon, and the events after it wait for the next compile
   (``wanted`` wakes it).  Either way it first applies every published change.
3. Why that is enough: an event below a horizon committed before that horizon's snapshot;
   a change committed before the event did too, so it is published and applied.  Changes
   are numbered in commit order (sql/005_quota.sql): a change seen means no lower number
   is still to come.

A change committed while a batch runs is for a later batch.  A rule whose where, when
or per changed starts with no state: the API deletes it in its own transaction, but a
batch stepping the old rule can commit after that delete and write it back, so the batch
that applies the change deletes the rule's state again, before it loads any.

A stored rule that no longer compiles (the compiler got stricter in an upgrade) is
logged and left out; it never stops the daemon.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
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
#: Upper bounds (seconds) of the rule-change timings on /metrics: applying one change to
#: the index costs well under a millisecond, a burst of compiles can take seconds.
TIMING_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


@dataclass(frozen=True)
class StoredRule:
    """One ``triggers`` row of an organization, as read."""

    id: str
    org_id: int
    document: str
    content_hash: str
    logic_hash: str | None


@dataclass
class RuleChanges:
    """What changed after ``last_seq``: rules to put and ids to remove."""

    upserts: list[StoredRule] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    last_seq: int = 0


@dataclass
class Timings:
    """A histogram of durations (seconds), as /metrics shows it."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(TIMING_BUCKETS_S) + 1))
    total_s: float = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(TIMING_BUCKETS_S, seconds)] += 1
        self.total_s += seconds


@dataclass
class FollowStats:
    """What /metrics reports of the following of organizations' rules."""

    applied: int = 0  # rule changes put into the index
    behind_compile: int = 0  # batches that read only the events below the published horizon
    apply: Timings = field(default_factory=Timings)  # per batch applying changes
    compile: Timings = field(default_factory=Timings)  # per refresh compiling changes


#: A published change: the row and its compiled rule (None: it does not compile), or
#: None for a deleted rule.
_Ready = tuple[StoredRule, Rule | None] | None


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
        self.last_seq: int | None = None  # applied up to; None: not loaded (not leading)
        self.ids: set[str] = set()  # tenant rules in the index
        self.stats = FollowStats()
        self.wanted = asyncio.Event()  # a batch met changes not compiled yet
        self.published = asyncio.Event()  # compiled changes (or a newer horizon) to apply
        self._logic: dict[str, str | None] = {}  # id -> logic hash in the index
        self._ready: dict[str, _Ready] = {}  # compiled, not applied yet; latest per rule
        self._ready_seq = 0
        self._ready_horizon: str | None = None
        self._resets: set[str] = set()  # ids whose state goes, until a batch commits
        self._generation = 0  # a refresh begun before load_all publishes nothing
        self._refreshing = asyncio.Lock()
        self._compiling = False

    @property
    def compiling(self) -> bool:
        """Whether changes read by a refresh are being compiled (in its thread) now."""
        return self._compiling

    async def load_all(self, conn: asyncpg.Connection) -> list[Rule]:
        """Every organization's rule, compiled, as of one snapshot; sets ``last_seq``."""
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            horizon = await conn.fetchval(query("tenant_horizon"))
            last = await conn.fetchval(query("tenant_changes_last"))
            rows = [_stored(r) for r in await conn.fetch(query("tenant_rules_all"))]
        compiled = await asyncio.to_thread(compile_stored, rows, self.bot_names)
        rules = [rule for rule in compiled.values() if rule is not None]
        self.ids = {rule.id for rule in rules}
        self._logic = {row.id: row.logic_hash for row in rows}
        self.last_seq = self._ready_seq = int(last)
        self._ready_horizon = horizon
        self._ready.clear()
        self._resets.clear()
        self._generation += 1
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

    async def refresh(self, conn: asyncpg.Connection) -> int:
        """Read and compile (in a thread) the changes after the published ones, then
        publish them with a new horizon (module docstring, step 1); how many changed.
        Touches nothing a batch reads until it publishes, on the event loop."""
        async with self._refreshing:
            if self.last_seq is None:
                return 0
            generation = self._generation
            horizon = await conn.fetchval(query("tenant_horizon"))  # before the changes
            changes = await self.read_changes(conn, self._ready_seq)
            compiled: dict[str, Rule | None] = {}
            if changes.upserts:
                started = time.perf_counter()
                self._compiling = True
                try:
                    compiled = await asyncio.to_thread(
                        compile_stored, changes.upserts, self.bot_names
                    )
                finally:
                    self._compiling = False
                self.stats.compile.add(time.perf_counter() - started)
            if generation != self._generation:
                return 0  # load_all ran meanwhile: it read everything this did
            for trigger_id in changes.deleted:
                self._ready[trigger_id] = None
            for stored in changes.upserts:
                self._ready[stored.id] = (stored, compiled[stored.id])
            self._ready_seq = changes.last_seq
            self._ready_horizon = horizon
            self.published.set()
            return len(changes.upserts) + len(changes.deleted)

    async def apply(self, conn: asyncpg.Connection, index: RuleIndex) -> str | None:
        """Inside the batch's transaction, before it reads events: apply to ``index`` the
        published changes and return the horizon the batch must read below (None: no
        organization's rules followed, read as far as the cursor may).  Never compiles."""
        if self.last_seq is None:
            return None
        probe = await conn.fetchrow(query("tenant_changes_probe"), self._ready_seq)
        assert probe is not None
        horizon: str | None = probe["horizon"]
        if probe["pending"]:
            horizon = self._ready_horizon
            self.stats.behind_compile += 1
            self.wanted.set()
        if self._ready:
            started = time.perf_counter()
            count = self._apply_ready(index)
            self.stats.apply.add(time.perf_counter() - started)
            self.stats.applied += count
            log.info("organizations' rule changes applied", extra={"rules": count})
        self.last_seq = self._ready_seq
        if self._resets:
            await conn.execute(query("tenant_state_reset"), sorted(self._resets))
        return horizon

    def committed(self) -> None:
        """The batch that applied the changes committed: their state resets with it."""
        self._resets.clear()

    def _apply_ready(self, index: RuleIndex) -> int:
        ready, self._ready = self._ready, {}
        for trigger_id, item in ready.items():
            if item is None:
                index.remove(trigger_id)
                self.ids.discard(trigger_id)
                self._logic.pop(trigger_id, None)
                self._resets.add(trigger_id)
                continue
            stored, rule = item
            if self._logic.get(trigger_id, "") != stored.logic_hash:
                self._resets.add(trigger_id)  # new, or its where/when/per changed
            self._logic[trigger_id] = stored.logic_hash
            if rule is None:
                index.remove(trigger_id)
                self.ids.discard(trigger_id)
            else:
                index.put(rule)
                self.ids.add(trigger_id)
        return len(ready)


def _stored(row: asyncpg.Record, id_column: str = "id") -> StoredRule:
    return StoredRule(
        id=row[id_column],
        org_id=row["org_id"],
        document=row["document"],
        content_hash=row["content_hash"],
        logic_hash=row["logic_hash"],
    )

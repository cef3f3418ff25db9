"""The evaluator: reads the next batch through the gap-safe cursor and commits, in ONE
transaction, the cursor advance, the state changes and the queued action rows.

Guarantee 2 (no event evaluated twice) rests on that transaction and on the cursor
advance being optimistic: it only moves from the position this process read, so a
second engine or a stale leader rolls back instead of evaluating again.  This module
never talks to Redis: the dispatcher enqueues after the commit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from engine.event_rows import events_from_rows, read_batch_query
from engine.json_text import to_json
from engine.unusual_rows import unusual_rows
from rules import ActionSpec, Rule, RuleIndex, Step, build_context
from rules.errors import EngineError
from sql import query

log = logging.getLogger(__name__)


#: Failures of a batch that come from its rows, not from the database being away: the
#: same batch would fail the same way on every retry.
POISON_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
    UnicodeError,
    ValueError,
)


class CursorAheadError(EngineError):
    """The cursor is beyond this cluster's transaction ids: evaluating would skip events."""


class CursorMovedError(EngineError):
    """Another engine advanced the cursor: this batch was rolled back, nothing written."""


@dataclass(frozen=True)
class CursorPosition:
    txid: str
    seq: int


@dataclass
class BatchResult:
    events: int = 0
    fired: int = 0
    suppressed: int = 0
    errors: int = 0
    unusual: int = 0  # rows that looked malformed (logged once each, still evaluated)
    action_ids: list[int] = field(default_factory=list)
    last_event_timestamp: int | None = None


@dataclass
class _PendingActions:
    """Action rows of one write: a COPY (``records``) or a multi-row insert (``columns``)."""

    # (id(rule), id(action)) -> its columns; equal rules of a load share their actions
    fixed: dict[tuple[int, int], tuple[Any, ...]] = field(default_factory=dict)
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def add(self, rule: Rule, action: ActionSpec, event_id: Any, context_json: str) -> None:
        key = (id(rule), id(action))
        fixed = self.fixed.get(key)
        if fixed is None:  # what the rows of one action share, built once per batch
            retry = action.retry
            fixed = self.fixed[key] = (
                rule.id,
                action.index,
                action.kind,
                action.name,
                retry.attempts,
                retry.backoff_s,
                retry.max_backoff_s,
                to_json(action.raw),
            )
        self.rows.append((None if event_id is None else str(event_id), context_json, fixed))

    def records(self) -> list[tuple[Any, ...]]:
        """The rows in ACTION_COLUMNS order, without the id (see copy_action_rows)."""
        return [
            (t, event_id, i, k, n, a, b, m, s, context)
            for event_id, context, (t, i, k, n, a, b, m, s) in self.rows
        ]

    @property
    def columns(self) -> tuple[list[Any], ...]:
        """The insert_actions parameters: one array per column, in its order."""
        event_ids, contexts, fixed = zip(*self.rows, strict=True)
        t, i, k, n, a, b, m, s = (list(column) for column in zip(*fixed, strict=True))
        return t, list(event_ids), i, k, n, a, b, m, s, list(contexts)

    def __len__(self) -> int:
        return len(self.rows)


#: From this many action rows a chunk is written with COPY (ids taken beforehand): 1,000
#: rows 20 ms against 26 ms for the multi-row INSERT; below it the fewer round trips of
#: the INSERT win (a live batch of one event).
COPY_FROM_ROWS = 64
ACTION_COLUMNS = (
    "id",
    "trigger_id",
    "event_id",
    "action_index",
    "action_type",
    "action_name",
    "max_attempts",
    "backoff_s",
    "max_backoff_s",
    "spec",
    "context",
)
#: A batch's action rows are written in chunks of this many while the rest of the batch
#: is evaluated: PostgreSQL writes one chunk on the other core while this one builds the
#: next (docs/performance.md, change 15).
WRITE_CHUNK_ROWS = 256
#: Ids are taken for this many rows at most at a time (see _ChunkWriter).
ID_BLOCK = 1024
#: While a chunk is in flight the evaluation yields to it every this many matches: each
#: of its round trips needs the event loop.
YIELD_EVERY = 16


async def take_action_ids(conn: asyncpg.Connection, count: int) -> list[int]:
    ids: list[int] = await conn.fetchval(query("next_action_ids"), count)
    return ids


class _EventWrittenTwice(Exception):
    """A COPY met an action row already there: the indexer wrote an event id twice."""


async def copy_action_rows(
    conn: asyncpg.Connection, records: list[tuple[Any, ...]], ids: list[int] | None = None
) -> list[int]:
    """COPY action rows (ACTION_COLUMNS without the id) with ``ids`` (or ids taken first);
    their ids."""
    if ids is None:
        ids = await take_action_ids(conn, len(records))
    await conn.copy_records_to_table(
        "action_results",
        records=[(i, *r) for i, r in zip(ids, records, strict=True)],
        columns=ACTION_COLUMNS,
    )
    return ids


class _ChunkWriter:
    """Writes a batch's action rows a chunk at a time, one chunk in flight.

    Nothing else uses the connection while a chunk is in flight: the evaluation that goes
    on meanwhile is Python only.  Every chunk is part of the batch's transaction, so the
    batch still commits or rolls back whole.  ``copy`` False: every chunk by the INSERT,
    which skips rows already there (see Evaluator.run_batch).
    """

    def __init__(self, conn: asyncpg.Connection, *, copy: bool, most: int) -> None:
        self.conn = conn
        self.copy = copy
        self.ids: list[int] = []
        self._task: asyncio.Future[list[int]] | None = None
        # Ids are taken for as many rows as may still come (``most`` in all, every match
        # firing), up to a few chunks: one round trip serves several chunks, and ids left
        # unused are few (a sequence has gaps anyway).
        self._unwritten = most
        self._spare: list[int] = []

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, pending: _PendingActions) -> None:
        """Wait for the chunk in flight, then start writing ``pending``."""
        await self.finish()
        self._task = asyncio.ensure_future(self._write(pending))
        await asyncio.sleep(0)  # it sends its first statement

    async def finish(self, rest: _PendingActions | None = None) -> list[int]:
        """Wait for the chunk in flight (its failure is the batch's), write ``rest``;
        the ids of every row written, in order."""
        task, self._task = self._task, None
        if task is not None:
            self.ids.extend(await task)
        if rest is not None and len(rest):
            self.ids.extend(await self._write(rest))
        return self.ids

    async def settle(self) -> None:
        """After a failure elsewhere: let the chunk in flight end, so the connection is
        free for the rollback.  Its own outcome no longer matters."""
        task, self._task = self._task, None
        if task is not None:
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved, so not logged as lost

    async def _write(self, pending: _PendingActions) -> list[int]:
        count = len(pending)
        if self.copy and count >= COPY_FROM_ROWS:
            if len(self._spare) < count:
                take = max(count, min(self._unwritten, ID_BLOCK)) - len(self._spare)
                self._spare += await take_action_ids(self.conn, take)
            ids, self._spare = self._spare[:count], self._spare[count:]
            self._unwritten -= count
            try:
                return await copy_action_rows(self.conn, pending.records(), ids)
            except asyncpg.UniqueViolationError as exc:
                raise _EventWrittenTwice from exc
        rows = await self.conn.fetch(query("insert_actions"), *pending.columns)
        self._unwritten -= count
        return [row["id"] for row in rows]


class Evaluator:
    """Evaluates batches of events against the current rule index."""

    def __init__(
        self, cursor_name: str, batch_size: int, *, write_chunk_rows: int = WRITE_CHUNK_ROWS
    ) -> None:
        self.cursor_name = cursor_name
        self.batch_size = batch_size
        self.write_chunk_rows = write_chunk_rows
        self.position: CursorPosition | None = None
        self._logged: set[tuple[str, str | None, str]] = set()

    async def load_position(self, conn: asyncpg.Connection) -> CursorPosition:
        await conn.execute(query("cursor_ensure"), self.cursor_name)
        row = await conn.fetchrow(query("cursor_get"), self.cursor_name)
        assert row is not None
        if row["ahead"]:
            raise CursorAheadError(
                f"cursor {self.cursor_name!r} is at transaction {row['txid']}, which this "
                "database has not reached: it was restored from a logical dump. New events "
                "would sort below the cursor and be skipped, so nothing is evaluated until "
                "an operator decides (docs/operations.md, 'Backups')"
            )
        self.position = CursorPosition(txid=row["txid"], seq=row["seq"])
        return self.position

    async def run_batch(
        self, conn: asyncpg.Connection, index: RuleIndex, *, limit: int | None = None
    ) -> BatchResult:
        """Evaluate one batch (``limit`` rows at most) and commit it; returns what happened.

        Action rows are written by COPY, which cannot skip a row already there (an event id
        the indexer wrote twice, see the insert_actions query).  Such a batch rolls back
        whole and is evaluated again with the INSERT, which skips it.
        """
        if self.position is None:  # outside the batch: a rollback must not undo it
            await self.load_position(conn)
        limit = limit or self.batch_size
        try:
            return await self._run_batch(conn, index, limit, copy=True)
        except _EventWrittenTwice:
            return await self._run_batch(conn, index, limit, copy=False)

    async def _run_batch(
        self, conn: asyncpg.Connection, index: RuleIndex, limit: int, *, copy: bool
    ) -> BatchResult:
        result = BatchResult()
        async with conn.transaction():
            rows, end = await self._claim_next(conn, limit, index.event_fields)
            if not rows:
                return result
            await self._evaluate(conn, rows, index, result, copy=copy)
        self.position = end
        return result

    async def skip_next(self, conn: asyncpg.Connection) -> str | None:
        """Move the cursor past the next row without evaluating it; returns its id.

        The last resort for a row whose evaluation cannot be recorded (a failure that
        would repeat on every retry and so stall every event behind it).
        """
        if self.position is None:
            await self.load_position(conn)
        async with conn.transaction():
            rows, end = await self._claim_next(conn, 1)
            if not rows:
                return None
        self.position = end
        return str(rows[0]["id"])

    async def _claim_next(
        self, conn: asyncpg.Connection, limit: int, columns: tuple[str, ...] | None = None
    ) -> tuple[list[asyncpg.Record], CursorPosition | None]:
        """Read the next rows and advance the cursor past them, inside the caller's
        transaction.  The cursor is claimed first: a concurrent engine blocks here on the
        row lock and then finds the position moved, so nothing is evaluated twice."""
        assert self.position is not None, "load_position first"
        start = self.position
        rows = await conn.fetch(read_batch_query(columns), start.txid, start.seq, limit)
        if not rows:
            return [], None
        end = CursorPosition(txid=rows[-1]["_txid"], seq=rows[-1]["_seq"])
        status = await conn.execute(
            query("cursor_advance"),
            self.cursor_name,
            end.txid,
            end.seq,
            start.txid,
            start.seq,
            len(rows),
        )
        if status != "UPDATE 1":
            self.position = None
            raise CursorMovedError(f"cursor {self.cursor_name!r} was moved by another engine")
        return rows, end

    async def _evaluate(
        self,
        conn: asyncpg.Connection,
        rows: list[asyncpg.Record],
        index: RuleIndex,
        result: BatchResult,
        *,
        copy: bool,
    ) -> None:
        events = events_from_rows(rows)
        result.events = len(events)
        for position, problems in unusual_rows(rows, events):
            result.unusual += 1
            self._log_once(events[position], None, "unusual event row", "; ".join(problems))
        last_ts = events[-1].get("timestamp")
        result.last_event_timestamp = last_ts if isinstance(last_ts, int) else None
        matches = self._match(events, index, result)
        states = await self._load_states(conn, matches)
        stats: dict[str, Counter[str]] = {}
        most = sum(len(rule.actions) for _, rule, _ in matches)
        writer = _ChunkWriter(conn, copy=copy, most=most)
        try:
            dirty, pending = await self._step_all(matches, states, stats, writer, result)
            result.action_ids = await writer.finish(pending)
        finally:
            await writer.settle()
        await self._write(conn, states, dirty, stats)

    async def _step_all(
        self,
        matches: list[tuple[dict[str, Any], Rule, str]],
        states: dict[tuple[str, str], dict[str, Any]],
        stats: dict[str, Counter[str]],
        writer: _ChunkWriter,
        result: BatchResult,
    ) -> tuple[set[tuple[str, str]], _PendingActions]:
        """Step every match; firings become action rows, handed to ``writer`` a chunk at
        a time as they fill.  Returns the state groups changed and the rows not handed."""
        dirty: set[tuple[str, str]] = set()
        pending = _PendingActions()
        fired_at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        for n, (event, rule, key) in enumerate(matches):
            if n % YIELD_EVERY == 0 and writer.busy:
                await asyncio.sleep(0)
            counter = stats.setdefault(rule.id, Counter())
            counter["matched"] += 1
            try:
                step = rule.step(event, states.get((rule.id, key)) if rule.stateful else None)
            except Exception as exc:  # a rule bug must not stop the engine
                counter["errors"] += 1
                result.errors += 1
                self._log_failure(event, rule.id, exc)
                continue
            if rule.stateful and step.state is not None:
                states[(rule.id, key)] = step.state
                dirty.add((rule.id, key))
            if step.suppressed:
                counter["suppressed"] += 1
                result.suppressed += 1
            if not step.fired:
                continue
            counter["fired"] += 1
            result.fired += 1
            try:
                context_json = self._context_json(rule, event, step, fired_at)
            except Exception as exc:
                counter["errors"] += 1
                result.errors += 1
                self._log_failure(event, rule.id, exc)
                continue
            for action in rule.actions:
                pending.add(rule, action, event.get("id"), context_json)
            if len(pending) >= self.write_chunk_rows:
                await writer.start(pending)
                pending = _PendingActions(pending.fixed)
        return dirty, pending

    def _match(
        self, events: list[dict[str, Any]], index: RuleIndex, result: BatchResult
    ) -> list[tuple[dict[str, Any], Rule, str]]:
        matches: list[tuple[dict[str, Any], Rule, str]] = []
        for event in events:
            try:
                for rule in index.matching(event):
                    key = rule.group_key(event) if rule.stateful else ""
                    matches.append((event, rule, key))
            except Exception as exc:
                result.errors += 1
                self._log_failure(event, None, exc)
        return matches

    @staticmethod
    def _context_json(rule: Rule, event: Mapping[str, Any], step: Step, at: str) -> str:
        group = rule.group_values(event) if rule.per else {}
        return to_json(build_context(rule, event, group, step.template_state, at))

    @staticmethod
    async def _load_states(
        conn: asyncpg.Connection, matches: list[tuple[dict[str, Any], Rule, str]]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        keys = {(rule.id, key) for _, rule, key in matches if rule.stateful}
        if not keys:
            return {}
        ids, groups = zip(*keys, strict=True)
        rows = await conn.fetch(query("load_states"), list(ids), list(groups))
        return {(r["trigger_id"], r["group_key"]): json.loads(r["state"]) for r in rows}

    @staticmethod
    async def _write(
        conn: asyncpg.Connection,
        states: dict[tuple[str, str], dict[str, Any]],
        dirty: set[tuple[str, str]],
        stats: dict[str, Counter[str]],
    ) -> None:
        if dirty:
            ordered = sorted(dirty)
            await conn.execute(
                query("save_states"),
                [k[0] for k in ordered],
                [k[1] for k in ordered],
                [to_json(states[k]) for k in ordered],
            )
        if stats:
            ids = list(stats)
            await conn.execute(
                query("add_rule_stats"),
                ids,
                [stats[i]["matched"] for i in ids],
                [stats[i]["fired"] for i in ids],
                [stats[i]["suppressed"] for i in ids],
                [stats[i]["errors"] for i in ids],
            )

    def _log_failure(
        self, event: Mapping[str, Any], trigger_id: str | None, exc: Exception
    ) -> None:
        self._log_once(event, trigger_id, "event could not be evaluated", repr(exc)[:500])

    def _log_once(
        self, event: Mapping[str, Any], trigger_id: str | None, message: str, detail: str
    ) -> None:
        """One line per event and rule, even when a rolled-back batch is read again."""
        key = (str(event.get("id")), trigger_id, message)
        if key in self._logged:
            return
        if len(self._logged) > 10_000:
            self._logged.clear()
        self._logged.add(key)
        log.warning(message, extra={"event_id": key[0], "trigger_id": trigger_id, "error": detail})

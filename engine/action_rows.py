"""The action rows a batch queues (action_results), and their writers: COPY and INSERT.

Every row is written inside the batch's transaction, so the batch's rows, states and
cursor advance commit together or not at all.  This module never commits and never
talks to Redis: the dispatcher enqueues the ids after the commit.

The rows are built once per firing on the hot path, as plain tuples in ActionRow's
field order (the NamedTuple's own constructor would cost several times the tuple).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import asyncpg

from engine.json_text import to_json
from rules import ActionSpec, Rule
from sql import query


class ActionRow(NamedTuple):
    """One action_results row as a firing writes it; its id comes from the table.

    The fields are the table's columns, in the order the COPY (ACTION_COLUMNS) and the
    insert_actions query take them.  The first ten are what every firing of one action
    of one rule shares (``shared_fields``; ``status`` is 'queued', or 'quota_exceeded'
    for a firing over its organization's quota), the last two the firing's own.
    """

    trigger_id: str
    org_id: int | None
    status: str
    action_index: int
    action_type: str
    action_name: str | None
    max_attempts: int
    backoff_s: float
    max_backoff_s: float
    spec: str
    event_id: str | None
    context: str


#: The columns a COPY writes: the id, then an ActionRow.
ACTION_COLUMNS = ("id", *ActionRow._fields)

#: From this many action rows a chunk is written with COPY (ids taken beforehand); below
#: it the fewer round trips of the multi-row INSERT win (a live batch of one event).
COPY_FROM_ROWS = 64
#: A batch's action rows are written in chunks of this many while the rest of the batch
#: is evaluated: PostgreSQL writes one chunk on another core while the evaluation builds
#: the next.
WRITE_CHUNK_ROWS = 256
#: Ids are taken for this many rows at most at a time (see ActionRowWriter).
ID_BLOCK = 1024


#: The status of a firing held back by its organization's max_firings_per_minute: written,
#: never enqueued.
QUOTA_EXCEEDED = "quota_exceeded"
_STATUS_AT = ActionRow._fields.index("status")
_ORG_AT = ActionRow._fields.index("org_id")


def shared_fields(rule: Rule, action: ActionSpec, status: str = "queued") -> tuple[Any, ...]:
    """ActionRow's fields up to ``spec``: what every firing of ``action`` writes."""
    retry = action.retry
    return (
        rule.id,
        rule.org_id,
        status,
        action.index,
        action.kind,
        action.name,
        retry.attempts,
        retry.backoff_s,
        retry.max_backoff_s,
        to_json(action.raw),
    )


class PendingActionRows:
    """Action rows not written yet, each a tuple in ActionRow's field order."""

    def __init__(self, shared: dict[tuple[int, int, str], tuple[Any, ...]] | None = None) -> None:
        # (id(rule), id(action), status) -> shared_fields; equal rules of a load share
        # their actions, so the key is both.  Passed on from chunk to chunk of one batch.
        self.shared = {} if shared is None else shared
        self.rows: list[tuple[Any, ...]] = []

    def add(
        self,
        rule: Rule,
        action: ActionSpec,
        event_id: Any,
        context_json: str,
        status: str = "queued",
    ) -> None:
        key = (id(rule), id(action), status)
        shared = self.shared.get(key)
        if shared is None:
            shared = self.shared[key] = shared_fields(rule, action, status)
        self.rows.append((*shared, None if event_id is None else str(event_id), context_json))

    def columns(self) -> list[list[Any]]:
        """The insert_actions parameters: one array per ActionRow field, in its order."""
        return list(map(list, zip(*self.rows, strict=True)))

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class QueuedActions:
    """Action rows written in a transaction that the dispatcher enqueues after its commit:
    their ids, and the organization of those that are an organization's."""

    action_ids: list[int] = field(default_factory=list)
    action_orgs: dict[int, int] = field(default_factory=dict)


async def insert_queued(
    conn: asyncpg.Connection, pending: PendingActionRows, queued: QueuedActions
) -> None:
    """Write ``pending`` (a multi-row INSERT, in the caller's transaction) and note in
    ``queued`` the rows to enqueue: those written with status queued (not one held back by
    a quota, nor one already there)."""
    if not len(pending):
        return
    for row in await conn.fetch(query("insert_actions"), *pending.columns()):
        if row["status"] != "queued":
            continue
        queued.action_ids.append(row["id"])
        if row["org_id"] is not None:
            queued.action_orgs[row["id"]] = row["org_id"]


async def take_action_ids(conn: asyncpg.Connection, count: int) -> list[int]:
    ids: list[int] = await conn.fetchval(query("next_action_ids"), count)
    return ids


class EventWrittenTwice(Exception):
    """A COPY met an action row already there: the indexer wrote an event id twice."""


async def copy_action_rows(
    conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]], ids: list[int] | None = None
) -> list[int]:
    """COPY ``rows`` (ActionRow tuples) with ``ids`` (or ids taken first); their ids."""
    if ids is None:
        ids = await take_action_ids(conn, len(rows))
    await conn.copy_records_to_table(
        "action_results",
        records=[(i, *r) for i, r in zip(ids, rows, strict=True)],
        columns=ACTION_COLUMNS,
    )
    return ids


class ActionRowWriter:
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
        self.held: list[int] = []  # ids of rows over their quota: never to be enqueued
        # id -> organization of the queued rows of organizations' rules: the queue each
        # job goes on, known here without asking the database again.
        self.orgs: dict[int, int] = {}
        self._task: asyncio.Future[list[int]] | None = None
        # Ids are taken for as many rows as may still come (``most`` in all, every match
        # firing), up to a few chunks: one round trip serves several chunks, and ids left
        # unused are few (a sequence has gaps anyway).
        self._unwritten = most
        self._spare: list[int] = []

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, pending: PendingActionRows) -> None:
        """Wait for the chunk in flight, then start writing ``pending``."""
        await self.finish()
        self._task = asyncio.ensure_future(self._write(pending))
        await asyncio.sleep(0)  # it sends its first statement

    async def finish(self, rest: PendingActionRows | None = None) -> list[int]:
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

    async def _write(self, pending: PendingActionRows) -> list[int]:
        count = len(pending)
        if self.copy and count >= COPY_FROM_ROWS:
            if len(self._spare) < count:
                take = max(count, min(self._unwritten, ID_BLOCK)) - len(self._spare)
                self._spare += await take_action_ids(self.conn, take)
            ids, self._spare = self._spare[:count], self._spare[count:]
            self._unwritten -= count
            try:
                await copy_action_rows(self.conn, pending.rows, ids)
            except asyncpg.UniqueViolationError as exc:
                raise EventWrittenTwice from exc
            self._sort_out(zip(ids, pending.rows, strict=True), _STATUS_AT, _ORG_AT)
            return ids
        rows = await self.conn.fetch(query("insert_actions"), *pending.columns())
        self._unwritten -= count
        self._sort_out(((row["id"], row) for row in rows), "status", "org_id")
        return [row["id"] for row in rows]

    def _sort_out(self, written: Iterable[tuple[int, Any]], status: Any, org: Any) -> None:
        """Note the rows held back by a quota and the organization of the others."""
        for action_id, row in written:
            if row[status] != "queued":
                self.held.append(action_id)
            elif row[org] is not None:
                self.orgs[action_id] = row[org]

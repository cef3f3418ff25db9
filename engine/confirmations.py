"""Confirmations: events of a chain evaluated only once their block is deep enough.

With ``chains.<id>.confirmations: N`` > 0, the main cursor reads and advances over the
chain's rows as over any other, but does not evaluate them: they are its chain cursor's.
Each batch, for each such chain, the rows of the chain that the main cursor has passed
are evaluated in cursor order while their block is at least N blocks below the chain's
head, up to the first that is not.  A chain that stops there gets a row in
``engine_cursors`` (``<cursor>@chain:<chain id>``, sql/011_chain_cursors.sql) just
before that row, so the next batch reads the chain from there and no other chain's rows
again; a chain whose rows are all evaluated has no row there: it is where the main
cursor is.  So holding costs nothing per event, and a chain without confirmations never
waits for one that has them.

Why this is exact:

- gap-safety is the main cursor's: a chain cursor never reads beyond it;
- each chain cursor moves (or is created, or dropped) optimistically in the batch's one
  transaction, with the main cursor's advance and what the batch evaluates, so across
  crashes each row is evaluated exactly once;
- a reorg before confirmation needs nothing: a deleted row is gone before the chain
  cursor reaches it, an updated one is read as it is then, a re-insert comes later in
  cursor order; a second row of an id read with the first lends the first its content
  (engine.reorgs then drops it as a rewrite of the id);
- when a chain's confirmations go to 0, its cursor still evaluates what it holds, up to
  where the main cursor was when the batch began (the main cursor evaluates the chain's
  rows after that), and is then dropped: nothing is stranded.

A chain's head is its ``checkpoints`` row when there is one (the indexer's word), else
the highest block number the main cursor has read for it (``chain_heads_seen``).  This
module never commits: the evaluator calls ``sort`` inside its batch's transaction,
evaluates what it returns and calls ``committed`` after the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import asyncpg

from engine.chains_config import ChainsSettings
from engine.cursor import CursorMovedError, CursorPosition
from engine.event_rows import read_batch_query
from sql import query

#: The columns confirmations need from the rows the main cursor reads, whatever the
#: rules name (not created_at: a datetime in every event would cost each batch more than
#: holding does).
HOLD_FIELDS = ("id", "chain_id", "block_number")
#: The most rows a chain cursor keeps in memory of those it waits on (read by the main
#: cursor, not evaluated yet), per batch-size rows: beyond, the chain is read again
#: from the table when its rows are due.
WAITING_KEPT_PER_BATCH = 4


@dataclass(frozen=True)
class ChainCursor:
    """A chain's cursor as last committed, and the block of the row it waits for."""

    chain_id: int
    position: CursorPosition
    blocked_at: int | None = None  # None: not known, the next batch reads the chain
    # The chain's rows after ``position`` up to the main cursor, as the main cursor read
    # them, when known (None: read them from the table).  A row the indexer changes is
    # a removal (sql/007), which makes the batch read the chain again.
    waiting: tuple[asyncpg.Record, ...] | None = None


@dataclass
class Sorted:
    """A batch's rows as confirmations sorted them."""

    rows: list[asyncpg.Record] = field(default_factory=list)  # to evaluate now, in order
    # Per row of ``rows``: the position, before this batch, of the cursor evaluating it
    # (what engine.reorgs.drop_rewritten checks earlier rows of its id against).
    passed: list[CursorPosition] = field(default_factory=list)
    held: int = 0  # rows the main cursor read that wait for their confirmations
    released: int = 0  # rows evaluated through chain cursors


def _key(position: CursorPosition) -> tuple[int, int]:
    return int(position.txid), position.seq


class Confirmations:
    """The chain cursors of one main cursor, by the ``chains:`` settings.

    Keeps them as last committed (only the leader writes them), so that a batch with no
    chain holding anything and no confirmed chain's row costs no query."""

    def __init__(self, chains: ChainsSettings, cursor_name: str) -> None:
        self.chains = chains
        self.cursor_name = cursor_name
        self._cursors: dict[int, ChainCursor] | None = None  # None: read in the next batch
        self._uncommitted: dict[int, ChainCursor | None] = {}  # None: dropped
        self._columns: tuple[str, ...] | None = None  # what the waiting rows hold

    def columns(self, columns: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """The columns the main cursor must read for ``columns`` (None: all of them)."""
        if columns is None or not (self.chains.holds_any or self._cursors):
            return columns
        return tuple(dict.fromkeys((*columns, *HOLD_FIELDS)))

    def name_of(self, chain_id: int) -> str:
        return f"{self.cursor_name}@chain:{chain_id}"

    async def sort(
        self,
        conn: asyncpg.Connection,
        rows: list[asyncpg.Record],
        columns: tuple[str, ...] | None,
        start: CursorPosition,
        end: CursorPosition,
        limit: int,
        touched: set[int],
        *,
        release: bool = True,
    ) -> Sorted:
        """The rows to evaluate now, in the caller's transaction: each chain cursor's
        rows now deep enough (at most ``limit`` read per chain beyond this batch's),
        then the batch's rows of chains without confirmations, in cursor order.
        ``rows``: what the main cursor read with ``columns``, from ``start`` to ``end``;
        ``touched``: chains with rows the indexer deleted or updated (what a chain cursor
        waits for may have changed).  ``release`` False: no chain cursor's row is
        evaluated (every row of a confirmed chain waits), for the daemon's one-by-one
        search of a row that cannot be recorded, which must look at the main cursor's
        rows alone.  The caller calls ``committed`` after its commit."""
        if self._cursors is None:
            self._cursors = {
                r["chain_id"]: ChainCursor(r["chain_id"], CursorPosition(r["txid"], r["seq"]))
                for r in await conn.fetch(query("chain_cursors"), self.cursor_name)
            }
        self._uncommitted = {}
        cursors = self._cursors
        if columns != self._columns:  # rows of another shape cannot join this batch's
            self._columns = columns
            for chain_id, cursor in cursors.items():
                cursors[chain_id] = replace(cursor, waiting=None)
        if not cursors and not self.chains.holds_any:
            return Sorted(rows=rows, passed=[start] * len(rows))
        confirmations_of = self.chains.confirmations_of
        fresh: list[asyncpg.Record] = []
        by_chain: dict[int, list[asyncpg.Record]] = {}
        highest: dict[int, int] = {}
        for row in rows:
            chain_id = row["chain_id"]
            if confirmations_of(chain_id) <= 0:
                fresh.append(row)
                continue
            by_chain.setdefault(chain_id, []).append(row)
            if row["block_number"] > highest.get(chain_id, -1):
                highest[chain_id] = row["block_number"]
        looked_at = sorted(set(by_chain) | set(cursors))
        confirmed = [c for c in looked_at if confirmations_of(c) > 0]
        heads: dict[int, int | None] = {}  # no head: nothing is deep enough
        if not release:
            looked_at = [c for c in looked_at if confirmations_of(c) > 0]
        elif confirmed:
            found = await conn.fetch(
                query("chain_heads"), list(highest), list(highest.values()), confirmed
            )
            heads = {r["chain_id"]: r["head"] for r in found}
        result = Sorted()
        for chain_id in looked_at:
            taken, held = await self._chain(
                conn,
                chain_id,
                by_chain.get(chain_id, []),
                heads.get(chain_id),
                columns,
                start,
                end,
                limit,
                touched,
            )
            before = cursors.get(chain_id)
            result.rows += taken
            result.passed += [start if before is None else before.position] * len(taken)
            result.held += held
        result.released = len(result.rows)
        result.rows += fresh
        result.passed += [start] * len(fresh)
        return result

    async def _chain(
        self,
        conn: asyncpg.Connection,
        chain_id: int,
        read: list[asyncpg.Record],
        head: int | None,
        columns: tuple[str, ...] | None,
        start: CursorPosition,
        end: CursorPosition,
        limit: int,
        touched: set[int],
    ) -> tuple[list[asyncpg.Record], int]:
        """One chain's rows to evaluate now, and how many of ``read`` (the main cursor's
        rows of it) wait; moves the chain's cursor in the caller's transaction."""
        assert self._cursors is not None
        n = self.chains.confirmations_of(chain_id)
        cursor = self._cursors.get(chain_id)
        if (
            n > 0
            and cursor is not None
            and cursor.blocked_at is not None
            and chain_id not in touched
            and (head is None or head - cursor.blocked_at < n)
        ):
            # Still waiting for the same row: nothing to read.
            if cursor.waiting is not None and read:
                self._uncommitted[chain_id] = replace(
                    cursor, waiting=_kept((*cursor.waiting, *read), limit)
                )
            return [], len(read)
        # Without confirmations (any more), the main cursor evaluates the batch's rows.
        bound = end if n > 0 else start
        at = start if cursor is None else cursor.position
        candidates: list[asyncpg.Record] = []
        reached_start = True
        if cursor is not None and cursor.waiting is not None and chain_id not in touched:
            candidates = list(cursor.waiting)
        elif at != start:
            candidates = list(
                await conn.fetch(
                    read_batch_query(columns, "read_chain_batch"),
                    at.txid,
                    at.seq,
                    limit,
                    start.txid,
                    start.seq,
                    chain_id,
                )
            )
            reached_start = len(candidates) < limit
        earlier = len(candidates)
        if n > 0 and reached_start:
            candidates += read

        def deep(row: asyncpg.Record) -> bool:
            return n <= 0 or (head is not None and head - row["block_number"] >= n)

        taken: list[asyncpg.Record] = []
        blocked: asyncpg.Record | None = None
        for row in candidates:
            if not deep(row):
                blocked = row
                break
            taken.append(row)
        if blocked is not None:
            # Just before the row waited for: the next read starts right there.
            position = CursorPosition(blocked["_txid"], blocked["_seq"] - 1)
        elif reached_start:
            position = bound
        else:
            position = CursorPosition(taken[-1]["_txid"], taken[-1]["_seq"])
        if _key(position) < _key(at):  # the row waited for is the first after `at`
            position = at
        held = len(read) - max(0, len(taken) - earlier) if n > 0 and reached_start else len(read)
        await self._move(
            conn,
            chain_id,
            cursor,
            at,
            position,
            bound,
            len(taken),
            None if blocked is None else blocked["block_number"],
            _kept(candidates[len(taken) :], limit) if reached_start and n > 0 else None,
        )
        return _with_last_content(taken, candidates, deep), held

    async def _move(
        self,
        conn: asyncpg.Connection,
        chain_id: int,
        cursor: ChainCursor | None,
        at: CursorPosition,
        position: CursorPosition,
        bound: CursorPosition,
        evaluated: int,
        blocked_at: int | None,
        waiting: tuple[asyncpg.Record, ...] | None,
    ) -> None:
        """Create, advance or drop the chain's cursor row, optimistically."""
        name = self.name_of(chain_id)
        if position == bound:  # caught up with the main cursor: it holds nothing
            if cursor is not None:
                status = await conn.execute(query("chain_cursor_drop"), name, at.txid, at.seq)
                if status != "DELETE 1":
                    self._moved(name)
            self._uncommitted[chain_id] = None
            return
        if cursor is None:
            created = await conn.fetchval(
                query("chain_cursor_create"),
                name,
                chain_id,
                position.txid,
                position.seq,
                evaluated,
            )
            if created is None:
                self._moved(name)
        elif position != at:
            status = await conn.execute(
                query("cursor_advance"), name, position.txid, position.seq, at.txid, at.seq,
                evaluated,
            )  # fmt: skip
            if status != "UPDATE 1":
                self._moved(name)
        self._uncommitted[chain_id] = ChainCursor(chain_id, position, blocked_at, waiting)

    def _moved(self, name: str) -> None:
        self._cursors = None
        raise CursorMovedError(f"cursor {name!r} was moved by another engine")

    def committed(self) -> None:
        """The batch's transaction committed: its chain cursors are the table's."""
        if self._cursors is not None:
            for chain_id, cursor in self._uncommitted.items():
                if cursor is None:
                    self._cursors.pop(chain_id, None)
                else:
                    self._cursors[chain_id] = cursor
        self._uncommitted = {}

    def forget(self) -> None:
        """Another engine may have led meanwhile: read the chain cursors again."""
        self._cursors = None


def _kept(rows: Sequence[asyncpg.Record], limit: int) -> tuple[asyncpg.Record, ...] | None:
    """``rows`` to keep in memory, or None when there are too many."""
    return tuple(rows) if len(rows) <= WAITING_KEPT_PER_BATCH * limit else None


def _with_last_content(
    taken: list[asyncpg.Record],
    candidates: list[asyncpg.Record],
    deep: Callable[[asyncpg.Record], bool],
) -> list[asyncpg.Record]:
    """``taken`` with each row whose id comes again later among ``candidates`` (the
    indexer wrote it a second time before it was confirmed) replaced by that later row:
    the id is evaluated once, with its final content, where it first came."""
    if not taken:
        return taken
    last = {row["id"]: row for row in candidates}
    if len(last) == len(candidates):
        return taken
    return [last[row["id"]] if deep(last[row["id"]]) else row for row in taken]

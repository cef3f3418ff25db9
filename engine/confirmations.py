"""Confirmations: events of a chain evaluated only once their block is deep enough.

With ``chains.<id>.confirmations: N`` > 0, a row the cursor reads whose block is fewer
than N blocks below its chain's head is not evaluated: its id goes into ``held_events``
(sql/006_held_events.sql).  The cursor goes on as before, so a chain without
confirmations never waits for a held one.  Every batch then releases the held ids that
have become deep enough, each with its latest row among those the cursor has passed (a
rewrite before confirmation is evaluated once, with its final content; an id whose rows
were all deleted is dropped), and evaluates them before the batch's other rows.

Holding, releasing and evaluating happen in the batch's one transaction: an id leaves
``held_events`` in the commit that records its evaluation, so across crashes each held
event is evaluated exactly once.  A chain's head is its ``checkpoints`` row when there
is one (the indexer's word), else the highest block number the cursor has read for it.

This module never commits and never evaluates: the evaluator calls ``hold_and_release``
inside its batch's transaction and evaluates what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import asyncpg

from engine.chains_config import ChainsSettings
from engine.cursor import CursorPosition
from engine.event_rows import columns_read
from sql import query

#: The columns holding needs from the rows the cursor reads, whatever the rules name (not
#: created_at: a datetime in every event would cost each batch more than holding does).
HOLD_FIELDS = ("id", "chain_id", "block_number", "log_index")


@dataclass
class Sorted:
    """A batch's rows as confirmations sorted them."""

    rows: list[asyncpg.Record] = field(default_factory=list)  # to evaluate now, in order
    held: int = 0  # rows of this batch held back (their ids wait in held_events)
    released: int = 0  # held ids taken out of held_events (evaluated or dropped)
    dropped: int = 0  # released ids with no row left: deleted by the indexer, not evaluated


class Confirmations:
    """Holds and releases one cursor's events by the ``chains:`` settings.

    Keeps the ids in ``held_events`` as last committed (only the leader writes the
    table), so that a batch with nothing to hold and nothing held costs no query."""

    def __init__(self, chains: ChainsSettings) -> None:
        self.chains = chains
        listed = [(cid, c.confirmations) for cid, c in chains.by_id.items()]
        self._chain_ids = [cid for cid, _ in listed]
        self._confirmations = [n for _, n in listed]
        self._held: set[str] | None = None  # None: not known, read in the next batch
        self._uncommitted: tuple[set[str], set[str]] = (set(), set())  # (held, released)

    def columns(self, columns: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """The columns the cursor must read for ``columns`` (None: all of them)."""
        if columns is None or not self.chains.holds_any:
            return columns
        return tuple(dict.fromkeys((*columns, *HOLD_FIELDS)))

    async def hold_and_release(
        self,
        conn: asyncpg.Connection,
        rows: list[asyncpg.Record],
        columns: tuple[str, ...] | None,
        start: CursorPosition,
        position: CursorPosition,
        limit: int,
    ) -> Sorted:
        """Hold the rows of ``rows`` not deep enough yet and release at most ``limit``
        held ids now deep enough, in the caller's transaction; the rows to evaluate now:
        the released first (by block number, log index), then the batch's others in
        cursor order.  ``columns`` as passed to the cursor; ``start`` and ``position``: the
        cursor's positions before and after ``rows``, in this transaction.  The caller
        calls ``committed`` once its transaction has committed."""
        if self._held is None:
            self._held = {r["event_id"] for r in await conn.fetch(query("held_event_ids"))}
        result, held, released = Sorted(), set(), set()
        fresh = rows
        if self.chains.holds_any and rows:
            held = await self._hold(conn, rows, start, position)
            if held:
                fresh = [row for row in rows if row["id"] not in held]
                result.held = len(rows) - len(fresh)
        if self._held or held:
            rows_released = await conn.fetch(
                release_query(columns),
                self._chain_ids,
                self._confirmations,
                self.chains.default.confirmations,
                position.txid,
                position.seq,
                limit,
            )
            released = {r["id"] for r in rows_released}
            kept = [row for row in rows_released if row["_txid"] is not None]
            result.released, result.dropped = len(released), len(released) - len(kept)
            fresh = kept + fresh if fresh else kept
        self._uncommitted = (held, released)
        result.rows = fresh
        return result

    def committed(self) -> None:
        """The batch's transaction committed: its holds and releases are the table's."""
        held, released = self._uncommitted
        if self._held is not None:
            self._held |= held
            self._held -= released
        self._uncommitted = (set(), set())

    def forget(self) -> None:
        """Another engine may have led meanwhile: read the held ids again."""
        self._held = None

    async def _hold(
        self,
        conn: asyncpg.Connection,
        rows: list[asyncpg.Record],
        start: CursorPosition,
        end: CursorPosition,
    ) -> set[str]:
        """The ids of ``rows`` now held: not deep enough, or already waiting (a rewrite
        waits with its id, to be evaluated once with its latest row)."""
        assert self._held is not None
        confirmations_of = self.chains.confirmations_of
        highest: dict[int, int] = {}
        for row in rows:
            chain_id = row["chain_id"]
            if confirmations_of(chain_id) > 0 and row["block_number"] > highest.get(chain_id, -1):
                highest[chain_id] = row["block_number"]
        if not highest:
            return set()
        heads = {
            r["chain_id"]: r["head"]
            for r in await conn.fetch(
                query("chain_heads_note"), list(highest), list(highest.values())
            )
        }
        last: dict[str, asyncpg.Record] = {}  # the last row of each id to hold
        hold_ids = set()
        for row in rows:
            chain_id = row["chain_id"]
            n = confirmations_of(chain_id)
            if n <= 0:
                continue
            event_id = row["id"]
            if event_id in self._held or heads[chain_id] - row["block_number"] < n:
                hold_ids.add(event_id)
        if not hold_ids:
            return hold_ids
        for row in rows:
            if row["id"] in hold_ids:
                last[row["id"]] = row
        held = list(last.values())
        await conn.execute(
            query("hold_events"),
            [r["id"] for r in held],
            [r["chain_id"] for r in held],
            [r["block_number"] for r in held],
            [r["log_index"] for r in held],
            start.txid,
            start.seq,
            end.txid,
            end.seq,
        )
        return hold_ids


@lru_cache(maxsize=64)
def release_query(columns: tuple[str, ...] | None) -> str:
    """sql/queries.sql's release_held_events, selecting the columns the cursor reads for
    ``columns`` in the same order (engine.event_rows.events_from_rows needs one shape)."""
    return query("release_held_events").format(
        columns=", ".join(
            'coalesce(e."id", r.event_id) AS "id"' if name == "id" else f'e."{name}"'
            for name in columns_read(columns)
        )
    )

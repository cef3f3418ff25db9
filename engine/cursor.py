"""The gap-safe cursor: a named position in the events table, read and advanced.

Guarantee 1 (no event skipped) rests on the read_batch query: rows are read in (txid,
seq) order and only below the oldest running transaction.  Guarantee 2 (no event
evaluated twice) rests on the advance being optimistic, inside the caller's
transaction: it only moves from the position this process read, so a second engine or
a stale leader rolls back instead of evaluating again.  This module never evaluates and
never commits: the caller's transaction decides whether an advance happened.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from engine.event_rows import read_batch_query
from rules.errors import EngineError
from sql import query


class CursorAheadError(EngineError):
    """The cursor is beyond this cluster's transaction ids: evaluating would skip events."""


class CursorMovedError(EngineError):
    """Another engine advanced the cursor: this batch was rolled back, nothing written."""


@dataclass(frozen=True)
class CursorPosition:
    txid: str
    seq: int


class Cursor:
    """One named cursor (engine_cursors) and the position this process last committed.

    ``position`` None: not known (never loaded, or another engine may have moved it);
    the next read loads it first.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.position: CursorPosition | None = None

    async def load(self, conn: asyncpg.Connection) -> CursorPosition:
        """The committed position, creating the cursor at the start if it is new."""
        await conn.execute(query("cursor_ensure"), self.name)
        row = await conn.fetchrow(query("cursor_get"), self.name)
        assert row is not None
        if row["ahead"]:
            raise CursorAheadError(
                f"cursor {self.name!r} is at transaction {row['txid']}, which this "
                "database has not reached: it was restored from a logical dump. New events "
                "would sort below the cursor and be skipped, so nothing is evaluated until "
                "an operator decides (docs/operations.md, 'Backups')"
            )
        self.position = CursorPosition(txid=row["txid"], seq=row["seq"])
        return self.position

    async def read_and_advance(
        self,
        conn: asyncpg.Connection,
        limit: int,
        columns: tuple[str, ...] | None = None,
        *,
        horizon: str | None = None,
    ) -> tuple[list[asyncpg.Record], CursorPosition | None]:
        """Read the next rows (``columns`` of them, None: all) and advance the cursor past
        them, inside the caller's transaction; the rows and the position after them.
        ``horizon``: a transaction id (text) to read below, lower than the gap-safe bound
        (engine.tenant_rules says why); None: the gap-safe bound alone.

        The caller sets ``position`` once its transaction has committed.  The advance
        takes the cursor row's lock: a concurrent engine blocks on it and then finds the
        position moved (CursorMovedError), so nothing is evaluated twice.
        """
        assert self.position is not None, "load first"
        start = self.position
        rows = await conn.fetch(read_batch_query(columns), start.txid, start.seq, limit, horizon)
        if not rows:
            return [], None
        end = CursorPosition(txid=rows[-1]["_txid"], seq=rows[-1]["_seq"])
        status = await conn.execute(
            query("cursor_advance"), self.name, end.txid, end.seq, start.txid, start.seq, len(rows)
        )
        if status != "UPDATE 1":
            self.position = None
            raise CursorMovedError(f"cursor {self.name!r} was moved by another engine")
        return rows, end

    async def skip_next(self, conn: asyncpg.Connection) -> str | None:
        """Move the cursor past the next row without evaluating it; returns its id.

        The last resort for a row whose evaluation cannot be recorded (a failure that
        would repeat on every retry and so stall every event behind it).  Reads only the
        row's position and its id's raw bytes: a row that cannot be read at all (text that
        is not UTF-8 in a SQL_ASCII database) is skipped too, instead of failing again.
        """
        if self.position is None:
            await self.load(conn)
        start = self.position
        assert start is not None
        async with conn.transaction():
            row = await conn.fetchrow(query("cursor_next_row"), start.txid, start.seq)
            if row is None:
                return None
            end = CursorPosition(txid=row["_txid"], seq=row["_seq"])
            status = await conn.execute(
                query("cursor_advance"), self.name, end.txid, end.seq, start.txid, start.seq, 1
            )
            if status != "UPDATE 1":
                self.position = None
                raise CursorMovedError(f"cursor {self.name!r} was moved by another engine")
        self.position = end
        return bytes(row["id"]).decode("utf-8", errors="backslashreplace")

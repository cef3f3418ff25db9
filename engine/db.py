"""Database access shared by the sync side (worker, CLI, migrate): psycopg 3 with
RawCursor, so the named queries' ``$n`` parameters work unchanged for both drivers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from engine.queries import query
from rules.errors import EngineError


class DatabaseError(EngineError):
    """The database could not be reached or refused a statement."""


Connection = psycopg.Connection[Any]


def connect(dsn: str, *, autocommit: bool = True) -> Connection:
    """A connection whose cursors take ``$1``-style parameters."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, cursor_factory=psycopg.RawCursor)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to the database: {exc}".strip()) from exc


def run(conn: Connection, name: str, *params: Any) -> psycopg.Cursor[Any]:
    """Execute the named query with positional parameters."""
    return conn.execute(query(name).encode(), params or None)


def fetch_all(conn: Connection, name: str, *params: Any) -> list[tuple[Any, ...]]:
    return run(conn, name, *params).fetchall()


def fetch_one(conn: Connection, name: str, *params: Any) -> tuple[Any, ...] | None:
    return run(conn, name, *params).fetchone()


def run_script(conn: Connection, sql: str) -> None:
    """Execute a multi-statement script (a migration): no parameters allowed."""
    conn.execute(sql.encode())


def as_array(values: Sequence[Any]) -> list[Any]:
    return list(values)

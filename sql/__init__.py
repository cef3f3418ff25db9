"""Migrations (numbered ``NNN_*.sql`` files) and named queries (``queries.sql``).

Loaded by name, never assembled from values.  Parameters use PostgreSQL's ``$n`` form,
which both drivers take unchanged: asyncpg in ``engine run`` and psycopg's RawCursor on
the synchronous side (workers, CLI, migrate).  The sync helpers live here so that
``engine`` and ``actions`` share them without importing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import psycopg

from rules.errors import EngineError

_NAME = re.compile(r"^--\s*name:\s*([a-z0-9_]+)\s*$", re.MULTILINE)

Connection = psycopg.Connection[Any]


class DatabaseError(EngineError):
    """The database could not be reached or refused a statement."""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str


def _read(resource: str) -> str:
    return resources.files(__name__).joinpath(resource).read_text(encoding="utf-8")


@cache
def queries() -> dict[str, str]:
    """Every named query of ``queries.sql``."""
    parts = _NAME.split(_read("queries.sql"))
    found: dict[str, str] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"sql/queries.sql: query {name!r} is defined twice")
        found[name] = body.strip()
    return found


def query(name: str) -> str:
    """The SQL of one named query."""
    try:
        return queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/queries.sql") from None


def migrations() -> list[Migration]:
    """The numbered migration files, in order."""
    names = sorted(
        entry.name
        for entry in resources.files(__name__).iterdir()
        if re.match(r"^\d{3}_.+\.sql$", entry.name)
    )
    return [Migration(name=n.removesuffix(".sql"), sql=_read(n)) for n in names]


def connect(dsn: str, *, autocommit: bool = True) -> Connection:
    """A psycopg connection whose cursors take ``$1``-style parameters."""
    try:
        return psycopg.connect(
            dsn, autocommit=autocommit, cursor_factory=psycopg.RawCursor, connect_timeout=10
        )
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to the database: {exc}".strip()) from exc


def run(conn: Connection, name: str, *params: Any) -> psycopg.Cursor[Any]:
    """Execute the named query with positional parameters."""
    return conn.execute(query(name).encode(), params or None)


def fetch_all(conn: Connection, name: str, *params: Any) -> list[tuple[Any, ...]]:
    return run(conn, name, *params).fetchall()


def fetch_one(conn: Connection, name: str, *params: Any) -> tuple[Any, ...] | None:
    return run(conn, name, *params).fetchone()


def run_script(conn: Connection, script: str) -> None:
    """Execute a multi-statement script (a migration); it takes no parameters."""
    conn.execute(script.encode())

"""``engine migrate``: applies the numbered migrations of ``sql/``, idempotently.

Refuses a database whose encoding is not UTF8: SQL_ASCII stores bytes that are not
valid UTF-8, and an event the engine cannot decode can be neither evaluated nor shown.
Runs under a transaction-scoped advisory lock so two processes migrating at once
serialise.  Turns ``events`` into a TimescaleDB hypertable when the extension is
available, and installs (or removes) the NOTIFY doorbell.  With a ``source:`` config it
attaches (or, re-run, replaces) the triggers that read the indexer's own tables
(engine.source_tables), in the same transaction: a bad mapping leaves nothing attached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sql as db
from engine import source_tables
from engine.source_config import SourceSettings
from rules.errors import EngineError
from sql import migrations

log = logging.getLogger(__name__)

EVENTS_MIGRATION = "001_schema"  # the migration that creates `events`


class DatabaseEncodingError(EngineError):
    """The database is not UTF8: the engine's text would not survive it."""


def check_encoding(conn: db.Connection) -> None:
    """Raise DatabaseEncodingError unless the current database is UTF8."""
    row = db.fetch_one(conn, "database_encoding")
    assert row is not None
    # psycopg hands out bytes when the connection's encoding is SQL_ASCII.
    name, encoding = (
        value.decode("ascii", errors="backslashreplace") if isinstance(value, bytes) else str(value)
        for value in row
    )
    if encoding.upper() not in ("UTF8", "UTF-8"):
        raise DatabaseEncodingError(
            f"database {name!r} uses the {encoding} encoding; the engine needs UTF8 "
            f"(with {encoding}, events that are not valid UTF-8 can be written and then "
            "cannot be read).  Create a UTF8 database, e.g. "
            f"CREATE DATABASE {name}_utf8 ENCODING 'UTF8' TEMPLATE template0 "
            "(or createdb -E UTF8 -T template0), point database_url at it and run "
            "`engine migrate` again"
        )


@dataclass
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    timescaledb: bool = False
    doorbell: bool = True
    source: source_tables.AttachReport | None = None  # None: no `source:` configured
    source_left: list[str] = field(default_factory=list)  # attached earlier, left as is


def migrate(
    dsn: str,
    *,
    doorbell: bool = True,
    timescaledb: bool | None = None,
    source: SourceSettings | None = None,
    backfill: bool = False,
) -> MigrationReport:
    """Apply what is missing; ``timescaledb=None`` means: use it when available.

    ``source``: attach its triggers, replacing any attached before; without it, triggers
    attached earlier stay (``detach_source`` removes them) and the report names them.
    ``backfill``: also copy the source rows not in ``events`` yet.
    """
    report = MigrationReport(doorbell=doorbell)
    with db.connect(dsn) as conn:
        check_encoding(conn)
        db.run(conn, "migrations_table")
        with conn.transaction():
            db.run(conn, "migrations_lock")
            if timescaledb is None:
                row = db.fetch_one(conn, "timescaledb_available")
                timescaledb = bool(row and row[0])
            report.timescaledb = timescaledb
            done = {row[0] for row in db.fetch_all(conn, "applied_migrations")}
            for migration in migrations():
                if migration.name not in done:
                    db.run_script(conn, migration.sql)
                    db.run(conn, "record_migration", migration.name)
                    report.applied.append(migration.name)
                    log.info("migration applied", extra={"migration": migration.name})
                if timescaledb and migration.name == EVENTS_MIGRATION:
                    # Right after `events` exists: later migrations (continuous
                    # aggregates) need it to be a hypertable already.
                    db.run(conn, "timescaledb_create")
                    db.run(conn, "timescaledb_hypertable")
            db.run(conn, "doorbell_on" if doorbell else "doorbell_off")
            if source is not None:
                report.source = source_tables.attach(conn, source, backfill=backfill)
            else:
                report.source_left = source_tables.attached_triggers(conn)
    return report


def detach_source(dsn: str) -> list[str]:
    """``engine migrate --detach``: remove the source triggers; returns what was removed."""
    with db.connect(dsn) as conn, conn.transaction():
        db.run(conn, "migrations_lock")
        return source_tables.detach(conn)


def apply_migrations(dsn: str) -> list[str]:
    """Apply every migration with the defaults; returns the names newly applied."""
    return migrate(dsn).applied

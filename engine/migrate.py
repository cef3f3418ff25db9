"""``engine migrate``: applies the numbered migrations of ``sql/``, idempotently.

Runs under a transaction-scoped advisory lock so two processes migrating at once
serialise.  Turns ``events`` into a TimescaleDB hypertable when the extension is
available, and installs (or removes) the NOTIFY doorbell.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sql as db
from sql import migrations

log = logging.getLogger(__name__)

EVENTS_MIGRATION = "001_schema"  # the migration that creates `events`


@dataclass
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    timescaledb: bool = False
    doorbell: bool = True


def migrate(dsn: str, *, doorbell: bool = True, timescaledb: bool | None = None) -> MigrationReport:
    """Apply what is missing; ``timescaledb=None`` means: use it when available."""
    report = MigrationReport(doorbell=doorbell)
    with db.connect(dsn) as conn:
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
    return report


def apply_migrations(dsn: str) -> list[str]:
    """Apply every migration with the defaults; returns the names newly applied."""
    return migrate(dsn).applied

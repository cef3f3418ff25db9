"""The triggers that carry an indexer's own tables into ``events`` and ``checkpoints``.

``engine migrate`` with a ``source:`` section attaches, to the indexer's event table,
statement-level triggers that repeat each INSERT, UPDATE and DELETE on ``events`` in
the indexer's own transaction: the gap-safe cursor sees the rows commit with the
indexer's data, the reorg handling sees the deletes and rewrites, and a batched insert
of a thousand rows is one INSERT on ``events`` (the doorbell rings once).  The source's
checkpoint table, when given, is copied into ``checkpoints`` the same way: a table the
engine's readers (and triggers) already use stays a table, where a view in its place
could not be written by indexers that write ``checkpoints`` themselves.

Every name in the generated SQL is quoted by psycopg.sql, every column and type is
checked against the catalog first (engine.source_mapping), and the functions run as
their owner (SECURITY DEFINER, a fixed search_path) so the indexer's role needs no
privilege on our tables.  This module must never interpolate a value into SQL text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import psycopg
from psycopg import sql

import sql as db
from engine.source_config import CHECKPOINT_FIELDS, SourceSettings, SourceTable
from engine.source_mapping import Column, FieldCopy, ResolvedMapping, resolve_mapping
from rules.fields import EVENT_FIELDS

PREFIX: Final = "engine_source_"  # every trigger and function of ours starts so


@dataclass
class AttachReport:
    """What ``attach`` did, for ``engine migrate`` to print."""

    removed: list[str] = field(default_factory=list)  # triggers there before (replaced)
    attached: list[str] = field(default_factory=list)  # "trigger on schema.table"
    fields: list[str] = field(default_factory=list)  # "events.chain_id <- chainId"
    warnings: list[str] = field(default_factory=list)
    checkpoints_copied: int = 0
    events_backfilled: int = 0


def attached_triggers(conn: db.Connection) -> list[str]:
    """The source triggers in the database now, as ``trigger on schema.table``."""
    return [
        f"{trigger} on {schema}.{table}"
        for schema, table, trigger in db.fetch_all(conn, "source_triggers_attached")
    ]


def detach(conn: db.Connection) -> list[str]:
    """Drop every source trigger and function, wherever they are; returns the triggers."""
    removed = []
    for schema, table, trigger in db.fetch_all(conn, "source_triggers_attached"):
        conn.execute(
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                sql.Identifier(trigger), sql.Identifier(schema, table)
            )
        )
        removed.append(f"{trigger} on {schema}.{table}")
    for schema, function in db.fetch_all(conn, "source_functions_attached"):
        conn.execute(
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(schema, function))
        )
    return removed


def attach(conn: db.Connection, source: SourceSettings, *, backfill: bool = False) -> AttachReport:
    """Replace whatever source triggers exist by those of ``source`` (in the caller's
    transaction, so the old ones go only if the new ones come).  ``backfill`` also
    copies the source rows that are not in ``events`` yet."""
    report = AttachReport(removed=detach(conn))
    casts = {(s, t): ctx for s, t, ctx in db.fetch_all(conn, "source_casts")}
    events = _our_table(conn, "events")
    mapping = _resolve(conn, source.events, events, tuple(EVENT_FIELDS), "id", casts)
    _record_fields(report, "events", mapping)
    try:
        report.attached += _attach_events(conn, source.events, events, mapping)
        if backfill:
            report.events_backfilled = _copy_missing_events(conn, source.events, events, mapping)
        if source.checkpoints is not None:
            checkpoints = _our_table(conn, "checkpoints")
            cp_mapping = _resolve(
                conn, source.checkpoints, checkpoints, CHECKPOINT_FIELDS, "chain_id", casts
            )
            _record_fields(report, "checkpoints", cp_mapping)
            report.attached += _attach_checkpoints(
                conn, source.checkpoints, checkpoints, cp_mapping
            )
            report.checkpoints_copied = _copy_checkpoints(
                conn, source.checkpoints, checkpoints, cp_mapping
            )
    except psycopg.errors.InsufficientPrivilege as exc:
        raise source.events.error(
            ("table",),
            f"the database refused: {exc.diag.message_primary}.  The role of database_url "
            "needs USAGE on the source schema and TRIGGER and SELECT on its tables, e.g. "
            f"GRANT TRIGGER, SELECT ON {_quoted(source.events)} TO <engine role>",
        ) from exc
    return report


def _quoted(table: SourceTable) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in (table.schema, table.table))


def _record_fields(report: AttachReport, target: str, mapping: ResolvedMapping) -> None:
    for copy in mapping.copies:
        how = "" if copy.explicit else " (same name)"
        report.fields.append(f"{target}.{copy.field} <- {copy.column}{how}")
    report.warnings += mapping.warnings


@dataclass(frozen=True)
class _OurTable:
    name: str
    ident: sql.Identifier  # schema-qualified: the indexer's search_path is not ours
    schema: str
    columns: tuple[Column, ...]


def _our_table(conn: db.Connection, name: str) -> _OurTable:
    row = db.fetch_one(conn, "source_schema_of", name)
    assert row is not None, f"{name} is created by the migrations"
    schema = str(row[0])
    return _OurTable(name, sql.Identifier(schema, name), schema, _columns(conn, schema, name))


def _columns(conn: db.Connection, schema: str, table: str) -> tuple[Column, ...]:
    return tuple(
        Column(name, int(oid), type_sql, nullable, has_default, numeric)
        for name, oid, type_sql, nullable, has_default, numeric in db.fetch_all(
            conn, "source_columns", schema, table
        )
    )


def _resolve(
    conn: db.Connection,
    source: SourceTable,
    target: _OurTable,
    fields: Sequence[str],
    key_field: str,
    casts: dict[tuple[int, int], str],
) -> ResolvedMapping:
    row = db.fetch_one(conn, "source_table_type", source.schema, source.table)
    if row is None:
        alike = [r[0] for r in db.fetch_all(conn, "source_table_lookalikes", *_parts(source))]
        hint = f"; did you mean {' or '.join(alike)}? Names are case-sensitive" if alike else ""
        raise source.error(
            ("table",),
            f"there is no table {source.name} (or the role of database_url may not see it){hint}."
            "  Start the indexer first: it creates its tables",
        )
    if row[0] != "BASE TABLE":
        raise source.error(("table",), f"{source.name} is a {str(row[0]).lower()}, not a table")
    ours = db.fetch_one(conn, "source_table_is_ours", *_parts(source))
    if ours and ours[0]:
        raise source.error(("table",), f"{source.name} is the engine's own table")
    return resolve_mapping(
        source,
        _columns(conn, source.schema, source.table),
        target.name,
        target.columns,
        fields,
        key_field,
        casts,
    )


def _parts(source: SourceTable) -> tuple[str, str]:
    return source.schema, source.table


def _casts_from(copies: Sequence[FieldCopy], alias: str) -> sql.Composed:
    """``CAST(alias."blockNumber" AS bigint) AS block_number, ...``"""
    return sql.SQL(", ").join(
        sql.SQL("CAST({} AS {}) AS {}").format(
            sql.Identifier(alias, c.column), sql.SQL(c.type_sql), sql.Identifier(c.field)
        )
        for c in copies
    )


def _names(copies: Sequence[FieldCopy], alias: str | None = None) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.Identifier(c.field) if alias is None else sql.Identifier(alias, c.field) for c in copies
    )


def _key_of(mapping: ResolvedMapping, alias: str) -> sql.Composed:
    key = mapping.key
    return sql.SQL("CAST({} AS {})").format(
        sql.Identifier(alias, key.column), sql.SQL(key.type_sql)
    )


def _events_insert(events: _OurTable, m: ResolvedMapping) -> sql.Composed:
    return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM new_rows n;").format(
        events.ident, _names(m.copies), _casts_from(m.copies, "n")
    )


def _events_update(events: _OurTable, m: ResolvedMapping) -> sql.Composed:
    # A transition table does not pair old and new rows; the key does.  A row whose key
    # changed is a delete of the old key and an insert of the new one.
    rest = [c for c in m.copies if c is not m.key]
    key = sql.Identifier(m.key.field)
    gone = sql.SQL("NOT EXISTS (SELECT 1 FROM new_rows n WHERE {} = {})").format(
        _key_of(m, "n"), _key_of(m, "o")
    )
    new = sql.SQL("NOT EXISTS (SELECT 1 FROM old_rows o WHERE {} = {})").format(
        _key_of(m, "o"), _key_of(m, "n")
    )
    return sql.SQL(
        "IF EXISTS (SELECT 1 FROM old_rows o WHERE {gone}) THEN "
        "DELETE FROM {events} e USING old_rows o WHERE e.{key} = {okey} AND {gone}; END IF; "
        "UPDATE {events} e SET ({rest}) = ROW({s_rest}) FROM (SELECT {casts} FROM new_rows n) s "
        "WHERE e.{key} = s.{key} AND ROW({e_rest}) IS DISTINCT FROM ROW({s_rest}); "
        "IF EXISTS (SELECT 1 FROM new_rows n WHERE {new}) THEN "
        "INSERT INTO {events} ({names}) SELECT {casts} FROM new_rows n WHERE {new}; END IF;"
    ).format(
        gone=gone,
        new=new,
        events=events.ident,
        key=key,
        okey=_key_of(m, "o"),
        rest=_names(rest),
        s_rest=_names(rest, "s"),
        e_rest=_names(rest, "e"),
        casts=_casts_from(m.copies, "n"),
        names=_names(m.copies),
    )


def _events_delete(events: _OurTable, m: ResolvedMapping) -> sql.Composed:
    return sql.SQL("DELETE FROM {} e USING old_rows o WHERE e.{} = {};").format(
        events.ident, sql.Identifier(m.key.field), _key_of(m, "o")
    )


def _checkpoints_upsert(
    checkpoints: _OurTable, m: ResolvedMapping, rows: sql.Composable
) -> sql.Composed:
    # One row per chain: ON CONFLICT may not touch a row twice in one statement.
    rest = [c for c in m.copies if c is not m.key]
    return sql.SQL(
        "INSERT INTO {cp} ({names}, updated_at) "
        "SELECT DISTINCT ON (s.{key}) {s_names}, now() FROM (SELECT {casts} FROM {rows} n) s "
        "ORDER BY s.{key}, s.last_block_number DESC "
        "ON CONFLICT ({key}) DO UPDATE SET ({rest}, updated_at) = ROW({excluded}, now());"
    ).format(
        cp=checkpoints.ident,
        names=_names(m.copies),
        key=sql.Identifier(m.key.field),
        s_names=_names(m.copies, "s"),
        casts=_casts_from(m.copies, "n"),
        rows=rows,
        rest=_names(rest),
        excluded=_names(rest, "excluded"),
    )


def _checkpoints_delete(checkpoints: _OurTable, m: ResolvedMapping) -> sql.Composed:
    return sql.SQL("DELETE FROM {} c USING old_rows o WHERE c.{} = {};").format(
        checkpoints.ident, sql.Identifier(m.key.field), _key_of(m, "o")
    )


_REFERENCING: Final = {
    "INSERT": "REFERENCING NEW TABLE AS new_rows",
    "UPDATE": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "DELETE": "REFERENCING OLD TABLE AS old_rows",
}


def _create_function(conn: db.Connection, schema: str, name: str, body: sql.Composed) -> None:
    text = sql.SQL("BEGIN {} RETURN NULL; END").format(body).as_string(conn)
    function = sql.Identifier(schema, name)
    conn.execute(
        sql.SQL(
            "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            "SET search_path = pg_catalog, pg_temp AS {}"
        ).format(function, sql.Literal(text))
    )
    # Creating a trigger needs EXECUTE: nobody else may point one at our tables.
    conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(function))


def _create_trigger(
    conn: db.Connection, source: SourceTable, name: str, operation: str, function: sql.Identifier
) -> str:
    conn.execute(
        sql.SQL(
            "CREATE TRIGGER {} AFTER {} ON {} {} FOR EACH STATEMENT EXECUTE FUNCTION {}()"
        ).format(
            sql.Identifier(name),
            sql.SQL(operation),
            sql.Identifier(source.schema, source.table),
            sql.SQL(_REFERENCING[operation]),
            function,
        )
    )
    return f"{name} on {source.name}"


def _attach_events(
    conn: db.Connection, source: SourceTable, events: _OurTable, m: ResolvedMapping
) -> list[str]:
    attached = []
    for operation, body in (
        ("INSERT", _events_insert(events, m)),
        ("UPDATE", _events_update(events, m)),
        ("DELETE", _events_delete(events, m)),
    ):
        name = f"{PREFIX}events_{operation.lower()}"
        _create_function(conn, events.schema, name, body)
        function = sql.Identifier(events.schema, name)
        attached.append(_create_trigger(conn, source, name, operation, function))
    return attached


def _attach_checkpoints(
    conn: db.Connection, source: SourceTable, checkpoints: _OurTable, m: ResolvedMapping
) -> list[str]:
    upsert, delete = f"{PREFIX}checkpoints_upsert", f"{PREFIX}checkpoints_delete"
    _create_function(
        conn, checkpoints.schema, upsert, _checkpoints_upsert(checkpoints, m, sql.SQL("new_rows"))
    )
    _create_function(conn, checkpoints.schema, delete, _checkpoints_delete(checkpoints, m))
    return [
        _create_trigger(
            conn,
            source,
            f"{PREFIX}checkpoints_{operation.lower()}",
            operation,
            sql.Identifier(checkpoints.schema, delete if operation == "DELETE" else upsert),
        )
        for operation in ("INSERT", "UPDATE", "DELETE")
    ]


def _copy_checkpoints(
    conn: db.Connection, source: SourceTable, checkpoints: _OurTable, m: ResolvedMapping
) -> int:
    """The source's current heads, so the head is known before the indexer's next write."""
    table = sql.Identifier(source.schema, source.table)
    return conn.execute(_checkpoints_upsert(checkpoints, m, table)).rowcount


def _copy_missing_events(
    conn: db.Connection, source: SourceTable, events: _OurTable, m: ResolvedMapping
) -> int:
    return conn.execute(
        sql.SQL(
            "INSERT INTO {events} ({names}) SELECT {casts} FROM {table} n "
            "WHERE NOT EXISTS (SELECT 1 FROM {events} e WHERE e.{key} = {nkey})"
        ).format(
            events=events.ident,
            names=_names(m.copies),
            casts=_casts_from(m.copies, "n"),
            table=sql.Identifier(source.schema, source.table),
            key=sql.Identifier(m.key.field),
            nkey=_key_of(m, "n"),
        )
    ).rowcount

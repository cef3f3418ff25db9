"""Which column of an indexer's table fills which column of ours, and whether it may.

Pure: given the two tables' columns (read by engine.source_tables) and the casts the
database knows, it resolves a ``source:`` mapping or raises a ConfigError that names the
config line, the field, the source table's columns and what to change.

A field left out of ``columns`` is taken from the source column spelled like the field
(``block_number``) or like its camelCase (``blockNumber``, how Ponder names columns),
exactly: PostgreSQL keeps ``"Owner"`` and ``owner`` apart, so a case-insensitive guess
could pick the wrong one.  ``engine migrate`` prints what every field came from.

A type fits when the copy can never fail on a value: the same type, an implicit cast
(integer into bigint or numeric), anything into text; or a numeric type into a narrower
one (Ponder stores bigints as numeric(78,0)), which fails only for a value that does not
fit our column.  Text into a number is refused: one malformed value would make the
indexer's own insert fail.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from engine.source_config import SourceTable

TEXT_TYPE_OIDS = frozenset({25, 1043})  # text, varchar: every type has a text form
_SAFE_TYPE_SQL = re.compile(r"^[a-z][a-z0-9 _(),]*$")


@dataclass(frozen=True)
class Column:
    """A column of a table as the catalog describes it (types resolved past domains)."""

    name: str
    type_oid: int
    type_sql: str  # format_type(): "bigint", "numeric(78,0)", "timestamp with time zone"
    nullable: bool
    has_default: bool = False
    numeric: bool = False  # typcategory 'N'


@dataclass(frozen=True)
class FieldCopy:
    """One column of ours and the source column it is copied from."""

    field: str
    column: str
    type_sql: str  # our column's type: the copy casts to it
    explicit: bool  # named in the config (else found by its name)


@dataclass(frozen=True)
class ResolvedMapping:
    copies: tuple[FieldCopy, ...]
    key: FieldCopy  # the copy of the row's identity (events.id, checkpoints.chain_id)
    warnings: tuple[str, ...]


def camel_case(name: str) -> str:
    """``block_number`` -> ``blockNumber`` (``tag1`` stays ``tag1``)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def resolve_mapping(
    source: SourceTable,
    source_columns: Sequence[Column],
    target_table: str,
    target_columns: Sequence[Column],
    fields: Collection[str],
    key_field: str,
    casts: Mapping[tuple[int, int], str],
) -> ResolvedMapping:
    """The copies for ``fields`` of ``target_table`` from ``source``'s columns.

    ``casts`` maps (source type, target type) to pg_cast's castcontext ('i', 'a', 'e').
    """
    by_name = {c.name: c for c in source_columns}
    listing = ", ".join(sorted(by_name)) or "none"
    targets = {c.name: c for c in target_columns}
    copies: list[FieldCopy] = []
    warnings: list[str] = []
    for name in fields:
        target = targets.get(name)
        if target is None:
            continue
        explicit = name in source.columns
        column = source.columns.get(name) or _found_by_name(name, by_name)
        if column is None:
            if not target.nullable and not target.has_default:
                raise source.error(
                    ("columns", name) if explicit else ("columns",),
                    f"{target_table}.{name} may not be NULL and {source.name} has no column "
                    f"{name} nor {camel_case(name)}: map it, e.g. columns: {{{name}: COLUMN}}"
                    f" (the columns of {source.name}: {listing})",
                )
            continue
        found = by_name.get(column)
        if found is None:
            raise source.error(
                ("columns", name),
                f"{source.name} has no column {column!r} (its columns: {listing}); names are "
                "matched exactly, as PostgreSQL stores them",
            )
        if not _fits(found, target, casts):
            raise source.error(
                ("columns", name),
                f"{source.name}.{column} is {found.type_sql} and {target_table}.{name} is "
                f"{target.type_sql}: a value could fail to convert and the indexer's insert "
                "would fail with it; map a column of a fitting type (a generated column of "
                "the source table can convert it)",
            )
        if not _SAFE_TYPE_SQL.match(target.type_sql):
            raise ValueError(f"unexpected type {target.type_sql!r} of {target_table}.{name}")
        if found.nullable and not target.nullable and not target.has_default:
            warnings.append(
                f"{source.name}.{column} may be NULL but {target_table}.{name} may not: a row "
                f"with a NULL {column} will make the indexer's statement fail"
            )
        copies.append(FieldCopy(name, column, target.type_sql, explicit))
    key = next((c for c in copies if c.field == key_field), None)
    if key is None:  # pragma: no cover - the key field is NOT NULL, refused above
        raise source.error(("columns",), f"map {key_field}")
    return ResolvedMapping(tuple(copies), key, tuple(warnings))


def _found_by_name(name: str, by_name: Mapping[str, Column]) -> str | None:
    for candidate in (name, camel_case(name)):
        if candidate in by_name:
            return candidate
    return None


def _fits(source: Column, target: Column, casts: Mapping[tuple[int, int], str]) -> bool:
    if source.type_oid == target.type_oid or target.type_oid in TEXT_TYPE_OIDS:
        return True
    context = casts.get((source.type_oid, target.type_oid))
    if context == "i":
        return True
    return context is not None and source.numeric and target.numeric

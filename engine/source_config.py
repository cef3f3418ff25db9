"""The ``source:`` section: an indexer's own tables, read as ``events`` and ``checkpoints``.

Only the shape is checked here (no database): the table is ``SCHEMA.TABLE`` and every
mapped field is one the engine knows.  Whether the tables and columns exist, and whether
their types fit, is checked by ``engine migrate`` (engine.source_tables), which is why
the line of each key is kept: its errors name the config file and line too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from rules.errors import ConfigError
from rules.fields import EVENT_FIELDS

#: The fields of ``checkpoints`` a source checkpoint table may fill (updated_at: now()).
CHECKPOINT_FIELDS: Final = ("chain_id", "last_block_number", "last_block_hash")

# (keys, expected, got) -> the error naming the config file and the key's line.
Fail = Callable[[tuple[str, ...], str, Any], ConfigError]


@dataclass(frozen=True)
class SourceTable:
    """One table of the indexer and how its columns fill one of ours."""

    schema: str
    table: str
    # Field of ours -> column of theirs, as written in the config; the fields left out
    # are found by name when `engine migrate` reads the table (engine.source_mapping).
    columns: Mapping[str, str] = field(default_factory=dict)
    key: tuple[str, ...] = ("source",)  # where it is in the config, for errors
    config_file: str | None = None
    lines: Mapping[tuple[str, ...], int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``schema.table`` as the user wrote it."""
        return f"{self.schema}.{self.table}"

    def error(self, keys: tuple[str, ...], message: str) -> ConfigError:
        """A ConfigError at the line of ``source.<keys>`` (or the nearest key above it)."""
        path = (*self.key, *keys)
        line = None
        while path and line is None:
            line = self.lines.get(path)
            path = path[:-1]
        dotted = ".".join((*self.key, *keys))
        return ConfigError(f"{dotted}: {message}", file=self.config_file, line=line)


@dataclass(frozen=True)
class SourceSettings:
    """``source:``: the indexer's event table and, optionally, its checkpoint table."""

    events: SourceTable
    checkpoints: SourceTable | None = None


def read_source(
    value: Any,
    fail: Fail,
    *,
    config_file: str | None = None,
    lines: Mapping[tuple[str, ...], int] | None = None,
) -> SourceSettings | None:
    """The ``source:`` section, or None when the config has none."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise fail(("source",), "a mapping with table and columns", value)
    for key in value:
        if key not in ("table", "columns", "checkpoints"):
            raise fail(("source", str(key)), "one of table, columns, checkpoints", key)
    known_lines = dict(lines or {})
    events = _table(value, ("source",), tuple(EVENT_FIELDS), fail, config_file, known_lines)
    checkpoints = None
    if value.get("checkpoints") is not None:
        raw = value["checkpoints"]
        if not isinstance(raw, Mapping):
            raise fail(("source", "checkpoints"), "a mapping with table and columns", raw)
        for key in raw:
            if key not in ("table", "columns"):
                raise fail(("source", "checkpoints", str(key)), "one of table, columns", key)
        checkpoints = _table(
            raw, ("source", "checkpoints"), CHECKPOINT_FIELDS, fail, config_file, known_lines
        )
    return SourceSettings(events=events, checkpoints=checkpoints)


def _table(
    value: Mapping[str, Any],
    key: tuple[str, ...],
    fields_known: tuple[str, ...],
    fail: Fail,
    config_file: str | None,
    lines: Mapping[tuple[str, ...], int],
) -> SourceTable:
    name = value.get("table")
    parts = name.split(".") if isinstance(name, str) else []
    if len(parts) != 2 or not all(parts):
        raise fail(
            (*key, "table"),
            "SCHEMA.TABLE, names as PostgreSQL stores them (e.g. ponder.Event)",
            name,
        )
    columns = value.get("columns") or {}
    if not isinstance(columns, Mapping):
        raise fail((*key, "columns"), "a mapping of our field to the source column", columns)
    mapping: dict[str, str] = {}
    for our_field, column in columns.items():
        if our_field not in fields_known:
            raise fail(
                (*key, "columns", str(our_field)), f"one of {', '.join(fields_known)}", our_field
            )
        if not isinstance(column, str) or not column:
            raise fail(
                (*key, "columns", str(our_field)), "a column name of the source table", column
            )
        mapping[str(our_field)] = column
    return SourceTable(
        schema=parts[0],
        table=parts[1],
        columns=mapping,
        key=key,
        config_file=config_file,
        lines=lines,
    )

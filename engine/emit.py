"""``engine emit``: insert one event, for trying rules out by hand."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

import sql
from rules.errors import EngineError
from rules.fields import EVENT_FIELDS, INTEGER

#: Column -> the type an argument is parsed as, in the order of the insert_event query:
#: every event column but created_at (the insert time, the table's default).  NUMERIC
#: is passed as text, which PostgreSQL parses exactly.
EVENT_COLUMNS: dict[str, type] = {
    name: int if kind == INTEGER else str
    for name, kind in EVENT_FIELDS.items()
    if name != "created_at"
}
DEFAULT_CHAIN_ID = 84532


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` arguments, typed by column; unknown columns are an error."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise EngineError(f"expected key=value, got {pair!r}")
        if key not in EVENT_COLUMNS:
            known = ", ".join(EVENT_COLUMNS)
            raise EngineError(f"unknown event field {key!r}; fields are: {known}")
        kind = EVENT_COLUMNS[key]
        if raw in ("", "null"):
            fields[key] = None
        elif kind is int:
            try:
                fields[key] = int(raw)
            except ValueError:
                raise EngineError(f"{key} must be an integer (got {raw!r})") from None
        else:
            fields[key] = raw
    return fields


def build_event(registry: str, event_type: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A complete row: what was given plus plausible block data."""
    now = int(time.time())
    event: dict[str, Any] = {
        "chain_id": DEFAULT_CHAIN_ID,
        "block_number": now,
        "block_hash": "0x" + secrets.token_hex(32),
        "transaction_hash": "0x" + secrets.token_hex(32),
        "log_index": secrets.randbelow(1000),
        "timestamp": now,
        **fields,
        "registry": registry,
        "event_type": event_type,
    }
    event.setdefault("id", f"{event['chain_id']}-{event['block_number']}-{event['log_index']}")
    return event


def insert_event(conn: sql.Connection, event: Mapping[str, Any]) -> str:
    row = sql.fetch_one(conn, "insert_event", *(event.get(c) for c in EVENT_COLUMNS))
    assert row is not None
    return str(row[0])

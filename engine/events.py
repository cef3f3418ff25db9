"""From a database row to the event mapping rules see: plain, JSON-safe values."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

INTERNAL = ("_txid", "_seq")


def plain(value: Any) -> Any:
    """A JSON-safe equivalent: NUMERIC becomes int (when integral) or float, times ISO text."""
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def event_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The event as rules and templates see it (cursor columns removed)."""
    event = {}
    for key, value in row.items():
        if key in INTERNAL:
            continue
        event[key] = plain(value) if isinstance(value, Decimal | dt.datetime) else value
    return event


def _default(value: Any) -> Any:
    converted = plain(value)
    if converted is value:
        return str(value)
    return converted


def to_json(value: Any) -> str:
    """Compact JSON for jsonb columns; anything unexpected becomes its text."""
    return json.dumps(value, separators=(",", ":"), default=_default, ensure_ascii=False)

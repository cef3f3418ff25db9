"""The columns of an event row, their types, and the cheap value normalisations rules share.

Load-time checks use the column types to refuse `score: {lt: "abc"}`; run-time code uses
the helpers here to compare values without ever raising on hostile input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Final

TEXT: Final = "text"
INTEGER: Final = "integer"
NUMBER: Final = "number"

#: The columns of a rule's ``on`` (the index's key: chain, registry, event type).
ON_KEYS: Final = ("chain_id", "registry", "event_type")

#: Every column of the ``events`` table a rule may refer to, with its JSON type.
EVENT_FIELDS: Final[dict[str, str]] = {
    "id": TEXT,
    "chain_id": INTEGER,
    "block_number": INTEGER,
    "block_hash": TEXT,
    "transaction_hash": TEXT,
    "log_index": INTEGER,
    "registry": TEXT,
    "event_type": TEXT,
    "agent_id": INTEGER,
    "timestamp": INTEGER,
    "owner": TEXT,
    "token_uri": TEXT,
    "metadata_key": TEXT,
    "metadata_value": TEXT,
    "client_address": TEXT,
    "feedback_index": INTEGER,
    "score": INTEGER,
    "tag1": TEXT,
    "tag2": TEXT,
    "file_uri": TEXT,
    "file_hash": TEXT,
    "validator_address": TEXT,
    "request_hash": TEXT,
    "response": INTEGER,
    "response_uri": TEXT,
    "response_hash": TEXT,
    "tag": TEXT,
    "created_at": TEXT,
    "value": NUMBER,
    "value_decimals": INTEGER,
    "endpoint": TEXT,
    "request_uri": TEXT,
}

NUMERIC_TYPES: Final = frozenset({INTEGER, NUMBER})


def is_number(value: Any) -> bool:
    """True for a finite int, float or Decimal that is not a bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float | Decimal):
        return math.isfinite(value)
    return False


def as_json_number(value: Any) -> int | float | None:
    """``value`` as a JSON-safe number, or None when it is not a finite number.

    Decimals (what PostgreSQL ``numeric`` becomes) are turned into int or float so that
    state and template contexts stay JSON-serialisable.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    return None


def fold_hex(value: Any) -> Any:
    """Lower-case ``0x…`` strings so addresses and hashes compare case-insensitively.

    Only the prefix is tested: lower-casing any 0x-string is harmless for equality and far
    cheaper than validating the hex digits on every event.
    """
    if type(value) is str and value[:2] in ("0x", "0X"):
        return value.lower()
    return value


def suggest(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix for a near miss, or ''."""
    import difflib  # imported lazily: only error paths need it

    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""

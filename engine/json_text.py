"""JSON text for the json(b) columns (firing contexts, rule states, rule documents).

Whatever it is given, it must never produce text PostgreSQL refuses: one refused value
would fail the whole batch it belongs to.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

# A \u0000 escape in JSON text, not one whose backslash is itself escaped (\\u0000).
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def json_safe_value(value: Any) -> Any:
    """A JSON-safe equivalent: NUMERIC becomes int (when integral) or float, times ISO text.

    NUMERIC's NaN and ±Infinity become the text "NaN" / "Infinity" / "-Infinity": JSON
    (and so jsonb) has no such numbers, and as text they never satisfy a comparison.
    """
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value).replace("sNaN", "NaN")
        if value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _default(value: Any) -> Any:
    converted = json_safe_value(value)
    if converted is value:
        return str(value)
    return converted


#: orjson hands datetimes and dataclasses to ``_default`` as json.dumps does (not its own
#: formats); it writes non-finite floats as null by itself.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def to_json(value: Any) -> str:
    """Compact JSON for json(b) columns; anything unexpected becomes its text.

    Never emits what PostgreSQL refuses: non-finite floats become null, NUL characters
    U+FFFD.  orjson writes it, being much faster on a firing's context; what it refuses
    (integers beyond 64 bits, keys that are not strings) takes json.dumps.  Both write
    the same values (orjson spells 1e-05 0.00001).
    """
    try:
        text = orjson.dumps(value, default=_default, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        text = _stdlib_json(value)
    # PostgreSQL refuses \u0000 (a rule can write "\0" in YAML): U+FFFD keeps the batch alive.
    return _NUL_ESCAPE.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


def _stdlib_json(value: Any) -> str:
    try:
        return json.dumps(
            value, separators=(",", ":"), default=_default, ensure_ascii=False, allow_nan=False
        )
    except ValueError:
        return _stdlib_json(_finite(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value

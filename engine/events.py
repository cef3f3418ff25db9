"""From a database row to the event mapping rules see: plain, JSON-safe values."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from operator import itemgetter
from typing import Any

import orjson

from rules.fields import EVENT_FIELDS, TEXT
from sql import query

INTERNAL = ("_unread", "_txid", "_seq")
# A \u0000 escape in JSON text, not one whose backslash is itself escaped (\\u0000).
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


#: What the evaluator itself reads from every row, whatever the rules name: the id (action
#: rows, logs), the kind (the index, the unusual-row check) and the block time (lag).
EVALUATOR_FIELDS = ("id", "chain_id", "registry", "event_type", "timestamp")


#: The event columns that are text in the table (created_at is a timestamptz that rules
#: see as ISO text).
_TEXT_COLUMNS = frozenset(n for n, kind in EVENT_FIELDS.items() if kind == TEXT) - {"created_at"}


def columns_read(columns: tuple[str, ...] | None) -> tuple[str, ...]:
    """The event columns a read for ``columns`` selects, in table order (None: all)."""
    if columns is None:
        return tuple(EVENT_FIELDS)
    wanted = set(columns) | set(EVALUATOR_FIELDS)
    unknown = wanted - set(EVENT_FIELDS)
    if unknown:
        raise ValueError(f"not event columns: {sorted(unknown)}")
    return tuple(name for name in EVENT_FIELDS if name in wanted)


@lru_cache(maxsize=64)
def read_batch_query(columns: tuple[str, ...] | None) -> str:
    """sql/queries.sql's read_batch, selecting only ``columns`` (None: every column).

    The names come from rules.fields.EVENT_FIELDS, never from input: anything else is
    refused.  The cursor columns stay last (see events_from_rows).
    """
    full = query("read_batch")
    if columns is None:
        return full
    wanted = columns_read(columns)
    head, cursor, tail = full.partition("txid::text AS _txid")
    comments, select, _ = head.partition("SELECT ")
    if not select or not cursor:
        raise ValueError("sql/queries.sql read_batch no longer has the expected shape")
    names = ", ".join(f'"{name}"' for name in wanted)
    # A huge text in a column not read is still worth its log line (see unusual_rows):
    # octet_length does not decompress a stored value, so this costs next to nothing.
    unread = [n for n in EVENT_FIELDS if n in _TEXT_COLUMNS and n not in wanted]
    checks = ", ".join(
        f'CASE WHEN octet_length("{n}") > {LARGE_TEXT_CHARS} THEN CASE WHEN'
        f' length("{n}") > {LARGE_TEXT_CHARS} THEN \'{n} is \' || length("{n}")'
        " || ' characters' END END"
        for n in unread
    )
    long_text = f"nullif(concat_ws('; ', {checks}), '')" if unread else "NULL::text"
    return f"{comments}SELECT {names},\n       {long_text} AS _unread, {cursor}{tail}"


def plain(value: Any) -> Any:
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


def events_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The events as rules and templates see them (cursor columns removed), for a batch.

    Decides per column, not per value, what to convert: a column's values all have the
    column's type, so the first non-NULL value says whether it holds Decimals or
    datetimes; the others (most of the 31) are copied as they are.  A quarter of the
    evaluator's time went to checking every value.  Live evaluation (asyncpg records)
    and the backtest (psycopg dict rows) share it, so both see the same values.
    """
    if not rows:
        return []
    names = list(rows[0].keys())
    keep = [i for i, name in enumerate(names) if name not in INTERNAL]
    keys = [names[i] for i in keep]
    if keep == list(range(len(keep))):  # the cursor columns come last (read_batch)
        # zip stops before the cursor columns
        events = [dict(zip(keys, row.values(), strict=False)) for row in rows]
    else:
        kept = set(keep)
        events = [
            dict(zip(keys, [v for i, v in enumerate(row.values()) if i in kept], strict=True))
            for row in rows
        ]
    for key in keys:
        sample = next((e[key] for e in events if e[key] is not None), None)
        if isinstance(sample, Decimal | dt.datetime):
            for event in events:
                value = event[key]
                if value is not None:
                    event[key] = plain(value)
    return events


def _default(value: Any) -> Any:
    converted = plain(value)
    if converted is value:
        return str(value)
    return converted


#: orjson hands datetimes and dataclasses to ``_default`` as json.dumps did (not its own
#: formats); it writes non-finite floats as null by itself.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def to_json(value: Any) -> str:
    """Compact JSON for json(b) columns; anything unexpected becomes its text.

    Never emits what PostgreSQL refuses, which would fail the whole batch: non-finite
    floats become null, NUL characters U+FFFD.  orjson writes it (a firing's context in
    0.2 µs against 2.6 µs); what it refuses (integers beyond 64 bits, keys that are not
    strings) takes json.dumps.  Both write the same values (orjson spells 1e-05 0.00001).
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


KNOWN_EVENT_TYPES = {
    "identity": frozenset({"Registered", "MetadataSet", "URIUpdated", "Transfer"}),
    "reputation": frozenset({"NewFeedback", "FeedbackRevoked", "ResponseAppended"}),
    "validation": frozenset({"ValidationRequest", "ValidationResponse"}),
}
LARGE_TEXT_CHARS = 64 * 1024


def unusual(event: Mapping[str, Any]) -> list[str]:
    """What looks wrong in a row (unknown registry or type, huge text): worth one log line.

    Such rows are still evaluated; rules that cannot use them simply do not match.
    """
    found = unusual_events([event])
    return found[0][1] if found else []


def unusual_events(
    events: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None
) -> list[tuple[int, list[str]]]:
    """``unusual`` for a batch: (position, problems) of each row with any, in order.

    Text sizes are checked per column, not per value (a batch's rows share their
    columns): the largest value of each column is found in C, and only a column holding
    a huge value is looked at row by row.  Checking 31 values of every row was a tenth
    of the evaluator's time on a batch where every row fires.
    """
    found: dict[int, list[str]] = {}
    kinds = [(event.get("registry"), event.get("event_type")) for event in events]
    try:  # a batch holds a handful of distinct kinds: judge each once
        odd = {kind: problem for kind in set(kinds) if (problem := _kind_problem(*kind))}
    except TypeError:  # an unhashable registry or type (not from a database row)
        odd = None
    for i, kind in enumerate(kinds):
        if odd is None:
            problem = _kind_problem(*kind)
        elif kind not in odd:
            continue
        else:
            problem = odd[kind]
        if problem:
            found[i] = [problem]
    # ``columns``: every event's keys, when the caller knows they are the same for all
    # (events_from_rows); else each key of any event is looked at.
    keys = columns if columns is not None else dict.fromkeys(k for e in events for k in e)
    for key in keys:
        try:
            values = list(map(itemgetter(key), events))
        except KeyError:  # rows with columns of their own
            values = [event.get(key) for event in events]
        try:
            largest = max(map(len, filter(None, values)), default=0)
        except TypeError:  # not a text column (numbers): only its text values count
            largest = max(map(len, [v for v in values if type(v) is str]), default=0)
        if largest <= LARGE_TEXT_CHARS:
            continue
        for i, value in enumerate(values):
            if type(value) is str and len(value) > LARGE_TEXT_CHARS:
                found.setdefault(i, []).append(f"{key} is {len(value)} characters")
    return sorted(found.items())


def unusual_rows(
    rows: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]
) -> list[tuple[int, list[str]]]:
    """``unusual_events`` for the events of ``rows`` (as events_from_rows made them),
    plus what the read query found in the columns it did not read (``_unread``)."""
    if not events:
        return []
    # events_from_rows gives every event of the batch the same columns
    found = dict(unusual_events(events, columns=list(events[0])))
    if "_unread" in rows[0]:
        for i, row in enumerate(rows):
            if text := row["_unread"]:
                found.setdefault(i, []).extend(text.split("; "))
    return sorted(found.items())


def _kind_problem(registry: Any, event_type: Any) -> str | None:
    types = KNOWN_EVENT_TYPES.get(registry) if isinstance(registry, str) else None
    if types is None:
        return f"unknown registry {str(registry)[:40]!r}"
    if not isinstance(event_type, str) or event_type not in types:
        return f"unknown {registry} event type {str(event_type)[:40]!r}"
    return None

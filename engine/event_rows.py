"""Event rows as rules see them: the query that reads a batch, and rows turned into events.

Live evaluation (asyncpg records) and the backtest (psycopg dict rows) both go through
``events_from_rows``, so a backtest sees exactly the values the live engine sees.  The
read query is filled in only from the names of rules.fields.EVENT_FIELDS, never from
input.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

from engine.json_text import json_safe_value
from engine.unusual_rows import LARGE_TEXT_CHARS
from rules.fields import EVENT_FIELDS, TEXT
from sql import query

#: The columns read_batch adds after the event's: the huge texts of columns not read
#: (engine.unusual_rows), whether the id may have been evaluated before (engine.reorgs)
#: and the cursor position.  Never part of an event.
INTERNAL = ("_unread", "_earlier", "_txid", "_seq")

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


#: `_earlier` of a read row: an earlier row of its id exists, or the id was retracted.
#: Only such a row can be a rewrite of an evaluated event (engine.reorgs checks those).
EARLIER_ROW = (
    "(EXISTS (SELECT 1 FROM events p"
    " WHERE p.id = events.id AND (p.txid, p.seq) < (events.txid, events.seq))"
    " OR EXISTS (SELECT 1 FROM event_reorgs r"
    " WHERE r.event_id = events.id AND r.kind = 'retraction'))"
)


@lru_cache(maxsize=64)
def read_batch_query(
    columns: tuple[str, ...] | None, name: str = "read_batch", *, probe_rewrites: bool = True
) -> str:
    """sql/queries.sql's read_batch template (or ``name``, one with the same
    placeholders), selecting ``columns`` (None: every column).

    Anything that is not an event column is refused.  The cursor columns stay last (see
    events_from_rows).  ``probe_rewrites`` False: `_earlier` is NULL (every row is then a
    suspect to engine.reorgs): the plain read `engine bench` measures as its baseline.
    """
    wanted = columns_read(columns)
    # A huge text in a column not read is still worth its log line (engine.unusual_rows):
    # octet_length does not decompress a stored value, so this costs next to nothing.
    unread = [n for n in EVENT_FIELDS if n in _TEXT_COLUMNS and n not in wanted]
    checks = ", ".join(
        f'CASE WHEN octet_length("{n}") > {LARGE_TEXT_CHARS} THEN CASE WHEN'
        f' length("{n}") > {LARGE_TEXT_CHARS} THEN \'{n} is \' || length("{n}")'
        " || ' characters' END END"
        for n in unread
    )
    return query(name).format(
        columns=", ".join(f'"{name}"' for name in wanted),
        unread_checks=f"nullif(concat_ws('; ', {checks}), '')" if unread else "NULL::text",
        earlier=EARLIER_ROW if probe_rewrites else "NULL::boolean",
    )


def events_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The events as rules and templates see them (INTERNAL columns removed), for a batch.

    Decides per column, not per value, what to convert: a column's values all have the
    column's type, so the first non-NULL value says whether it holds Decimals or
    datetimes; the others (most of the columns) are copied as they are.  Checking every
    value would cost a large share of the evaluation.
    """
    if not rows:
        return []
    names = list(rows[0].keys())
    keep = [i for i, name in enumerate(names) if name not in INTERNAL]
    keys = [names[i] for i in keep]
    if keep == list(range(len(keep))):  # the internal columns come last (read_batch)
        # zip stops before the internal columns
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
                    event[key] = json_safe_value(value)
    return events

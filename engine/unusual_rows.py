"""Event rows that look malformed: an unknown registry or event type, a huge text.

Each is worth one log line and a count in /metrics, nothing more: such rows are still
evaluated (rules that cannot use them simply do not match).  Nothing here may raise on
a row, whatever it holds, or one odd row would stop every event behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from rules.fields import EVENT_FIELDS

KNOWN_EVENT_TYPES = {
    "identity": frozenset({"Registered", "MetadataSet", "URIUpdated", "Transfer"}),
    "reputation": frozenset({"NewFeedback", "FeedbackRevoked", "ResponseAppended"}),
    "validation": frozenset({"ValidationRequest", "ValidationResponse"}),
}
#: A text longer than this is reported (also in the columns a read leaves out, see
#: engine.event_rows.read_batch_query).
LARGE_TEXT_CHARS = 64 * 1024


def unusual(event: Mapping[str, Any]) -> list[str]:
    """What looks wrong in one row: ``unusual_events`` for a batch of one."""
    found = unusual_events([event])
    return found[0][1] if found else []


def unusual_events(
    events: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None
) -> list[tuple[int, list[str]]]:
    """(position, problems) of each event of a batch with any, in order.

    Text sizes are checked per column, not per value (a batch's rows share their
    columns): the largest value of each column is found in C, and only a column holding
    a huge value is looked at row by row, so a batch of ordinary rows costs little.
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
    # A read of every column has nothing unread (its _unread is NULL): no row to look at.
    if "_unread" in rows[0] and len(events[0]) < len(EVENT_FIELDS):
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

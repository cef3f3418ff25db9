"""Small validators shared by the parts of the rule compiler: keys, numbers, durations.

Each reports a mistake to the Problems sink and returns None instead of raising, so the
compiler can go on and find the next mistake.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from rules.durations import DurationError, parse_duration
from rules.fields import EVENT_FIELDS, NUMERIC_TYPES, is_number, suggest
from rules.reporting import Problems, shown
from rules.yaml_source import Path


def mapping_at(
    spec: Any, sink: Problems, path: Path, what: str = "a mapping"
) -> Mapping[str, Any] | None:
    """``spec`` when it is a mapping; otherwise report and return None."""
    if isinstance(spec, Mapping):
        return spec
    sink.at(path, f"must be {what} (got {shown(spec)})")
    return None


def check_keys(
    spec: Mapping[str, Any],
    allowed: Collection[str],
    sink: Problems,
    path: Path,
    *,
    required: Collection[str] = (),
) -> bool:
    """Report unknown keys (with a near-miss hint) and missing required ones."""
    ok = True
    for key in spec:
        if key not in allowed:
            hint = suggest(key, list(allowed))
            sink.at(
                (*path, key),
                f"is not a known key{hint}; expected one of " + ", ".join(sorted(allowed)),
            )
            ok = False
    for key in required:
        if key not in spec:
            sink.at(path, f"needs '{key}'")
            ok = False
    return ok


def one_of(
    spec: Mapping[str, Any], choices: tuple[str, ...], sink: Problems, path: Path
) -> str | None:
    """The single key of ``choices`` present in ``spec``; report none or several."""
    present = [key for key in choices if key in spec]
    if len(present) == 1:
        return present[0]
    if not present:
        sink.at(path, "needs one of " + ", ".join(choices))
    else:
        sink.at(path, "takes only one of " + ", ".join(present))
    return None


def positive_int(
    spec: Mapping[str, Any],
    key: str,
    sink: Problems,
    path: Path,
    *,
    default: int | None = None,
    maximum: int | None = None,
    minimum: int = 1,
) -> int | None:
    """An integer >= ``minimum`` (and <= ``maximum``) at ``spec[key]``."""
    if key not in spec:
        return default
    value = spec[key]
    word = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        sink.at((*path, key), f"must be {word} (got {shown(value)})")
        return None
    if maximum is not None and value > maximum:
        sink.at((*path, key), f"must be at most {maximum} (got {value})")
        return None
    return value


def number(spec: Mapping[str, Any], key: str, sink: Problems, path: Path) -> float | int | None:
    """A finite number at ``spec[key]`` (reports when it is something else)."""
    value = spec.get(key)
    if not is_number(value):
        sink.at((*path, key), f"must be a number (got {shown(value)})")
        return None
    return value


def duration(spec: Mapping[str, Any], key: str, sink: Problems, path: Path) -> int | None:
    """Seconds of the duration at ``spec[key]`` (``30s``, ``15m``, ``2h``, ``7d``)."""
    try:
        return parse_duration(spec.get(key))
    except DurationError as exc:
        sink.at((*path, key), str(exc))
        return None


def event_field(
    spec: Mapping[str, Any], key: str, sink: Problems, path: Path, *, numeric: bool = False
) -> str | None:
    """An event column name at ``spec[key]``; with ``numeric`` it must hold numbers."""
    value = spec.get(key)
    if not isinstance(value, str) or value not in EVENT_FIELDS:
        hint = suggest(value, list(EVENT_FIELDS)) if isinstance(value, str) else ""
        sink.at((*path, key), f"must name an event field (got {shown(value)}){hint}")
        return None
    if numeric and EVENT_FIELDS[value] not in NUMERIC_TYPES:
        sink.at((*path, key), f"must name a numeric field; {value} holds text")
        return None
    return value


def event_field_names(spec: Any, sink: Problems, path: Path) -> tuple[str, ...] | None:
    """``spec`` (one name or a list) as event field names, each reported at its place when
    it is not one, and a name given twice; None when anything was reported."""
    names = spec if isinstance(spec, list) else [spec]
    before = sink.count
    for i, name in enumerate(names):
        where = (*path, i) if isinstance(spec, list) else path
        if not isinstance(name, str) or name not in EVENT_FIELDS:
            hint = suggest(name, EVENT_FIELDS) if isinstance(name, str) else ""
            sink.at(where, f"must name an event field (got {shown(name)}){hint}")
    if len(set(map(str, names))) != len(names):
        sink.at(path, "names a field twice")
    return tuple(names) if sink.count == before else None

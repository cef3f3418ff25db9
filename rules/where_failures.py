"""Which matchers of a rule's `where` an event fails, with the values they compared.

Pure, for explanations (rules.explain): each field matcher is compiled again on its own
from the rule's `where` and run on the event, so every failing operator is named with
the event's value and its operand.  The decision itself stays the compiled rule's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rules.fields import EVENT_FIELDS
from rules.matchers import compile_field
from rules.reporting import Problems, dotted
from rules.yaml_source import LineMap, Path


def failed_matchers(spec: Any, event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The matchers of `where` ``spec`` that do not hold for ``event``, in order."""
    return _failures(spec, event, ("where",))


def _failures(spec: Any, event: Mapping[str, Any], path: Path) -> list[dict[str, Any]]:
    """The matchers of ``spec`` that do not hold for ``event`` (all of them, in order)."""
    if isinstance(spec, list):
        found: list[dict[str, Any]] = []
        for i, item in enumerate(spec):
            found.extend(_failures(item, event, (*path, i)))
        return found
    if not isinstance(spec, Mapping):
        return []
    found = []
    for key, value in spec.items():
        found.extend(_entry_failures(str(key), value, event, (*path, key)))
    return found


def _entry_failures(
    key: str, value: Any, event: Mapping[str, Any], path: Path
) -> list[dict[str, Any]]:
    if key == "all":
        return _failures(value, event, path) if isinstance(value, list) else []
    if key == "any":
        if not isinstance(value, list):
            return []
        branches = [_failures(item, event, (*path, i)) for i, item in enumerate(value)]
        if any(not branch for branch in branches):
            return []
        return [
            {
                "path": dotted(path),
                "operator": "any",
                "message": f"none of its {len(value)} alternatives holds",
                "alternatives": branches,
            }
        ]
    if key == "not":
        if _failures(value, event, path):
            return []
        return [
            {
                "path": dotted(path),
                "operator": "not",
                "message": "what it negates holds",
                "fields": _fields_of(value, event),
            }
        ]
    kind = EVENT_FIELDS.get(key)
    if kind is None:
        return []
    matchers = value if isinstance(value, Mapping) else {"eq": value}
    failed = []
    for op, operand in matchers.items():
        if _holds(key, kind, {op: operand}, event):
            continue
        failed.append(
            {
                "path": dotted(path if not isinstance(value, Mapping) else (*path, op)),
                "field": key,
                "operator": op,
                "expected": operand,
                "actual": event.get(key),
            }
        )
    return failed


def _holds(field_name: str, kind: str, spec: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    predicate = compile_field(field_name, kind, spec, Problems("explain", LineMap()), ())
    try:
        return predicate is not None and bool(predicate(event))
    except Exception:
        return False


def _fields_of(spec: Any, event: Mapping[str, Any]) -> dict[str, Any]:
    """The event's values of the fields ``spec`` names (for a `not` that failed)."""
    found: dict[str, Any] = {}
    items = spec if isinstance(spec, list) else [spec]
    for item in items:
        if not isinstance(item, Mapping):
            continue
        for key, value in item.items():
            if key in EVENT_FIELDS:
                found[str(key)] = event.get(str(key))
            elif key in ("any", "all", "not"):
                found.update(_fields_of(value, event))
    return found


def describe_failure(failure: Mapping[str, Any]) -> str:
    """One failure in a line: ``where.score.lt: score is 90, expected lt 50``."""
    if "field" in failure:
        return (
            f"{failure['path']}: {failure['field']} is {value_text(failure['actual'])},"
            f" expected {failure['operator']} {value_text(failure['expected'])}"
        )
    return f"{failure['path']}: {failure['message']}"


def rounded(value: Any) -> Any:
    """Floats to six decimals, for showing."""
    return round(value, 6) if isinstance(value, float) else value


def value_text(value: Any) -> str:
    """A value as a user reads it: strings quoted, nothing shown as null."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return str(rounded(value))

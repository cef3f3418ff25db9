"""Field matchers (`eq`, `lt`, `in`, `exists`, `matches` …) compiled to closures.

Each closure takes an event row and returns a bool; it never raises, whatever the row
holds.  Semantics a rule author relies on:

- a null field satisfies only ``exists: false`` and ``ne`` / ``not_in`` (operands are
  never null: the loader refuses null operands and points at ``exists: false``);
- a value of the wrong type at run time (a string in ``score``, a list anywhere) satisfies
  no operator except ``exists``: it is treated as "cannot compare", not as "different";
- ``0x…`` strings compare case-insensitively (operands are lower-cased here, once; values
  are lower-cased per event only when they start with 0x);
- ``matches`` runs on RE2, whose time is linear in the value: a pattern runs inside the
  evaluation transaction, so it must never backtrack.  Patterns RE2 cannot run
  (backreferences, lookaround) are refused when the file is loaded.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

import re2

from rules.fields import INTEGER, NUMBER, TEXT, fold_hex, is_number, suggest
from rules.reporting import Problems, shown
from rules.yaml_source import Path

Predicate = Callable[[Mapping[str, Any]], bool]

OPERATORS: Final = (
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "in",
    "not_in",
    "exists",
    "matches",
    "contains",
)
# Spellings other languages use, for a better "did you mean" than string similarity.
_ALIASES: Final = {
    "lte": "le",
    "gte": "ge",
    "neq": "ne",
    "equals": "eq",
    "regex": "matches",
    "nin": "not_in",
    "not in": "not_in",
    "exist": "exists",
    "match": "matches",
}
EQUALITY_OPERATORS: Final = frozenset({"eq", "in"})
MAX_PATTERN_CHARS: Final = 1000

_ORDER: Final = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}


def all_of(predicates: list[Predicate]) -> Predicate:
    """A predicate holding when every one holds; flat, so 10,000 parts cannot recurse."""
    if not predicates:
        return _always
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates
        return lambda event: first(event) and second(event)
    parts = tuple(predicates)

    def every(event: Mapping[str, Any]) -> bool:
        return all(part(event) for part in parts)

    return every


def _always(event: Mapping[str, Any]) -> bool:
    return True


def operand_ok(kind: str, value: Any) -> bool:
    """Whether ``value`` can be compared with a column of type ``kind``."""
    if kind == TEXT:
        return isinstance(value, str)
    return is_number(value)


def normalise_operand(kind: str, value: Any) -> Any:
    """The operand as it is compared at run time (hex folded)."""
    return fold_hex(value) if kind == TEXT else value


def compile_field(field: str, kind: str, spec: Any, sink: Problems, path: Path) -> Predicate | None:
    """Compile the matcher for one field; None (with errors reported) when it is wrong."""
    if not isinstance(spec, Mapping):
        spec = {"eq": spec}
        op_paths: dict[str, Path] = {"eq": path}
    else:
        op_paths = {op: (*path, op) for op in spec}
    if not spec:
        sink.at(path, "needs at least one operator: " + ", ".join(OPERATORS))
        return None
    before = sink.count
    parts = [
        part
        for op, operand in spec.items()
        if (part := _compile_operator(field, kind, op, operand, sink, op_paths[op])) is not None
    ]
    return all_of(parts) if sink.count == before else None


def _compile_operator(
    field: str, kind: str, op: str, operand: Any, sink: Problems, path: Path
) -> Predicate | None:
    if op not in OPERATORS:
        _unknown_operator(op, sink, path)
        return None
    if op == "exists":
        if not isinstance(operand, bool):
            sink.at(path, f"must be true or false (got {shown(operand)})")
            return None
        return _exists(field) if operand else _missing(field)
    if operand is None or (
        op in ("in", "not_in") and isinstance(operand, list) and any(v is None for v in operand)
    ):
        sink.at(path, "cannot compare with null; use `exists: false` to match a missing value")
        return None
    if op in ("matches", "contains"):
        return _compile_text_operator(field, kind, op, operand, sink, path)
    if op in ("in", "not_in"):
        if not isinstance(operand, list):
            sink.at(path, f"must be a list of values (got {shown(operand)})")
            return None
        bad = [v for v in operand if not operand_ok(kind, v)]
        if bad:
            sink.at(
                path,
                f"values must be {_kind_name(kind)} to compare with {field} (got {shown(bad[0])})",
            )
            return None
        values = frozenset(normalise_operand(kind, v) for v in operand)
        return _in(field, kind, values) if op == "in" else _not_in(field, kind, values)
    if not operand_ok(kind, operand):
        sink.at(path, f"must be {_kind_name(kind)} to compare with {field} (got {shown(operand)})")
        return None
    value = normalise_operand(kind, operand)
    if op == "eq":
        return _eq(field, kind, value)
    if op == "ne":
        return _ne(field, kind, value)
    return _ordered(field, kind, _ORDER[op], value)


def _unknown_operator(op: str, sink: Problems, path: Path) -> None:
    if op in _ALIASES:
        sink.at(path, f"is not an operator (did you mean '{_ALIASES[op]}'?)")
    else:
        hint = suggest(op, OPERATORS)
        sink.at(path, f"is not an operator{hint}; use one of " + ", ".join(OPERATORS))


def _compile_text_operator(
    field: str, kind: str, op: str, operand: Any, sink: Problems, path: Path
) -> Predicate | None:
    if kind != TEXT:
        sink.at(path, f"only applies to text fields; {field} is {_kind_name(kind)}")
        return None
    if not isinstance(operand, str):
        sink.at(path, f"must be a string (got {shown(operand)})")
        return None
    if op == "contains":
        return _contains(field, fold_hex(operand) if operand[:2] in ("0x", "0X") else operand)
    if len(operand) > MAX_PATTERN_CHARS:
        sink.at(path, f"regular expression is longer than {MAX_PATTERN_CHARS} characters")
        return None
    try:
        search = linear_search(operand)
    except re2.error as exc:
        sink.at(path, _refusal(operand, exc))
        return None
    return _matches(field, search)


def _refusal(pattern: str, exc: re2.error) -> str:
    """Why a pattern RE2 refused cannot be used, in the words that help its author most."""
    try:
        re.compile(pattern)  # when Python cannot parse it either, its message is the clearer
    except (re.error, OverflowError, RecursionError) as syntax:
        return f"is not a valid regular expression: {syntax}"
    message = exc.args[0] if exc.args else exc
    if isinstance(message, bytes):
        message = message.decode(errors="replace")
    return (
        "uses what the linear-time regular expression engine (RE2) cannot run: "
        f"{message} (backreferences, lookahead and lookbehind are not supported)"
    )


_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.log_errors = False  # rules do no I/O: RE2 would write refusals to stderr


def linear_search(pattern: str) -> Callable[[str], bool]:
    """Whether ``pattern`` is found anywhere in a text, in time linear in the text.

    Raises ``re2.error`` for a pattern RE2 cannot run.  The answer comes from a one-pattern
    ``re2.Set``, which only says whether it matched: much cheaper per event than building
    a match object.  A Set answers "no match" too when its DFA runs out of memory, so it
    also holds the empty pattern, which matches every text: no answer at all means the DFA
    failed, and the full regex (which falls back to RE2's NFA) decides.
    """
    regex = re2.compile(pattern, _RE2_OPTIONS)
    found = re2.Set.SearchSet(_RE2_OPTIONS)
    try:
        found.Add(pattern)
        found.Add("")
        found.Compile()
    except re2.error:  # too large for a Set; the regex alone is still linear
        return lambda text: regex.search(text) is not None

    def search(text: str) -> bool:
        hits = found.Match(text)
        if hits is None:
            return regex.search(text) is not None
        return 0 in hits

    return search


def _kind_name(kind: str) -> str:
    return {TEXT: "a string", INTEGER: "a number", NUMBER: "a number"}[kind]


# --- run-time closures: keep them tiny, they run for every candidate rule on every event.


def _eq(field: str, kind: str, value: Any) -> Predicate:
    if kind == TEXT:
        if not _is_hex(value):  # folding a 0x value cannot make it equal a non-0x operand
            return lambda e: e.get(field) == value
        return lambda e: type(v := e.get(field)) is str and fold_hex(v) == value
    return lambda e: (v := e.get(field)) == value and _num(v)


def _is_hex(value: Any) -> bool:
    return isinstance(value, str) and value[:2] == "0x"


def _ne(field: str, kind: str, value: Any) -> Predicate:
    if kind == TEXT:
        return lambda e: (v := e.get(field)) is None or (type(v) is str and fold_hex(v) != value)
    return lambda e: (v := e.get(field)) is None or (_num(v) and v != value)


def _ordered(field: str, kind: str, compare: Callable[[Any, Any], bool], value: Any) -> Predicate:
    if kind == TEXT:
        return lambda e: type(v := e.get(field)) is str and compare(fold_hex(v), value)
    # One closure per operator: an operator.* call per event costs more than the test.
    if compare is operator.lt:
        return lambda e: (type(v := e.get(field)) in _FAST or _num(v)) and v < value
    if compare is operator.le:
        return lambda e: (type(v := e.get(field)) in _FAST or _num(v)) and v <= value
    if compare is operator.gt:
        return lambda e: (type(v := e.get(field)) in _FAST or _num(v)) and v > value
    return lambda e: (type(v := e.get(field)) in _FAST or _num(v)) and v >= value


def _in(field: str, kind: str, values: frozenset[Any]) -> Predicate:
    if kind == TEXT:
        if not any(_is_hex(v) for v in values):
            return lambda e: type(v := e.get(field)) is str and v in values
        return lambda e: type(v := e.get(field)) is str and fold_hex(v) in values
    return lambda e: _num(v := e.get(field)) and v in values


def _not_in(field: str, kind: str, values: frozenset[Any]) -> Predicate:
    if kind == TEXT:
        return lambda e: (
            (v := e.get(field)) is None or (type(v) is str and fold_hex(v) not in values)
        )
    return lambda e: (v := e.get(field)) is None or (_num(v) and v not in values)


_FAST: Final = frozenset({int})  # floats go through _num: infinities must not compare


def _num(value: Any) -> bool:
    # Exact type tests: bool is an int subclass but never a score, and Decimal NaN raises
    # on ordering comparisons, so only finite Decimals pass.
    # NaN and infinities are not numbers a score can be compared with either.
    kind = type(value)
    if kind is int:
        return True
    if kind is float:
        return math.isfinite(value)
    return kind is Decimal and value.is_finite()


def _present(value: Any) -> bool:
    if value is None or value == "":
        return False
    return not (isinstance(value, list | dict | tuple) and not value)


def _exists(field: str) -> Predicate:
    return lambda e: _present(e.get(field))


def _missing(field: str) -> Predicate:
    return lambda e: not _present(e.get(field))


def _contains(field: str, needle: str) -> Predicate:
    return lambda e: type(v := e.get(field)) is str and needle in fold_hex(v)


def _matches(field: str, search: Callable[[str], bool]) -> Predicate:
    return lambda e: type(v := e.get(field)) is str and search(v)

"""Compile a rule's `where` (field matchers and any/all/not combinators) to one closure.

Besides the predicate, compilation extracts the top-level equalities (`agent_id: 42`,
`client_address: {in: [...]}`) that the RuleIndex uses to find candidate rules with a dict
lookup.  Nesting is capped so a hostile file cannot exhaust the stack, and so is the number
of matchers so one rule cannot make every event expensive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from rules.fields import EVENT_FIELDS, fold_hex, suggest
from rules.matchers import Predicate, all_of, compile_field, operand_ok
from rules.model import document_json
from rules.reporting import Problems, shown
from rules.yaml_source import Path

MAX_WHERE_DEPTH: Final = 32
MAX_MATCHERS: Final = 1000
COMBINATORS: Final = ("any", "all", "not")


#: Fields tried first as the index key: the ones rules most often pin to one value.
PREFERRED_KEYS: Final = (
    "agent_id",
    "client_address",
    "validator_address",
    "owner",
    "tag1",
    "tag2",
    "tag",
    "request_hash",
    "file_hash",
    "metadata_key",
)


@dataclass
class CompiledWhere:
    """The predicate, plus what the RuleIndex files the rule under.

    ``index_key``/``index_values``: a top-level field that must equal one of these values.
    ``residual``: the rest of `where` once that equality is known to hold (None: nothing
    left), so the index does not test the equality twice.
    """

    predicate: Predicate
    index_key: str | None = None
    index_values: frozenset[Any] = field(default_factory=frozenset)
    residual: Predicate | None = None


def _never(event: Mapping[str, Any]) -> bool:
    return False


class _WhereCompiler:
    def __init__(self, sink: Problems) -> None:
        self.sink = sink
        self.matchers = 0
        self.too_many = False

    def items(self, spec: Any, path: Path, depth: int) -> Predicate:
        """A mapping, or a list of mappings that must all hold."""
        if depth > MAX_WHERE_DEPTH:
            self.sink.at(path, f"nests any/all/not deeper than {MAX_WHERE_DEPTH} levels")
            return _never
        if isinstance(spec, list):
            if not spec:
                self.sink.at(path, "must not be an empty list")
            return all_of([self.items(item, (*path, i), depth) for i, item in enumerate(spec)])
        if not isinstance(spec, Mapping):
            self.sink.at(path, f"must be a mapping of field: matcher (got {shown(spec)})")
            return _never
        if not spec:
            self.sink.at(path, "must not be empty")
        return all_of([self.entry(key, value, (*path, key), depth) for key, value in spec.items()])

    def entry(self, key: str, value: Any, path: Path, depth: int) -> Predicate:
        """One key of a where mapping: a combinator or a field matcher."""
        if key in ("any", "all"):
            if not isinstance(value, list) or not value:
                self.sink.at(path, f"must be a non-empty list of conditions (got {shown(value)})")
                return _never
            parts = [self.items(item, (*path, i), depth + 1) for i, item in enumerate(value)]
            return _any_of(parts) if key == "any" else all_of(parts)
        if key == "not":
            inner = self.items(value, path, depth + 1)
            return lambda event: not inner(event)
        kind = EVENT_FIELDS.get(key)
        if kind is None:
            hint = suggest(key, [*EVENT_FIELDS, *COMBINATORS])
            self.sink.at(path, f"is not an event field{hint}", prefix=True)
            return _never
        self.matchers += len(value) if isinstance(value, Mapping) else 1
        if self.matchers > MAX_MATCHERS:
            if not self.too_many:
                self.too_many = True
                self.sink.at(path, f"the rule has more than {MAX_MATCHERS} matchers; split it")
            return _never
        # Equal matchers of different rules share one closure (agent_id: 42 in ten rules).
        share_key = ("field", key, document_json(value))
        compiled = self.sink.share(
            share_key, lambda: compile_field(key, kind, value, self.sink, path)
        )
        return compiled or _never


def _any_of(parts: list[Predicate]) -> Predicate:
    items = tuple(parts)

    def some(event: Mapping[str, Any]) -> bool:
        return any(part(event) for part in items)

    return some


def compile_where(spec: Any, sink: Problems, path: Path = ("where",)) -> CompiledWhere:
    """Compile ``spec`` (None = no filter), reporting every mistake to ``sink``."""
    if spec is None:
        return CompiledWhere(lambda event: True)
    before = sink.count
    predicate = _WhereCompiler(sink).items(spec, path, 0)
    equalities = top_level_equalities(spec)
    if sink.count != before or not equalities:
        return CompiledWhere(predicate)
    key = next((k for k in PREFERRED_KEYS if k in equalities), next(iter(equalities)))
    rest = _without_equality(spec, key)
    residual: Predicate | None = predicate
    if rest is not _UNCHANGED:
        # Compiled again without the key; its errors were reported by the full compile.
        # Many rules differ only by the key (`agent_id`), so their residuals are shared.
        scratch = Problems(sink.file, sink.lines, shared=sink.shared)
        residual = (
            None
            if rest is None
            else scratch.share(
                ("residual", document_json(rest)),
                lambda: _WhereCompiler(scratch).items(rest, path, 0),
            )
        )
    values = equalities[key]
    values = sink.share(
        ("values", *sorted((type(v).__name__, repr(v)) for v in values)), lambda: values
    )
    return CompiledWhere(predicate, key, values, residual)


_UNCHANGED: Final = object()


def _without_equality(spec: Any, key: str) -> Any:
    """``spec`` without the plain equality on ``key`` (None if nothing is left).

    Returns _UNCHANGED when the key's matcher has other operators too (then the whole
    predicate stays the residual, which is always correct).
    """
    mappings = spec if isinstance(spec, list) else [spec]
    for i, mapping in enumerate(mappings):
        if not isinstance(mapping, Mapping) or key not in mapping:
            continue
        matcher = mapping[key]
        if isinstance(matcher, Mapping) and len(matcher) != 1:
            return _UNCHANGED
        trimmed = {k: v for k, v in mapping.items() if k != key}
        rest = [*mappings[:i], *([trimmed] if trimmed else []), *mappings[i + 1 :]]
        return rest or None
    return _UNCHANGED


def top_level_equalities(spec: Any) -> dict[str, frozenset[Any]]:
    """Fields that must equal one of a few values for the rule to hold (for indexing).

    Only matchers at the top level count (inside `any`/`not` they are not required).
    Values are normalised as the matchers compare them (hex folded).
    """
    mappings = spec if isinstance(spec, list) else [spec]
    found: dict[str, frozenset[Any]] = {}
    for mapping in mappings:
        if not isinstance(mapping, Mapping):
            continue
        for key, matcher in mapping.items():
            kind = EVENT_FIELDS.get(key)
            if kind is None or key in found:
                continue
            values = _equality_values(kind, matcher)
            if values is not None:
                found[key] = values
    return found


def _equality_values(kind: str, matcher: Any) -> frozenset[Any] | None:
    if isinstance(matcher, Mapping):
        if "eq" in matcher:
            candidates = [matcher["eq"]]
        elif isinstance(matcher.get("in"), list):
            candidates = matcher["in"]
        else:
            return None
    else:
        candidates = [matcher]
    if not all(operand_ok(kind, v) for v in candidates):
        return None
    return frozenset(fold_hex(v) for v in candidates)

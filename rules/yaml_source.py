"""Parse one rule file's YAML into plain Python values plus the line of every value.

This is the only place that touches YAML.  It must never let a hostile file hang or crash
the process: the size is capped, the nesting depth is capped, and YAML aliases cannot
expand past a fixed number of values (a "billion laughs" file is an error, not an OOM).
Each rule, and each `x-…` anchor holder, is capped on its own too: the values it gets
through aliases (``max_aliased_values``).  A few hundred bytes of nested aliases expand to
hundreds of thousands of template leaves, which every firing would render and store, and
which the whole-file cap lets through; values written out cost their bytes, so only
expansions need a count.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml
from yaml.constructor import SafeConstructor

#: Rule files larger than this are refused before parsing (a typo'd glob, a log file).
MAX_FILE_BYTES = 4 * 1024 * 1024
#: Deeper YAML than this is refused; rule documents need about a dozen levels.
MAX_YAML_DEPTH = 100
#: Values produced after alias expansion; bounds the work later passes do.
MAX_VALUES = 1_000_000
#: Values one rule (or one `x-…` key) may get through aliases; `<<: *defaults` gives a dozen.
MAX_ALIASED_VALUES = 10_000

Path = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
_CONSTRUCTOR = SafeConstructor()
# Scalars the rule language knows; anything else (timestamps, binary) stays as written, so
# `created_at: 2026-01-01` compares as the string the database holds.
_TYPED_SCALARS = {f"{_TAG}{name}" for name in ("int", "float", "bool", "null")}

try:  # libyaml is ~10x faster; fall back to the pure-Python parser where it is missing
    _Base: type[Any] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Base = yaml.SafeLoader


class _Loader(_Base):  # type: ignore[misc]
    """YAML 1.2 booleans: only true/false.  In YAML 1.1 the key `on:` would be a bool."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, Any]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != f"{_TAG}bool"]
        for first, resolvers in _Base.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._tags: dict[tuple[Any, Any, Any], str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        """The tag of a node, memoised: a rule file repeats the same scalars thousands of
        times, and the resolver's regular expressions were a third of compose's time."""
        key = (kind, value, implicit)
        tag = self._tags.get(key)
        if tag is None:
            tag = self._tags[key] = super().resolve(kind, value, implicit)
        return tag


_Loader.add_implicit_resolver(
    f"{_TAG}bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass
class LineMap:
    """Line (1-based) of every value by its path; keys of a mapping give their key's line."""

    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


@dataclass(frozen=True)
class YamlProblem:
    """Why a file could not be read as a rule document, at its line (and rule, if one)."""

    line: int | None
    message: str
    rule_id: str | None = None


@dataclass
class ParsedFile:
    """The plain value of a YAML document, its line map, and any parse problems."""

    data: Any
    lines: LineMap
    problems: list[YamlProblem]


class _TooBig(Exception):
    def __init__(self, line: int, message: str, rule_id: str | None = None) -> None:
        self.line = line
        self.message = message
        self.rule_id = rule_id
        super().__init__(message)


def parse_yaml(text: str, *, max_aliased_values: int = MAX_ALIASED_VALUES) -> ParsedFile:
    """Parse ``text``; problems are returned, never raised.

    ``max_aliased_values``: the values one rule, or one top-level `x-…` key, may get
    through YAML aliases.
    """
    lines = LineMap()
    if len(text) > MAX_FILE_BYTES:
        return ParsedFile(
            None, lines, [YamlProblem(1, f"file is larger than {MAX_FILE_BYTES} bytes")]
        )
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        return ParsedFile(None, lines, [YamlProblem(line, f"YAML syntax error: {what}")])
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        return ParsedFile(None, lines, [YamlProblem(None, f"YAML syntax error: {exc}")])
    if node is None:
        return ParsedFile(None, lines, [])
    converter = _Converter(lines, max_aliased_values)
    try:
        data = converter.convert(node, (), 0)
    except _TooBig as exc:
        return ParsedFile(None, lines, [YamlProblem(exc.line, exc.message, exc.rule_id)])
    return ParsedFile(data, lines, converter.problems)


class _Converter:
    """Turns composed nodes into dicts/lists/scalars, recording lines and problems."""

    def __init__(self, lines: LineMap, max_aliased_values: int) -> None:
        self.lines = lines
        self.problems: list[YamlProblem] = []
        self.values = 0
        self.max_aliased_values = max_aliased_values
        # Collection nodes converted once: meeting one again is an alias being expanded.
        self.seen: set[int] = set()
        self.in_alias = 0  # how many alias expansions enclose the node being converted
        # The rule or `x-…` key being converted: its line, its id, values it got via aliases.
        self.part_line = 0
        self.part_rule_id: str | None = None
        self.part_aliased = 0

    def convert(self, node: yaml.Node, path: Path, depth: int) -> Any:
        """The plain value of ``node``; raises _TooBig past the depth or value budget."""
        self.values += 1
        line = node.start_mark.line + 1
        if self.values > MAX_VALUES:
            raise _TooBig(line, f"file expands to more than {MAX_VALUES} values (YAML aliases?)")
        if depth > MAX_YAML_DEPTH:
            raise _TooBig(line, f"nesting deeper than {MAX_YAML_DEPTH} levels")
        if depth == 1 or (depth == 2 and path[0] == "rules"):  # depth is len(path)
            self._start_part(node, path, line)
        self.lines.lines.setdefault(path, line)
        if isinstance(node, yaml.ScalarNode):
            if self.in_alias:
                self._count_aliased(path)
            return self._scalar(node)
        again = id(node) in self.seen
        self.seen.add(id(node))
        self.in_alias += again
        if self.in_alias:
            self._count_aliased(path)
        if isinstance(node, yaml.MappingNode):
            value: Any = self._mapping(node, path, depth)
        else:
            value = []
            for i, item in enumerate(node.value):
                self.lines.lines[(*path, i)] = item.start_mark.line + 1
                value.append(self.convert(item, (*path, i), depth + 1))
        self.in_alias -= again
        return value

    def _start_part(self, node: yaml.Node, path: Path, line: int) -> None:
        self.part_line = self.lines.lines.get(path, line)
        self.part_rule_id = _rule_id_of(node) if len(path) == 2 else None
        self.part_aliased = 0

    def _count_aliased(self, path: Path) -> None:
        self.part_aliased += 1
        if self.part_aliased > self.max_aliased_values:
            what = "the rule" if path[0] == "rules" else f"'{path[0]}'"
            raise _TooBig(
                self.part_line,
                f"{what} expands to more than {self.max_aliased_values} values through YAML "
                "aliases; a rule needs a few hundred: write repeated parts out, or share "
                "smaller anchors",
                self.part_rule_id,
            )

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in _merged_pairs(node):
            key_line = key_node.start_mark.line + 1
            key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if key is None or isinstance(key, bool | float):
                self.problems.append(
                    YamlProblem(key_line, f"mapping key {key_node.value!r} must be a name")
                )
                continue
            key = sys.intern(str(key))
            if key in out:
                self.problems.append(YamlProblem(key_line, f"duplicate key '{key}'"))
            self.lines.lines[(*path, key)] = key_line
            out[key] = self.convert(value_node, (*path, key), depth + 1)
        return out

    def _scalar(self, node: yaml.Node) -> Any:
        tag = node.tag
        if tag in _TYPED_SCALARS:
            value = _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, node)
            if isinstance(value, float) and not math.isfinite(value):
                self.problems.append(
                    YamlProblem(node.start_mark.line + 1, "numbers must be finite")
                )
                return None
            return value
        if not tag.startswith(_TAG):
            self.problems.append(
                YamlProblem(node.start_mark.line + 1, f"unsupported YAML tag {tag!r}")
            )
        # Interned: 100,000 rules repeat `reputation`, their URL and templates, and every
        # rule's document and actions keep these strings.
        return sys.intern(node.value) if isinstance(node.value, str) else None


def _rule_id_of(node: yaml.Node) -> str | None:
    """The `id:` written in a rule's mapping node, to name it in an error."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == "id" and isinstance(value_node, yaml.ScalarNode):
                return str(value_node.value)
    return None


def _merged_pairs(node: yaml.MappingNode) -> Iterator[tuple[yaml.Node, yaml.Node]]:
    """Key/value pairs with YAML merge keys (``<<: *defaults``) applied, explicit keys last."""
    merged: list[tuple[yaml.Node, yaml.Node]] = []
    own: list[tuple[yaml.Node, yaml.Node]] = []
    for key_node, value_node in node.value:
        if key_node.tag == f"{_TAG}merge":
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if isinstance(source, yaml.MappingNode):
                    merged.extend(source.value)
        else:
            own.append((key_node, value_node))
    explicit = {k.value for k, _ in own if isinstance(k, yaml.ScalarNode)}
    seen: set[Any] = set()
    for key_node, value_node in merged:
        if key_node.value in explicit or key_node.value in seen:
            continue
        seen.add(key_node.value)
        yield key_node, value_node
    yield from own

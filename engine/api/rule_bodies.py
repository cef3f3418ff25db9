"""A tenant's rule from a request body (JSON, or YAML with its lines) to a compiled Rule.

The compiler is the one rule files go through (``rules.compile.compile_rule`` after
``rules.yaml_source.parse_yaml``, as ``rules.loader`` does), so a rule means the same and
is refused with the same messages whether it came from a file or from the API.  Two
things differ, because a tenant is not the operator: a tenant rule never reads the
server's environment (an empty one, and any ``${`` is refused so nothing is expanded
later by a worker either), and it may not use the operator's Telegram bots.
This module does no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.api.errors import ApiError, ErrorItem
from rules.compile import ID_PATTERN, compile_rule
from rules.model import Rule
from rules.reporting import Problems, dotted
from rules.yaml_source import MAX_YAML_DEPTH, LineMap, Path, parse_yaml

JSON_TYPES = frozenset({"application/json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})
SOURCE = "request body"


@dataclass
class _PathProblems(Problems):
    """A ``Problems`` that also keeps the rule-relative path of each mistake, for the
    ``path`` of a 422's errors (a rule file's messages carry it only in their text)."""

    paths: list[str] = field(default_factory=list)

    def rule(self, base: Path, rule_id: str | None) -> _PathProblems:
        return _PathProblems(
            self.file, self.lines, self.errors, base, rule_id, self.shared, self.paths
        )

    def at(self, path: Path, message: str, *, prefix: bool = True) -> None:
        self.paths.append(dotted(path))
        super().at(path, message, prefix=prefix)

    def items(self) -> list[ErrorItem]:
        return [
            ErrorItem(path=path, line=error.line, message=error.message)
            for path, error in zip(self.paths, self.errors, strict=True)
        ]


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _invalid(message: str, line: int | None = None, path: str = "") -> ApiError:
    return ApiError(
        422,
        f"the rule is invalid: {message}",
        errors=[ErrorItem(path=path, line=line, message=message)],
    )


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"numbers must be finite (got {text})")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"numbers must be finite (got {text})")


def _depth(value: Any) -> int:
    """The nesting depth of a JSON value, without recursion (a body may nest deeply)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_YAML_DEPTH:
            break
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _parse_json(body: bytes) -> tuple[Any, LineMap]:
    try:
        data = json.loads(
            body.decode("utf-8"), parse_float=_finite_float, parse_constant=_no_constant
        )
    except UnicodeDecodeError:
        raise _invalid("the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _invalid(
            f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise _invalid(f"malformed JSON: {exc}") from None
    if _depth(data) > MAX_YAML_DEPTH:
        raise _invalid(f"nesting deeper than {MAX_YAML_DEPTH} levels")
    return data, LineMap()  # JSON mistakes have no line: `line` is null


def _parse_yaml(body: bytes) -> tuple[Any, LineMap, Path]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("the body is not UTF-8 text") from None
    parsed = parse_yaml(text)
    if parsed.problems:
        errors = [ErrorItem(path="", line=p.line, message=p.message) for p in parsed.problems]
        raise ApiError(422, f"the rule is invalid: {errors[0].message}", errors=errors)
    data = parsed.data
    if isinstance(data, Mapping) and "rules" in data:
        # A rule file holding one rule is accepted as is: `engine rules push` sends files.
        rules = data["rules"]
        extra = [k for k in data if k != "rules" and not str(k).startswith("x-")]
        if not isinstance(rules, list) or len(rules) != 1 or extra:
            line = parsed.lines.line_of(("rules",))
            raise _invalid(
                "a YAML body is one rule mapping, or `rules:` with a list of exactly one rule",
                line,
                "rules",
            )
        return rules[0], parsed.lines, ("rules", 0)
    return data, parsed.lines, ()


def _unstorable_text(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (a lone surrogate?)"
    return None


def _check_tenant_values(value: Any, path: Path, sink: Problems) -> None:
    """Refuse what a tenant rule may not hold: ``${VAR}`` and text PostgreSQL cannot store."""
    if isinstance(value, str):
        problem = _unstorable_text(value)
        if problem is not None:
            sink.at(path, problem)
        elif "${" in value:
            sink.at(
                path,
                "uses ${…}, but rules written through the API never read the server's "
                "environment: store the value as a secret (PUT /v1/secrets/NAME) and write "
                "{secret: NAME} instead",
            )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            problem = _unstorable_text(str(key))
            if problem is not None:
                sink.at(path, f"has a key that {problem}")
                continue
            _check_tenant_values(item, (*path, str(key)), sink)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_tenant_values(item, (*path, index), sink)


def parse_rule_body(body: bytes, content_type: str | None) -> tuple[Any, LineMap, Path]:
    """The rule mapping of a JSON or YAML body, its line map and its path in the body;
    ApiError 415 for another content type, 422 for a body that does not parse."""
    kind = media_type(content_type)
    if kind in JSON_TYPES:
        raw, lines = _parse_json(body)
        return raw, lines, ()
    if kind in YAML_TYPES:
        return _parse_yaml(body)
    raise ApiError(
        415,
        f"a rule is sent as application/json or application/yaml (got {kind or 'none'})",
    )


def parse_rule_text(text: str) -> tuple[Any, LineMap, Path]:
    """A rule given as YAML text inside a JSON request (lines counted in that text)."""
    return _parse_yaml(text.encode("utf-8", "surrogatepass"))


def compile_tenant_rule(
    body: bytes,
    content_type: str | None,
    rule_id: str,
    *,
    timeout_limits_s: Mapping[str, float] | None = None,
) -> Rule:
    """The compiled rule of a PUT /v1/rules/{rule_id} body; ApiError 415 or 422 otherwise.

    The body's ``id`` may be left out (the URL's is used) and must equal it when given.
    """
    raw, lines, base = parse_rule_body(body, content_type)
    return compile_tenant_document(raw, rule_id, lines, base, timeout_limits_s=timeout_limits_s)


def compile_tenant_document(
    raw: Any,
    rule_id: str,
    lines: LineMap | None = None,
    base: Path = (),
    *,
    timeout_limits_s: Mapping[str, float] | None = None,
) -> Rule:
    """A tenant's rule document compiled as a rule file's rule is; ApiError 422 otherwise.

    ``lines`` and ``base`` place mistakes in the YAML the document came from (none for
    JSON).  The document's ``id`` may be left out and must equal ``rule_id`` when given.
    """
    lines = lines if lines is not None else LineMap()
    if not isinstance(raw, Mapping):
        raise _invalid(
            "the body must be one rule: a mapping with on, where, actions …",
            lines.line_of(base),
        )
    sink = _PathProblems(SOURCE, lines).rule(base, rule_id)
    document = dict(raw)
    if "id" not in document:
        document = {"id": rule_id, **document}
    elif document["id"] != rule_id:
        sink.at(
            ("id",),
            f"must equal the id in the URL ({rule_id!r}) or be left out (got {document['id']!r})",
        )
    if not ID_PATTERN.match(rule_id):
        sink.at(
            (),
            f"the id in the URL ({rule_id!r}) must match [a-z0-9][a-z0-9._-]* "
            "(lower case, at most 200 characters)",
        )
    _check_tenant_values(document, (), sink)
    rule = None
    if not sink.errors:
        rule = compile_rule(
            document,
            document,  # nothing is expanded: the environment of a tenant rule is empty
            sink,
            source_file=SOURCE,
            source_line=lines.line_of(base) or 1,
            bot_names=frozenset(),  # the operator's bots are the operator's
            timeout_limits_s=timeout_limits_s,
        )
    if rule is None or sink.errors:
        items = sink.items()
        summary = items[0].message if items else "it does not compile"
        raise ApiError(422, f"the rule is invalid: {summary}", errors=items)
    return rule

"""Render an action's templates against a firing's context.

Templates (`{{ … }}`) run in the bounded sandbox (rules.sandbox).  What each field gets:

- telegram `text`: values inserted by `{{ }}` are escaped for the parse mode (HTML by
  default, MarkdownV2, or none); the template's literal text is the author's markup;
- rest `body` / mcp `arguments`: every string leaf is a template; a leaf that is exactly
  one expression (`"{{ event.score }}"`) keeps the expression's JSON type;
- urls, headers, chat ids, tool names: plain text.
Compiled templates are cached by source text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from jinja2 import Template, TemplateError
from jinja2.environment import TemplateExpression

from rules.errors import TemplateRenderError
from rules.fields import EVENT_FIELDS
from rules.sandbox import (
    MAX_OUTPUT_CHARS,
    BoundedSandbox,
    call_bounded,
    make_environment,
    run_bounded,
)
from rules.template_filters import FILTERS, escape_html, escape_markdown_v2, unescaped_text

if TYPE_CHECKING:
    from rules.model import Rule

CONTEXT_NAMES: Final = ("event", "rule", "group", "state", "fired_at")
#: A string leaf that is one `{{ expression }}` and nothing else keeps the expression's type.
_SINGLE_EXPRESSION: Final = re.compile(
    r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{|\{%|\{#).)*)\}\}\s*$", re.DOTALL
)
ESCAPERS: Final[dict[str, Callable[[Any], str]]] = {
    "HTML": escape_html,
    "MarkdownV2": escape_markdown_v2,
    "none": unescaped_text,
}
#: Fields rendered as plain text, per action kind (structures are handled separately).
TEXT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "telegram": ("chat_id",),
    "rest": ("url",),
    "mcp": ("url", "agent", "tool"),
}
STRUCTURE_FIELDS: Final[dict[str, str]] = {"rest": "body", "mcp": "arguments"}
# Every column is in `event`, null when the row lacks it (a partial test row, say), so
# `{{ event.tag1 }}` renders "None" rather than failing on one odd row.
_EMPTY_ROW: Final = dict.fromkeys(EVENT_FIELDS)


@lru_cache(maxsize=8)
def environment(mode: str) -> BoundedSandbox:
    """The shared sandbox for one escaping mode (`HTML`, `MarkdownV2`, `none`)."""
    env = make_environment(ESCAPERS[mode])
    env.filters.update(FILTERS)
    return env


@lru_cache(maxsize=4096)
def compile_template(source: str, mode: str = "none") -> Template:
    """The compiled template for ``source`` (cached by text); raises TemplateError."""
    return environment(mode).from_string(source)


@lru_cache(maxsize=4096)
def _compile_expression(source: str) -> TemplateExpression:
    return environment("none").compile_expression(source, undefined_to_none=False)


def render_text(
    source: str, context: Mapping[str, Any], *, mode: str = "none", what: str = "template"
) -> str:
    """Render one template string; raises TemplateRenderError with ``what`` in the message."""
    if "{" not in source:  # no template syntax at all: the common case for urls and ids
        return source
    try:
        template = compile_template(source, mode)
        return run_bounded(lambda: template.generate(dict(context)), what)
    except TemplateError as exc:
        raise TemplateRenderError(f"{what}: {exc.message or exc}") from exc
    except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as exc:
        raise TemplateRenderError(f"{what}: {type(exc).__name__}: {exc}") from exc


def render_value(value: Any, context: Mapping[str, Any], what: str) -> Any:
    """Render a structure whose string leaves are templates (typed single expressions)."""
    if isinstance(value, str):
        match = _SINGLE_EXPRESSION.match(value)
        if match is None:
            return render_text(value, context, what=what)
        try:
            expression = _compile_expression(match.group("expr"))
            return to_json_value(call_bounded(lambda: expression(**context), what), what)
        except TemplateError as exc:
            raise TemplateRenderError(f"{what}: {exc.message or exc}") from exc
        except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as exc:
            raise TemplateRenderError(f"{what}: {type(exc).__name__}: {exc}") from exc
    if isinstance(value, Mapping):
        return {str(k): render_value(v, context, f"{what}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context, f"{what}[{i}]") for i, v in enumerate(value)]
    return value


def to_json_value(value: Any, what: str) -> Any:
    """``value`` as plain JSON (Decimal to number, tuple to list), size-capped."""
    converted = _plain_json(value)
    if len(json.dumps(converted, default=str)) > MAX_OUTPUT_CHARS:
        raise TemplateRenderError(f"{what} is longer than {MAX_OUTPUT_CHARS} characters")
    return converted


def _plain_json(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return _plain_json(int(value) if value == value.to_integral_value() else float(value))
    if isinstance(value, Mapping):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_json(v) for v in value]
    return str(value)  # Markup, undefined-safe objects, anything else: its text


#: Values a row may hold that are already plain JSON, as they are (floats: when finite).
_PLAIN_SCALARS: Final = frozenset({str, int, bool, type(None)})


def _plain_row(row: dict[Any, Any]) -> dict[str, Any]:
    """``row`` as plain JSON; a row of str keys and plain scalars is returned as it is.

    Event rows from the engine are already plain (engine.event_rows converted them), so the
    firing path checks each value's type instead of rebuilding the row.
    """
    for key, value in row.items():
        cls = value.__class__
        if key.__class__ is not str or (
            cls not in _PLAIN_SCALARS and (cls is not float or not math.isfinite(value))
        ):
            return _plain_json(row)  # type: ignore[no-any-return]
    return row


def _no_report(field: str) -> None:
    return None


def render_action(
    kind: str,
    spec: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    on_field: Callable[[str], None] = _no_report,
) -> dict[str, Any]:
    """Render every template field of an action (``spec`` already ``${VAR}``-expanded).

    Keys that are not templates are passed through unchanged.  Raises TemplateRenderError.
    ``on_field("rest.body")`` is called before each field is rendered, so a caller that
    has to stop a render can say which field it stopped in.
    """
    out = dict(spec)
    for key in TEXT_FIELDS.get(kind, ()):
        if isinstance(spec.get(key), str):
            on_field(f"{kind}.{key}")
            out[key] = render_text(spec[key], context, what=f"{kind}.{key}")
    if kind == "telegram" and isinstance(spec.get("text"), str):
        on_field("telegram.text")
        mode = spec.get("parse_mode", "HTML")
        out["text"] = render_text(
            spec["text"], context, mode=mode if mode in ESCAPERS else "none", what="telegram.text"
        )
    if kind == "rest" and isinstance(spec.get("headers"), Mapping):
        on_field("rest.headers")
        out["headers"] = {
            str(name): render_text(str(value), context, what=f"rest.headers.{name}")
            for name, value in spec["headers"].items()
        }
    structure = STRUCTURE_FIELDS.get(kind)
    if structure is not None and structure in spec:
        on_field(f"{kind}.{structure}")
        out[structure] = render_value(spec[structure], context, f"{kind}.{structure}")
    return out


def rule_context(rule: Rule) -> dict[str, Any]:
    """What templates see as `rule` (RULE_ATTRIBUTES of rules.template_check)."""
    return {
        "id": rule.id,
        "description": rule.description,
        "owner": rule.owner,
        "labels": dict(rule.labels) if rule.labels else {},
    }


def build_context(
    rule: Rule,
    event: Mapping[str, Any],
    group: Mapping[str, Any],
    template_state: Mapping[str, Any],
    fired_at: str,
) -> dict[str, Any]:
    """The template context of one firing; plain JSON (stored in action_results.context).

    ``event`` holds the columns the rule's templates and executors read (rule.context_fields,
    worked out at load), or the whole row when that cannot be known: every lookup a
    template makes gives what it would on the whole row, and the stored row is small.
    """
    fields = rule.context_fields
    if fields is None:
        row = {**_EMPTY_ROW, **event}
    else:
        get = event.get
        row = {name: get(name) for name in fields}
    return {
        "event": _plain_row(row),
        "rule": rule_context(rule),
        "group": _plain_row(dict(group)),
        "state": _plain_row(dict(template_state)),
        "fired_at": fired_at,
    }

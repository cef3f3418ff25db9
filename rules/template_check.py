"""Load-time checks of an action's templates: syntax, unknown filters, unknown names.

Everything knowable before an event arrives is checked here, so `engine check` reports it:
a template may use only `event`, `rule`, `group`, `state`, `fired_at`, a feature's own
names (`firings`, `alert`, `absent`, ...) and names it binds itself (loop variables, `set`);
`event.X` must be an event column, `group.X` a `per` field, `state.X` one of the rule's
conditions, `rule.X` one of id, description, owner, labels, `absent.X` one of for,
last_seen_at (absence rules only).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

from jinja2 import TemplateSyntaxError, meta, nodes

from rules.fields import EVENT_FIELDS, ON_KEYS, suggest
from rules.reporting import Problems
from rules.templates import (
    CONTEXT_NAMES,
    STRUCTURE_FIELDS,
    TEXT_FIELDS,
    compile_template,
    environment,
)
from rules.yaml_source import Path

RULE_ATTRIBUTES: Final = ("id", "description", "owner", "labels")
#: What an absence rule's `absent` holds (rules.absence.absence_context).
ABSENT_ATTRIBUTES: Final = ("for", "last_seen_at")


def check_templates(
    actions: Sequence[Any],
    per: Sequence[str],
    state_keys: Sequence[str],
    sink: Problems,
    *,
    extra: Mapping[str, Sequence[str] | None] | None = None,
    path: Path = ("actions",),
) -> None:
    """Report every template mistake in ``actions`` (the ``${VAR}``-expanded list).

    ``extra``: further context names (a digest's `firings`, a resolve's `alert`,
    an absence rule's `absent`) with the
    attributes each has, None for a name whose attributes are not checked.
    """
    known: dict[str, Sequence[str] | None] = {
        "event": tuple(EVENT_FIELDS),
        "rule": RULE_ATTRIBUTES,
        "group": tuple(per),
        "state": tuple(state_keys),
        **(extra or {}),
    }
    for index, action in enumerate(actions):
        if not isinstance(action, Mapping):
            continue
        for kind in ("telegram", "rest", "mcp"):
            body = action.get(kind)
            if isinstance(body, Mapping):
                for field, source in _template_fields(kind, body):
                    check_template(source, known, sink, (*path, index, kind, *field))


#: The event columns every stored context keeps, whatever the templates use: enough for
#: an operator reading ``action_results.context`` to tell which event it was.
CONTEXT_CORE_FIELDS: Final = (
    "id",
    "chain_id",
    "block_number",
    "transaction_hash",
    "log_index",
    "registry",
    "event_type",
    "agent_id",
    "timestamp",
)
#: What an executor reads from the event itself, beyond the templates (mcp, see actions).
_EXECUTOR_FIELDS: Final = {"verify_file_hash": ("file_uri", "file_hash")}


def context_event_fields(actions: Sequence[Any]) -> tuple[str, ...] | None:
    """The event columns a firing's stored context must hold for ``actions`` (the
    ``${VAR}``-expanded list) to render exactly as with the whole row; None: the whole row.

    The whole row is kept whenever a template uses ``event`` other than as a constant
    ``event.X`` / ``event['X']`` lookup (``event | tojson``, ``event.items()``,
    ``event[name]``, ``set e = event``...), so a projection can never change a rendering.
    """
    wanted = set(CONTEXT_CORE_FIELDS)
    for action in actions:
        if not isinstance(action, Mapping):
            return None
        for kind in ("telegram", "rest", "mcp"):
            body = action.get(kind)
            if not isinstance(body, Mapping):
                continue
            for key, fields in _EXECUTOR_FIELDS.items():
                if body.get(key) not in (None, False):
                    wanted.update(fields)
            for _, source in _template_fields(kind, body):
                used = _event_lookups(source)
                if used is None:
                    return None
                wanted.update(used)
    return tuple(name for name in EVENT_FIELDS if name in wanted)


def rule_event_fields(
    context_fields: tuple[str, ...] | None, *logic: Any
) -> tuple[str, ...] | None:
    """The event columns a rule reads at all: what its stored context keeps, plus every
    column its ``on`` / ``where`` / ``per`` / ``when`` / ``throttle`` (``logic``, as
    expanded) names; None when its templates need the whole row.

    The logic parts are walked whole: any key or text value that is a column name counts
    (``where: {score: …}``, ``when: {ema: {of: score}}``, ``per: agent_id``). Counting a
    value that merely looks like a column (``tag1: score``) only reads one more column;
    missing one would hand a rule a NULL, so nothing is left out.
    """
    if context_fields is None:
        return None
    wanted = {*context_fields, *ON_KEYS}
    pending = list(logic)
    while pending:
        part = pending.pop()
        if isinstance(part, Mapping):
            wanted.update(k for k in part if isinstance(k, str) and k in EVENT_FIELDS)
            pending.extend(part.values())
        elif isinstance(part, list | tuple):
            pending.extend(part)
        elif isinstance(part, str) and part in EVENT_FIELDS:
            wanted.add(part)
    return tuple(name for name in EVENT_FIELDS if name in wanted)


@lru_cache(maxsize=4096)
def _event_lookups(source: str) -> frozenset[str] | None:
    """The columns ``source`` looks up on ``event``; None if it uses ``event`` otherwise."""
    if "{" not in source or "event" not in source:
        return frozenset()
    try:
        tree = environment("none").parse(source)
    except TemplateSyntaxError:
        return None
    called = {id(call.node) for call in tree.find_all(nodes.Call)}
    looked_up: dict[int, str] = {}  # id(the `event` Name node) -> column
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = getattr(node, "node", None)
        if not isinstance(target, nodes.Name) or target.name != "event" or id(node) in called:
            continue
        if isinstance(node, nodes.Getattr):
            name: Any = node.attr
        else:
            arg = getattr(node, "arg", None)
            name = arg.value if isinstance(arg, nodes.Const) else None
        if isinstance(name, str) and name in EVENT_FIELDS:
            looked_up[id(target)] = name
    for use in tree.find_all(nodes.Name):
        if use.name == "event" and (use.ctx != "load" or id(use) not in looked_up):
            return None
    return frozenset(looked_up.values())


def _template_fields(kind: str, body: Mapping[str, Any]) -> Iterator[tuple[Path, str]]:
    fields = list(TEXT_FIELDS.get(kind, ()))
    if kind == "telegram":
        fields.append("text")
    for key in fields:
        if isinstance(body.get(key), str):
            yield (key,), body[key]
    if kind == "rest" and isinstance(body.get("headers"), Mapping):
        for name, value in body["headers"].items():
            if isinstance(value, str):
                yield ("headers", name), value
    structure = STRUCTURE_FIELDS.get(kind)
    if structure is not None and structure in body:
        yield from _leaves(body[structure], (structure,))


def _leaves(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))


def check_template(
    source: str, known: Mapping[str, Sequence[str] | None], sink: Problems, path: Path
) -> None:
    """Report syntax errors and unknown names in one template string (``known``: each
    context name and its attributes, None when they are not checked)."""
    if "{" not in source:
        return
    frozen = tuple(
        (root, None if choices is None else tuple(choices)) for root, choices in known.items()
    )
    for message in _template_problems(source, frozen):
        sink.at(path, message)


@lru_cache(maxsize=4096)
def _template_problems(
    source: str, known: tuple[tuple[str, tuple[str, ...] | None], ...]
) -> tuple[str, ...]:
    """The messages for ``source`` checked against ``known``, cached: 100,000 rules often
    share a handful of templates, and parsing each again was most of the load time."""
    try:
        compile_template(source)  # also catches unknown filters and tests
        tree = environment("none").parse(source)
    except TemplateSyntaxError as exc:
        return (f"template error on its line {exc.lineno}: {exc.message}",)
    problems: list[str] = []
    # A feature's own names (a digest's `firings`, ...) are known only to its rules.
    names = (*CONTEXT_NAMES, *(root for root, _ in known if root not in CONTEXT_NAMES))
    allowed = set(names) | set(environment("none").globals)
    for name in sorted(meta.find_undeclared_variables(tree) - allowed):
        problems.append(
            f"template uses '{name}', which is not in the template context"
            f"{suggest(name, names)}; use one of " + ", ".join(names)
        )
    choices_of = dict(known)
    for root, attribute in _attribute_uses(tree):
        choices = choices_of.get(root)
        if choices is not None and attribute not in choices:
            listed = ", ".join(choices) if choices else "nothing (see per / when)"
            problems.append(
                f"template uses '{root}.{attribute}', which does not exist"
                f"{suggest(attribute, choices)}; {root} has {_shorten(listed)}"
            )
    return tuple(problems)


def _attribute_uses(tree: nodes.Template) -> Iterator[tuple[str, str]]:
    """(`event`, `score`) for each `event.score` / `event['score']` in the template."""
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    # `event.items()`: a method call on the mapping, not a field lookup.
    called = {id(call.node) for call in tree.find_all(nodes.Call)}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = getattr(node, "node", None)
        if id(node) in called:
            continue
        if not isinstance(target, nodes.Name) or target.name in assigned:
            continue
        if isinstance(node, nodes.Getattr):
            yield target.name, str(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(getattr(node.arg, "value", None), str):
            yield target.name, node.arg.value  # type: ignore[attr-defined]


def _shorten(text: str) -> str:
    return text if len(text) <= 120 else text[:117] + "..."

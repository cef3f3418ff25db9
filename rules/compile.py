"""Compile one rule mapping (as loaded from YAML) into a Rule, reporting every mistake.

Two copies of the mapping come in: as written (stored in the database, ``${VAR}`` intact)
and with ``${VAR}`` expanded (what is checked and evaluated).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from typing import Any, Final

from rules.absence import compile_absence, is_absence_rule
from rules.action_specs import compile_actions
from rules.conditions import compile_when
from rules.fields import ON_KEYS, suggest
from rules.grouping import DIGEST_CONTEXT, compile_grouping
from rules.labels import compile_labels
from rules.model import Rule, canonical_json, document_json
from rules.on_retract import compile_on_retract, retract_actions_of
from rules.reporting import Problems, shown
from rules.shapes import check_keys, event_field_names
from rules.stateful import StateMachine
from rules.template_check import (
    ABSENT_ATTRIBUTES,
    check_templates,
    context_event_fields,
    rule_event_fields,
)
from rules.testcase_specs import compile_tests, tested_rule
from rules.throttle import compile_throttle
from rules.where import compile_where
from rules.yaml_source import Path

RULE_KEYS: Final = (
    "id",
    "description",
    "enabled",
    "owner",
    "labels",
    "on",
    "where",
    "per",
    "when",
    "throttle",
    "group",
    "resolve",
    "actions",
    "on_retract",
    "tests",
)
LOGIC_KEYS: Final = ("on", "where", "per", "when")
REGISTRIES: Final = ("identity", "reputation", "validation")
ID_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,199}$")


def rule_id_of(spec: Any) -> str | None:
    """The rule's id when it is a usable string (for error messages), else None."""
    if isinstance(spec, Mapping) and isinstance(spec.get("id"), str):
        return str(spec["id"])
    return None


def compile_rule(
    raw: Mapping[str, Any],
    expanded: Mapping[str, Any],
    sink: Problems,
    *,
    source_file: str,
    source_line: int,
    bot_names: Collection[str] | None = None,
    timeout_limits_s: Mapping[str, float] | None = None,
    document_text: str | None = None,
    engine_id: str | None = None,
    org_id: int | None = None,
) -> Rule | None:
    """A Rule from one mapping of `rules:`, or None when any mistake was reported.

    ``document_text``: ``document_json(raw)`` when the caller has it already.
    ``engine_id``/``org_id``: an organization's rule's engine-wide id and organization
    (a file rule's id is the id it was written with).
    """
    before = sink.count
    check_keys(expanded, RULE_KEYS, sink, (), required=("id", "actions"))
    rule_id = _check_header(expanded, sink)
    # Parts equal to another rule's of this load are shared (see Problems.share): the key
    # is the text of everything each part is compiled from.
    on_spec, where_spec = expanded.get("on"), expanded.get("where")
    on = sink.share(("on", _key(on_spec)), lambda: _compile_on(on_spec, sink))
    where = sink.share(("where", _key(where_spec)), lambda: compile_where(where_spec, sink))
    per = _compile_per(expanded.get("per"), sink)
    labels = compile_labels(expanded.get("labels"), sink)
    per = None if per is None else sink.share(("per", per), lambda: per)
    timed = is_absence_rule(expanded)
    absence = compile_absence(expanded, per, sink) if timed else None
    stateful = not timed and ("when" in expanded or "throttle" in expanded)
    machine = _compile_machine(expanded, sink) if stateful else None
    raw_actions, expanded_actions = raw.get("actions"), expanded.get("actions")
    # Nothing expanded (no ${VAR} in the rule): one copy names both.
    actions_key = (
        ("as written", _key(raw_actions))
        if expanded_actions is raw_actions
        else ("expanded", _key(raw_actions, expanded_actions))
    )
    actions = sink.share(
        ("actions", actions_key),
        lambda: compile_actions(
            raw_actions, expanded_actions, sink, bot_names, timeout_limits_s=timeout_limits_s
        ),
    )
    context_fields = None
    state_keys = tuple(c.key for c in machine.conditions) if machine is not None else ()
    grouping, resolve = compile_grouping(
        raw, expanded, per or (), state_keys, sink, bot_names, timeout_limits_s
    )
    on_retract = compile_on_retract(
        raw.get("on_retract"),
        expanded.get("on_retract"),
        sink,
        per=per or (),
        state_keys=state_keys,
        bot_names=bot_names,
        timeout_limits_s=timeout_limits_s,
    )
    if isinstance(expanded_actions, list):
        group_names = per or () if grouping is None else grouping.by
        extra = dict(DIGEST_CONTEXT) if grouping is not None else {}
        if timed:
            extra["absent"] = ABSENT_ATTRIBUTES

        def check() -> bool:
            check_templates(expanded_actions, group_names, state_keys, sink, extra=extra)
            return True

        # Checked once per distinct (actions, per, state): a clean check is all it keeps,
        # so a rule with a template mistake is always checked, and reported, itself.
        sink.share(("templates checked", actions_key, group_names, state_keys, tuple(extra)), check)
        # on_retract renders from the firing's stored context: it keeps their columns too.
        rendered = [*expanded_actions, *retract_actions_of(expanded)]
        context_fields = sink.share(
            ("context_fields", actions_key, _key(rendered[len(expanded_actions) :])),
            lambda: context_event_fields(rendered),
        )
    if grouping is not None or resolve is not None:
        # A digest's firings and a resolved notice keep whole rows: their templates reach
        # events through `firings[i].event` and `alert`, which the projection cannot follow.
        context_fields = None
    names = [
        a.get("name") if isinstance(a, Mapping) else None
        for a in (expanded_actions if isinstance(expanded_actions, list) else [])
    ]
    tested = tested_rule(expanded, names)
    tests = compile_tests(expanded.get("tests"), expanded.get("on"), tested, sink)
    if sink.count != before or rule_id is None or on is None or per is None or labels is None:
        return None
    if timed and absence is None:
        return None
    logic = {key: expanded.get(key) for key in LOGIC_KEYS}
    read = rule_event_fields(context_fields, *logic.values(), expanded.get("throttle"))
    event_fields = None if read is None else sink.share(("event_fields", read), lambda: read)
    return Rule(
        id=rule_id if engine_id is None else engine_id,
        description=expanded.get("description"),
        owner=expanded.get("owner"),
        enabled=expanded.get("enabled", True),
        on=on,
        per=per,
        actions=actions,
        source_file=source_file,
        source_line=source_line,
        document_json=document_json(raw) if document_text is None else document_text,
        content_hash=hashlib.sha256(canonical_json(raw).encode()).hexdigest(),
        logic_hash=hashlib.sha256(canonical_json(logic).encode()).hexdigest(),
        stateful=stateful,
        tests=tests,
        index_key=where.index_key,
        index_values=where.index_values,
        residual=where.residual,
        predicate=where.predicate,
        machine=machine,
        context_fields=context_fields,
        event_fields=event_fields,
        org_id=org_id,
        grouping=grouping,
        resolve=resolve,
        on_retract=on_retract,
        labels=labels,
        absence=absence,
    )


def _compile_machine(expanded: Mapping[str, Any], sink: Problems) -> StateMachine | None:
    """The rule's `when` and `throttle` (a StateMachine is immutable, so rules share it)."""
    when, throttle = expanded.get("when"), expanded.get("throttle")

    def build() -> StateMachine | None:
        conditions = compile_when(when, sink)
        compiled_throttle = compile_throttle(throttle, sink)
        return StateMachine(conditions, compiled_throttle)

    return sink.share(("machine", _key(when, throttle)), build)


def _key(*specs: Any) -> str:
    """What a shared part is compiled from, as text; key order kept, as it can matter."""
    return document_json(specs)


def _check_header(spec: Mapping[str, Any], sink: Problems) -> str | None:
    rule_id = spec.get("id")
    ok_id: str | None = None
    if "id" in spec:
        if not isinstance(rule_id, str) or not ID_PATTERN.match(rule_id):
            sink.at(
                ("id",),
                "must match [a-z0-9][a-z0-9._-]* (lower case, at most 200 "
                f"characters; got {shown(rule_id)})",
            )
        else:
            ok_id = rule_id
    for key in ("description", "owner"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            sink.at((key,), f"must be a string (got {shown(spec[key])})")
    if not isinstance(spec.get("enabled", True), bool):
        sink.at(("enabled",), f"must be true or false (got {shown(spec['enabled'])})")
    return ok_id


def _compile_on(
    spec: Any, sink: Problems, path: Path = ("on",)
) -> dict[str, frozenset[Any]] | None:
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        sink.at(path, f"must be a mapping of chain_id, registry, event_type (got {shown(spec)})")
        return None
    before = sink.count
    check_keys(spec, ON_KEYS, sink, path)
    on: dict[str, frozenset[Any]] = {}
    for key in ON_KEYS:
        if key not in spec:
            continue
        values = spec[key] if isinstance(spec[key], list) else [spec[key]]
        if not values:
            sink.at((*path, key), "must not be an empty list (leave the key out to match any)")
            continue
        for value in values:
            _check_on_value(key, value, sink, (*path, key))
        on[key] = frozenset(values)
    return on if sink.count == before else None


def _check_on_value(key: str, value: Any, sink: Problems, path: Path) -> None:
    if key == "chain_id":
        if type(value) is not int or value <= 0:
            sink.at(path, f"must be a positive integer chain id (got {shown(value)})")
    elif not isinstance(value, str) or not value:
        sink.at(path, f"must be a non-empty string (got {shown(value)})")
    elif key == "registry" and value not in REGISTRIES:
        sink.at(
            path,
            f"must be one of {', '.join(REGISTRIES)} (got {shown(value)})"
            f"{suggest(value, REGISTRIES)}",
        )


def _compile_per(spec: Any, sink: Problems, path: Path = ("per",)) -> tuple[str, ...] | None:
    if spec is None:
        return ()
    names = spec if isinstance(spec, list) else [spec]
    if not names:
        sink.at(path, "must name at least one event field (leave it out for one group)")
        return None
    return event_field_names(spec, sink, path)

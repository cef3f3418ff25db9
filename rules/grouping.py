"""`group` (digests) and `resolve` (resolved notices): their compiled specs and contexts.

Pure: compiling the two keys, naming a digest group, the template contexts of a digest
and of a resolved notice, and when a digest group falls due.  The engine keeps the
firings and the open alerts in PostgreSQL (engine.digests, engine.resolves); everything
here is a function of its arguments, so rule tests and the engine agree.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from rules.action_specs import compile_actions
from rules.fields import fold_hex
from rules.model import ActionSpec, canonical_json
from rules.reporting import Problems, shown
from rules.shapes import check_keys, duration, event_field_names, positive_int
from rules.template_check import check_templates
from rules.yaml_source import Path

DEFAULT_WAIT_S: Final = 30
DEFAULT_INTERVAL_S: Final = 300
DEFAULT_MAX_FIRINGS: Final = 50
#: A digest never lists more firings than this (it still counts all of them).
MAX_LISTED_FIRINGS: Final = 1000
#: The names a digest's templates get besides event, rule, group, state, fired_at (their
#: attributes are not checked: `firings` is a list).
DIGEST_CONTEXT: Final[Mapping[str, tuple[str, ...] | None]] = MappingProxyType(
    {"firings": None, "count": None, "more": None}
)
#: What a resolve action's templates get besides the usual names.
RESOLVE_CONTEXT: Final[Mapping[str, tuple[str, ...] | None]] = MappingProxyType(
    {"alert": ("fired_at", "last_fired_at", "resolved_at", "firings")}
)


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A rule's `group`: firings with equal `by` values become one digest."""

    by: tuple[str, ...]
    wait_s: int
    interval_s: int
    max_firings: int

    def key(self, event: Mapping[str, Any]) -> str:
        """The digest group's name: canonical JSON of the `by` values ("[]" without by)."""
        return canonical_json([_plain(fold_hex(event.get(name))) for name in self.by])

    def values(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The `by` values of ``event``, as templates see them under `group`."""
        return {name: _plain(fold_hex(event.get(name))) for name in self.by}

    def due_at(self, now: float, last_sent: float | None) -> float:
        """When a group whose first pending firing comes at ``now`` is sent: after `wait`,
        and never sooner than `interval` after the group's previous digest."""
        due = now + self.wait_s
        if last_sent is not None:
            due = max(due, last_sent + self.interval_s)
        return due


@dataclass(frozen=True, slots=True)
class ResolveSpec:
    """A rule's `resolve`: actions sent once when a group that fired stops meeting `when`."""

    actions: tuple[ActionSpec, ...]
    after_s: int | None


def compile_grouping(
    raw: Mapping[str, Any],
    expanded: Mapping[str, Any],
    per: Sequence[str],
    state_keys: Sequence[str],
    sink: Problems,
    bot_names: Collection[str] | None,
    timeout_limits_s: Mapping[str, float] | None,
) -> tuple[GroupSpec | None, ResolveSpec | None]:
    """A rule's `group` and `resolve` (each None when absent or wrong), templates checked."""
    grouping = compile_group(expanded.get("group"), per, sink)
    resolve = compile_resolve(
        raw.get("resolve"),
        expanded.get("resolve"),
        "when" in expanded,
        sink,
        bot_names,
        timeout_limits_s,
    )
    if resolve is not None:
        check_templates(
            expanded["resolve"]["actions"],
            per,
            state_keys,
            sink,
            extra=RESOLVE_CONTEXT,
            path=("resolve", "actions"),
        )
    return grouping, resolve


def compile_group(spec: Any, per: Sequence[str], sink: Problems) -> GroupSpec | None:
    """`group` (None when absent or wrong); `by` defaults to the rule's `per`."""
    path: Path = ("group",)
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        sink.at(path, f"must be a mapping like {{by: [agent_id], wait: 30s}} (got {shown(spec)})")
        return None
    before = sink.count
    check_keys(spec, ("by", "wait", "interval", "max"), sink, path)
    by = event_field_names(spec.get("by", list(per)), sink, (*path, "by"))
    wait = duration(spec, "wait", sink, path) if "wait" in spec else DEFAULT_WAIT_S
    interval = duration(spec, "interval", sink, path) if "interval" in spec else None
    max_firings = positive_int(
        spec, "max", sink, path, default=DEFAULT_MAX_FIRINGS, maximum=MAX_LISTED_FIRINGS
    )
    if sink.count != before or by is None or wait is None or max_firings is None:
        return None
    return GroupSpec(by, wait, DEFAULT_INTERVAL_S if interval is None else interval, max_firings)


def compile_resolve(
    raw: Any,
    expanded: Any,
    has_when: bool,
    sink: Problems,
    bot_names: Collection[str] | None,
    timeout_limits_s: Mapping[str, float] | None,
) -> ResolveSpec | None:
    """`resolve` (None when absent or wrong); only rules with `when` can be resolved."""
    path: Path = ("resolve",)
    if expanded is None:
        return None
    if not isinstance(expanded, Mapping) or not isinstance(raw, Mapping):
        sink.at(path, f"must be a mapping like {{actions: [...], after: 1h}} (got {shown(raw)})")
        return None
    before = sink.count
    if not has_when:
        sink.at(
            path,
            "needs the rule to have `when:` conditions: a group is resolved when its next"
            " event no longer meets them",
        )
    check_keys(expanded, ("actions", "after"), sink, path, required=("actions",))
    after = duration(expanded, "after", sink, path) if "after" in expanded else None
    actions = compile_actions(
        raw.get("actions"),
        expanded.get("actions"),
        sink,
        bot_names,
        (*path, "actions"),
        timeout_limits_s,
    )
    if sink.count != before:
        return None
    return ResolveSpec(actions, after)


def digest_context(
    rule_context: Mapping[str, Any],
    group: Mapping[str, Any],
    firings: Sequence[Mapping[str, Any]],
    count: int,
    sent_at: str,
) -> dict[str, Any]:
    """The template context of one digest.

    ``firings`` are the stored firings listed (each ``{event, state, fired_at}``, at most
    `max`), ``count`` all the digest holds.  `event` and `state` are the first listed
    firing's, so a template written for single firings still renders.
    """
    first = firings[0] if firings else {}
    return {
        "event": first.get("event", {}),
        "rule": dict(rule_context),
        "group": dict(group),
        "state": first.get("state", {}),
        "fired_at": sent_at,
        "firings": list(firings),
        "count": count,
        "more": max(0, count - len(firings)),
    }


def resolve_context(
    rule_context: Mapping[str, Any],
    group: Mapping[str, Any],
    event: Mapping[str, Any],
    alert: Mapping[str, Any],
    resolved_at: str,
) -> dict[str, Any]:
    """The template context of a resolved notice: ``event`` is the event that resolved
    the group (or, resolved by `after`, the group's last firing's event)."""
    return {
        "event": dict(event),
        "rule": dict(rule_context),
        "group": dict(group),
        "state": {},
        "fired_at": resolved_at,
        "alert": {
            "fired_at": alert.get("fired_at"),
            "last_fired_at": alert.get("last_fired_at"),
            "resolved_at": resolved_at,
            "firings": alert.get("firings", 0),
        },
    }


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | bool):
        return value
    from rules.fields import as_json_number

    number = as_json_number(value)
    return number if number is not None else str(value)

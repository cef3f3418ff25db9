"""The rule key `on_retract: {actions: [...]}`: what to send when an event the rule fired on
is removed from the chain by a reorg (engine.reorgs queues it; docs/chains.md).

The actions are checked exactly like `actions`, with one more template name,
``retracted_at``; they render against the original firing's stored context.  Their
ActionSpec index is negative (-1 for the first), so that their action rows never share
the unique key (trigger_id, event_id, action_index) of the firing's own rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from rules.action_specs import compile_actions
from rules.model import ActionSpec
from rules.reporting import Problems, shown
from rules.shapes import check_keys
from rules.template_check import check_templates

ON_RETRACT_KEYS: Final = ("actions",)
#: The template names an on_retract action has beyond a firing's.
RETRACT_CONTEXT_NAMES: Final = ("retracted_at",)


def retract_action_index(position: int) -> int:
    """The action_index of the on_retract action at ``position`` (0-based): -1, -2, ..."""
    return -(position + 1)


def compile_on_retract(
    raw: Any,
    expanded: Any,
    sink: Problems,
    *,
    per: Sequence[str],
    state_keys: Sequence[str],
    bot_names: Collection[str] | None,
    timeout_limits_s: Mapping[str, float] | None,
) -> tuple[ActionSpec, ...]:
    """The on_retract actions of a rule (``()`` without the key), mistakes reported."""
    if expanded is None:
        return ()
    path = ("on_retract",)
    if not isinstance(expanded, Mapping):
        sink.at(path, f"must be a mapping with `actions` (got {shown(expanded)})")
        return ()
    check_keys(expanded, ON_RETRACT_KEYS, sink, path, required=("actions",))
    raw_actions = raw.get("actions") if isinstance(raw, Mapping) else None
    expanded_actions = expanded.get("actions")
    if "actions" not in expanded:
        return ()
    specs = compile_actions(
        raw_actions,
        expanded_actions,
        sink,
        bot_names,
        path=(*path, "actions"),
        timeout_limits_s=timeout_limits_s,
    )
    if isinstance(expanded_actions, list):
        check_templates(
            expanded_actions,
            per,
            state_keys,
            sink,
            path=(*path, "actions"),
            extra=dict.fromkeys(RETRACT_CONTEXT_NAMES),
        )
    return tuple(
        dataclasses.replace(spec, index=retract_action_index(spec.index)) for spec in specs
    )


def retract_actions_of(expanded: Mapping[str, Any]) -> list[Any]:
    """The expanded on_retract action list of a rule mapping, [] when absent or malformed
    (for working out which event columns the stored context must keep)."""
    spec = expanded.get("on_retract")
    actions = spec.get("actions") if isinstance(spec, Mapping) else None
    return actions if isinstance(actions, list) else []

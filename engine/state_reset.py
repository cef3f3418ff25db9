"""``engine rules reset-state ID [--group FIELD=VALUE ...]``: forget a rule's stored state.

The operator's remedy for state that should not be there (a window or throttle filled
before event times were bounded, a group to start afresh).  The rows go from
``trigger_state``; the rule starts again as if it had never seen an event of that group.

Safe while ``engine run`` evaluates: the daemon keeps no state in memory between batches
(each batch loads it from ``trigger_state`` after advancing its cursor row), and the reset
holds every cursor row while it deletes, so it falls between two batches: a batch already
running finishes first, the next one reads the state without the reset rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sql
from rules.errors import EngineError
from rules.fields import fold_hex, suggest

#: Groups named in an error about a group that does not exist, as examples.
SHOWN_GROUPS = 5


@dataclass(frozen=True)
class ResetReport:
    """What was reset: the rule and the groups removed, each as its per values."""

    rule_id: str
    per: tuple[str, ...]
    groups: tuple[dict[str, Any], ...]

    def lines(self) -> list[str]:
        """What `engine rules reset-state` prints."""
        if not self.groups:
            return [f"rule '{self.rule_id}' had no stored state; nothing to reset"]
        lines = [f"reset the state of rule '{self.rule_id}': {len(self.groups)} group(s)"]
        lines.extend(f"  {describe_group(group)}" for group in self.groups)
        return lines


def parse_group(assignments: Sequence[str]) -> dict[str, str]:
    """``--group agent_id=42`` options as {field: value text}."""
    wanted: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise EngineError(
                f"--group expects FIELD=VALUE, e.g. --group agent_id=42 (got {item!r})"
            )
        wanted[name.strip()] = value
    return wanted


def reset_state(database_url: str, rule_id: str, group: Mapping[str, str]) -> ResetReport:
    """Delete the stored state of ``rule_id`` (only the groups matching ``group`` if given).

    Raises EngineError for a rule the engine does not know, a field that is not one of the
    rule's `per` fields, or a group that has no state.
    """
    with sql.connect(database_url, autocommit=False) as conn, conn.transaction():
        sql.run(conn, "reset_state_hold_cursors")
        row = sql.fetch_one(conn, "reset_state_rule_per", rule_id)
        keys = [r[0] for r in sql.fetch_all(conn, "reset_state_group_keys", rule_id)]
        if row is None and not keys:
            known = [r[0] for r in sql.fetch_all(conn, "triggers_all")]
            raise EngineError(
                f"no rule '{rule_id}'{suggest(rule_id, known)}: `engine rules reset-state` takes"
                " the id of a rule `engine run` has loaded (`engine status` lists them)"
            )
        per = _per_fields(None if row is None else row[0])
        chosen = _matching(rule_id, per, keys, group)
        deleted = [r[0] for r in sql.fetch_all(conn, "reset_state_delete", rule_id, chosen)]
    return ResetReport(rule_id, per, tuple(_group_values(per, key) for key in sorted(deleted)))


def describe_group(group: Mapping[str, Any]) -> str:
    """``agent_id=42 chain_id=1``; the one group of a rule without `per` has no values."""
    if not group:
        return "(the rule's only group: it has no per)"
    return " ".join(f"{name}={_as_text(value)}" for name, value in group.items())


def _per_fields(raw: str | None) -> tuple[str, ...]:
    """The rule's `per` fields from its stored document (JSON text; None: no per)."""
    per = None if raw is None else json.loads(raw)
    if isinstance(per, str):
        return (per,)
    if isinstance(per, list):
        return tuple(str(name) for name in per)
    return ()


def _matching(
    rule_id: str, per: tuple[str, ...], keys: list[str], group: Mapping[str, str]
) -> list[str]:
    if not group:
        return keys
    unknown = [name for name in group if name not in per]
    if unknown:
        fields = ", ".join(per) if per else "none: the rule has one group"
        raise EngineError(
            f"rule '{rule_id}' has no per field {unknown[0]!r}"
            f"{suggest(unknown[0], per)}; its per fields: {fields}"
        )
    wanted = {name: _as_text(fold_hex(value)) for name, value in group.items()}
    chosen = []
    for key in keys:
        values = _group_values(per, key)
        if all(_as_text(values.get(name)) == text for name, text in wanted.items()):
            chosen.append(key)
    if not chosen:
        asked = " ".join(f"{name}={text}" for name, text in wanted.items())
        examples = "; ".join(describe_group(_group_values(per, k)) for k in keys[:SHOWN_GROUPS])
        have = f"its {len(keys)} group(s) include: {examples}" if keys else "it has no state"
        raise EngineError(f"rule '{rule_id}' has no state for the group {asked}; {have}")
    return chosen


def _group_values(per: tuple[str, ...], key: str) -> dict[str, Any]:
    """The per values a stored group key names (rules.Rule.group_key wrote it)."""
    if not key:
        return {}
    try:
        values = json.loads(key)
    except ValueError:
        return {"group_key": key}
    if not isinstance(values, list) or len(values) != len(per):
        return {"group_key": key}
    return dict(zip(per, values, strict=True))


def _as_text(value: Any) -> str:
    """A per value as typed on the command line: text as is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)

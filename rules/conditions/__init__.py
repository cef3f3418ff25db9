"""Stateful conditions (`when`): one module per family, compiled here by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rules.conditions.base import MAX_WINDOW_ENTRIES, Condition, Outcome
from rules.conditions.change import compile_change
from rules.conditions.count import compile_count
from rules.conditions.ema import compile_ema
from rules.conditions.new import compile_new
from rules.conditions.window import AGGREGATES, compile_window
from rules.fields import suggest
from rules.reporting import Problems, shown
from rules.yaml_source import Path

CONDITIONS = ("ema", "count", "change", "new", *AGGREGATES)

__all__ = ["CONDITIONS", "MAX_WINDOW_ENTRIES", "Condition", "Outcome", "compile_when"]


def compile_when(spec: Any, sink: Problems, path: Path = ("when",)) -> tuple[Condition, ...]:
    """Compile `when` (a mapping, or a list of single-key mappings) to conditions.

    A condition family may appear once per rule: its name is also its template name
    (`state.ema`), which must not be ambiguous.
    """
    if spec is None:
        return ()
    entries: list[tuple[str, Any, Path]] = []
    if isinstance(spec, Mapping):
        entries = [(name, value, (*path, name)) for name, value in spec.items()]
    elif isinstance(spec, list) and spec:
        for i, item in enumerate(spec):
            if not isinstance(item, Mapping) or len(item) != 1:
                sink.at((*path, i), f"must be a mapping with one condition (got {shown(item)})")
                continue
            name, value = next(iter(item.items()))
            entries.append((name, value, (*path, i, name)))
    else:
        sink.at(path, f"must be a mapping of conditions (got {shown(spec)})")
        return ()
    if not entries:
        sink.at(path, "must hold at least one condition: " + ", ".join(CONDITIONS))
    compiled: list[Condition] = []
    seen: set[str] = set()
    for name, value, where in entries:
        if name in seen:
            sink.at(where, "appears twice; a rule may use each condition once")
            continue
        seen.add(name)
        condition = _compile_one(name, value, sink, where)
        if condition is not None:
            compiled.append(condition)
    return tuple(compiled)


def _compile_one(name: str, value: Any, sink: Problems, path: Path) -> Condition | None:
    if name not in CONDITIONS:
        sink.at(
            path,
            f"is not a condition{suggest(name, CONDITIONS)}; use one of " + ", ".join(CONDITIONS),
        )
        return None
    if not isinstance(value, Mapping):
        sink.at(path, f"must be a mapping of settings (got {shown(value)})")
        return None
    if name == "ema":
        return compile_ema(value, sink, path)
    if name == "count":
        return compile_count(value, sink, path)
    if name == "change":
        return compile_change(value, sink, path)
    if name == "new":
        return compile_new(value, sink, path)
    return compile_window(name, value, sink, path)

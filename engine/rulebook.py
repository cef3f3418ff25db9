"""The rules the daemon evaluates: loaded from files, mirrored into ``triggers``, watched.

A load is compiled into a ``RuleSwap`` with no database and no shared state touched, so
the daemon runs it in a thread while events go on being evaluated with the current rules.
Only the files that changed since the last load are compiled again; the others' rules
are taken from that load.  ``RuleBook.apply`` then mirrors the swap into ``triggers`` and
puts into the index only the rules that changed (removing those gone); the daemon calls
it between two batches, never during one.  A load with errors keeps the old rules
running and is reported.  A rule whose logic (on, where, per, when) changed starts with
fresh state; one whose only change is its actions keeps it.

The index also holds the organizations' rules (engine.tenant_rules keeps them up to
date); a file reload never touches those.

This module never evaluates events and never compiles on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from engine.config import Settings
from engine.json_text import to_json
from rules import LoadResult, Rule, RuleIndex, load_rules
from rules.errors import RuleError
from rules.gc_pause import gc_paused
from rules.loader import check_duplicate_ids
from rules.loader import rule_files as list_rule_files
from rules.yaml_source import MAX_ALIASED_VALUES
from sql import query

log = logging.getLogger(__name__)


def rule_files(paths: Sequence[str]) -> dict[str, float]:
    """Every rule file under ``paths`` with its modification time (the watch signature)."""
    found: dict[str, float] = {}
    for raw in paths:
        path = Path(raw)
        candidates = (
            [p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")]
            if path.is_dir()
            else [path]
        )
        for candidate in candidates:
            try:
                found[str(candidate)] = candidate.stat().st_mtime
            except OSError:
                found[str(candidate)] = -1.0
    return found


@dataclass(frozen=True)
class RuleSwap:
    """A compiled load, ready to be swapped in: its rules, or its errors."""

    result: LoadResult

    @property
    def ok(self) -> bool:
        """Whether it may be swapped in (a load with errors is rejected whole)."""
        return not self.result.errors

    @property
    def rules(self) -> list[Rule]:
        return self.result.rules

    @property
    def errors(self) -> list[RuleError]:
        return self.result.errors


@dataclass
class RuleBook:
    """The current rule index plus what the last load reported."""

    paths: tuple[str, ...]
    # What rules may read: by default the default ``rules_env`` of this process's environment.
    environ: Mapping[str, str] = field(default_factory=lambda: Settings().rules_environ())
    bot_names: frozenset[str] | None = None
    timeout_limits_s: Mapping[str, float] | None = None  # the worker's, per action kind
    max_aliased_values: int = MAX_ALIASED_VALUES  # YAML alias expansion, per rule
    index: RuleIndex | None = None
    rules: list[Rule] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    loads: int = 0
    _signature: dict[str, float] = field(default_factory=dict)
    # Per file: its modification time and what loading it gave, reused while unchanged.
    _by_file: dict[str, tuple[float, LoadResult]] = field(default_factory=dict)

    @classmethod
    def for_settings(cls, settings: Settings) -> RuleBook:
        """The rule book of ``settings``: its rule paths, and what loading them takes
        from the config (``Settings.rule_loading``)."""
        return cls(paths=settings.rules, **settings.rule_loading())

    def load(self) -> LoadResult:
        """Load and compile the rule files (no database): only those modified since the
        last load, the others' rules as that load compiled them."""
        with gc_paused():
            return self._load()

    def _load(self) -> LoadResult:
        self._signature = rule_files(self.paths)
        files, errors = list_rule_files(list(self.paths))
        result = LoadResult(errors=errors)
        shared: dict[Any, Any] = {}  # compiled parts common to the files compiled now
        by_file: dict[str, tuple[float, LoadResult]] = {}
        for file in files:
            mtime = self._signature.get(file, -1.0)
            known = self._by_file.get(file)
            if known is None or known[0] != mtime or mtime < 0:
                known = (
                    mtime,
                    load_rules(
                        [file],
                        environ=self.environ,
                        bot_names=self.bot_names,
                        timeout_limits_s=self.timeout_limits_s,
                        max_aliased_values=self.max_aliased_values,
                        shared=shared,
                        check_ids=False,
                    ),
                )
            by_file[file] = known
            loaded = known[1]
            result.rules.extend(loaded.rules)
            result.errors.extend(loaded.errors)
            result.files.extend(loaded.files)
        self._by_file = by_file
        check_duplicate_ids(result)
        return result

    def changed(self) -> bool:
        """Whether a rule file was added, removed or modified since the last load."""
        return rule_files(self.paths) != self._signature

    @staticmethod
    def prepare(result: LoadResult) -> RuleSwap:
        """What to swap in for ``result``: CPU only, safe to run off the event loop."""
        return RuleSwap(result=result)

    def compile(self) -> RuleSwap:
        """Load the rule files: the part of a reload that runs in a thread.  Touches only
        the watch signature and the per-file cache, never the rules being evaluated."""
        return self.prepare(self.load())

    async def apply(
        self,
        conn: asyncpg.Connection,
        swap: RuleSwap,
        *,
        fresh_with: Sequence[Rule] | None = None,
    ) -> bool:
        """Swap in ``swap`` if it has no errors, mirroring it into ``triggers`` first.

        The index is changed only where the files changed.  ``fresh_with`` (the
        organizations' rules, when taking the lead) builds a new index of the files'
        rules and those, in a thread.

        The caller must not be evaluating a batch meanwhile: the state of a rule whose
        logic changed is reset here, and that reset commits before the new index is used.
        """
        self.errors = list(swap.errors)
        if not swap.ok:
            for error in swap.errors:
                log.error("rule file error", extra={"error": str(error)})
            if self.index is not None:
                log.error("rule change rejected: the previous rules keep running")
            if fresh_with is not None:
                self.index = None  # a new leader evaluates nothing until its files load
            return False
        await mirror_rules(conn, swap.rules)
        if fresh_with is not None or self.index is None:
            every = [*swap.rules, *(fresh_with or ())]
            self.index = await asyncio.to_thread(RuleIndex, every)
        else:
            changed = _apply_difference(self.index, self.rules, swap.rules)
            if changed:
                log.info("rule files changed", extra={"rules": changed})
        self.rules = list(swap.rules)
        self.loads += 1
        log.info("rules loaded", extra={"rules": len(self.rules), "files": len(swap.result.files)})
        return True


def _apply_difference(index: RuleIndex, before: Sequence[Rule], after: Sequence[Rule]) -> int:
    """Put into ``index`` the rules of ``after`` that are new or changed, remove those
    gone; how many rules changed."""
    known = {rule.id: rule for rule in before}
    changed = 0
    for rule_id in known.keys() - {rule.id for rule in after}:
        index.remove(rule_id)
        changed += 1
    for rule in after:
        old = known.get(rule.id)
        if old is not None and old.content_hash == rule.content_hash:
            continue  # unchanged, or its file was only touched
        index.put(rule)
        changed += 1
    return changed


@dataclass
class _MirrorPlan:
    """What ``triggers_mirror`` changes: ids to delete, ids whose state resets, upserts."""

    deleted: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    logic_changed: list[str] = field(default_factory=list)
    upserts: list[Rule] = field(default_factory=list)

    def parameters(self) -> tuple[list[Any], ...]:
        """The query's parameters: two id arrays, then one array per upserted column."""
        rules = self.upserts
        return (
            self.deleted,
            self.reset,
            [rule.id for rule in rules],
            [rule.owner for rule in rules],
            [rule.description for rule in rules],
            [rule.enabled for rule in rules],
            [to_json(rule.document) for rule in rules],
            [rule.source_file for rule in rules],
            [rule.content_hash for rule in rules],
            [rule.logic_hash for rule in rules],
        )


def _plan_mirror(
    known: Mapping[str, Any], rules: Sequence[Rule]
) -> tuple[_MirrorPlan, tuple[list[Any], ...]]:
    plan = _MirrorPlan()
    wanted = {rule.id for rule in rules}
    plan.deleted = sorted(known.keys() - wanted)
    plan.reset = list(plan.deleted)
    for rule in rules:
        before = known.get(rule.id)
        if before is not None and before["content_hash"] == rule.content_hash:
            continue
        if before is not None and before["logic_hash"] != rule.logic_hash:
            plan.logic_changed.append(rule.id)
        plan.upserts.append(rule)
    plan.reset += plan.logic_changed
    return plan, plan.parameters()


async def mirror_rules(conn: asyncpg.Connection, rules: Sequence[Rule]) -> None:
    """Make ``triggers`` equal to ``rules``; reset state where a rule's logic changed.

    One statement writes every change (arrays, not a statement per rule), so a reload
    of many rules costs the daemon a few round trips.
    """
    async with conn.transaction():
        known = {r["id"]: r for r in await conn.fetch(query("triggers_all"))}
        # Comparing and serializing every rule is CPU: not on the event loop.
        plan, parameters = await asyncio.to_thread(_plan_mirror, known, rules)
        if plan.deleted or plan.upserts:
            await conn.execute(query("triggers_mirror"), *parameters)
    for trigger_id in plan.logic_changed:
        log.info("rule logic changed: state reset", extra={"trigger_id": trigger_id})

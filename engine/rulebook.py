"""The rules the daemon evaluates: loaded from files, mirrored into ``triggers``, watched.

A changed file is validated first and applied atomically between two batches; a bad
edit keeps the old rules running and is reported.  A rule whose logic (on, where, per,
when) changed starts with fresh state; one whose only change is its actions keeps it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from engine.json_text import to_json
from rules import LoadResult, Rule, RuleIndex, load_rules
from rules.errors import RuleError
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


@dataclass
class RuleBook:
    """The current rule index plus what the last load reported."""

    paths: tuple[str, ...]
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    bot_names: frozenset[str] | None = None
    index: RuleIndex | None = None
    rules: list[Rule] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    loads: int = 0
    _signature: dict[str, float] = field(default_factory=dict)

    def load(self) -> LoadResult:
        """Load and compile every rule file (no database)."""
        self._signature = rule_files(self.paths)
        return load_rules(list(self.paths), environ=self.environ, bot_names=self.bot_names)

    def changed(self) -> bool:
        return rule_files(self.paths) != self._signature

    async def apply(self, conn: asyncpg.Connection, result: LoadResult) -> bool:
        """Swap in ``result`` if it has no errors, mirroring it into ``triggers``."""
        self.errors = list(result.errors)
        if result.errors:
            for error in result.errors:
                log.error("rule file error", extra={"error": str(error)})
            if self.index is not None:
                log.error("rule change rejected: the previous rules keep running")
            return False
        await mirror_rules(conn, result.rules)
        self.rules = list(result.rules)
        self.index = RuleIndex(self.rules)
        self.loads += 1
        log.info("rules loaded", extra={"rules": len(self.rules), "files": len(result.files)})
        return True


async def mirror_rules(conn: asyncpg.Connection, rules: Sequence[Rule]) -> None:
    """Make ``triggers`` equal to ``rules``; reset state where a rule's logic changed."""
    async with conn.transaction():
        known = {r["id"]: r for r in await conn.fetch(query("triggers_all"))}
        wanted = {rule.id for rule in rules}
        for trigger_id in known.keys() - wanted:
            await conn.execute(query("trigger_delete"), trigger_id)
            await conn.execute(query("trigger_state_reset"), trigger_id)
        for rule in rules:
            before = known.get(rule.id)
            if before is not None and before["content_hash"] == rule.content_hash:
                continue
            if before is not None and before["logic_hash"] != rule.logic_hash:
                await conn.execute(query("trigger_state_reset"), rule.id)
                log.info("rule logic changed: state reset", extra={"trigger_id": rule.id})
            await conn.execute(
                query("trigger_upsert"),
                rule.id,
                rule.owner,
                rule.description,
                rule.enabled,
                to_json(rule.document),
                rule.source_file,
                rule.content_hash,
                rule.logic_hash,
            )

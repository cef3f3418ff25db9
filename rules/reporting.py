"""Collects rule-file mistakes as RuleErrors that name the file, the line and the rule id.

Validation code never raises for a user mistake: it reports here and carries on, so that
`engine check` shows every error of every file at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rules.errors import RuleError
from rules.yaml_source import LineMap, Path

T = TypeVar("T")


def dotted(path: Path) -> str:
    """``('when', 'ema', 'window')`` -> ``when.ema.window``; list items as ``actions[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def shown(value: Any) -> str:
    """A short, readable rendering of a user's value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class Problems:
    """Error sink for one file; ``rule()`` gives a view scoped to one rule.

    ``shared`` holds the compiled parts of the load so far (see ``share``); one table
    serves every file of a load and is dropped with it.
    """

    file: str
    lines: LineMap
    errors: list[RuleError] = field(default_factory=list)
    base: Path = ()
    rule_id: str | None = None
    shared: dict[Any, Any] = field(default_factory=dict)

    def rule(self, base: Path, rule_id: str | None) -> Problems:
        """A sink that shares this one's error list, for the rule at ``base``."""
        return Problems(self.file, self.lines, self.errors, base, rule_id, self.shared)

    def share(self, key: Any, build: Callable[[], T]) -> T:
        """The part compiled earlier in this load under ``key``, else ``build()``.

        100,000 rules repeat a few predicates, actions and conditions; one object each
        keeps a rule small.  ``key`` must name everything ``build`` depends on, and a part
        is kept only when ``build`` reported nothing (its errors belong to each rule).
        """
        found = self.shared.get(key)
        if found is not None:
            return found  # type: ignore[no-any-return]
        before = self.count
        built = build()
        if self.count == before and built is not None:
            self.shared[key] = built
        return built

    def at(self, path: Path, message: str, *, prefix: bool = True) -> None:
        """Report ``message`` about the value at ``path`` (relative to the rule).

        With ``prefix`` the message starts with the dotted path: ``when.ema.window must …``.
        """
        text = f"{dotted(path)} {message}" if prefix and path else message
        line = self.lines.line_of((*self.base, *path))
        self.errors.append(RuleError(text, file=self.file, line=line, rule_id=self.rule_id))

    @property
    def count(self) -> int:
        """How many errors were reported so far (to tell whether a part compiled cleanly)."""
        return len(self.errors)

"""Which silence, if any, holds back a firing: pure matching, shared by `engine run`
(at evaluation) and `engine worker` (before each attempt at a queued firing).

A silence names a rule id glob (fnmatch: ``*``, ``?``, ``[…]``) and matchers
``NAME=VALUE``; it holds back a firing of a rule whose id matches the glob when every
matcher's name is one of the rule's labels or one of the firing's group (`per`) values,
and equals it as text (rules.labels.label_text).  A matcher naming neither never holds.
An organization's silence applies only to its own rules, and its glob reads the rule id
as the organization wrote it; the operator's applies to every rule, by engine-wide id
(an organization's rule is ``<org_id>/<rule id>``).  No I/O here.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rules.labels import label_text


@dataclass(frozen=True, slots=True)
class Silence:
    """One silence as the engine's processes hold it (times in epoch seconds)."""

    id: int
    org_id: int | None
    rule_glob: str
    matchers: Mapping[str, str]
    starts_at: float
    ends_at: float

    def holds(
        self,
        rule_id: str,
        org_id: int | None,
        labels: Mapping[str, Any],
        group: Mapping[str, Any],
        now: float,
    ) -> bool:
        """Whether this silence holds back a firing of ``rule_id`` at ``now``."""
        if not self.starts_at <= now < self.ends_at:
            return False
        if self.org_id is not None:
            prefix = f"{self.org_id}/"
            if org_id != self.org_id or not rule_id.startswith(prefix):
                return False
            rule_id = rule_id[len(prefix) :]
        if not _glob(self.rule_glob).match(rule_id):
            return False
        for name, wanted in self.matchers.items():
            if name in labels:
                value = labels[name]
            elif name in group:
                value = group[name]
            else:
                return False
            if label_text(value) != label_text(wanted):
                return False
        return True


def _glob(pattern: str) -> re.Pattern[str]:
    compiled = _GLOBS.get(pattern)
    if compiled is None:
        if len(_GLOBS) > 4096:
            _GLOBS.clear()
        compiled = _GLOBS[pattern] = re.compile(fnmatch.translate(pattern))
    return compiled


_GLOBS: dict[str, re.Pattern[str]] = {}


class SilenceSet:
    """The silences a process knows of; ``holding`` answers per firing."""

    def __init__(self, silences: Iterable[Silence] = ()) -> None:
        self.silences = tuple(silences)

    def __bool__(self) -> bool:
        return bool(self.silences)

    def __len__(self) -> int:
        return len(self.silences)

    def holding(
        self,
        rule_id: str,
        org_id: int | None,
        labels: Mapping[str, Any],
        group: Mapping[str, Any],
        now: float,
    ) -> int | None:
        """The id of the first (oldest) silence holding back this firing, or None."""
        for silence in self.silences:
            if silence.holds(rule_id, org_id, labels, group, now):
                return silence.id
        return None

    @classmethod
    def from_json(cls, text: str) -> SilenceSet:
        """From the JSON array the noise_controls_active query returns."""
        return cls(
            Silence(
                id=int(item["id"]),
                org_id=None if item["org_id"] is None else int(item["org_id"]),
                rule_glob=str(item["rule_glob"]),
                matchers={str(k): str(v) for k, v in (item["matchers"] or {}).items()},
                starts_at=float(item["starts_at"]),
                ends_at=float(item["ends_at"]),
            )
            for item in json.loads(text)
        )


def parse_matcher(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of ``--match``; ValueError with advice when malformed."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(
            f"a matcher is NAME=VALUE, e.g. agent_id=42 or severity=page (got {text!r})"
        )
    return name, value.strip()

"""The ``chains:`` section of config.yaml: what the engine knows about each chain.

    chains:
      default: {confirmations: 0}                     # every chain not listed
      84532: {confirmations: 3, name: base-sepolia}

``confirmations: N`` (0 by default): an event of the chain is evaluated only once its
block is at least N blocks below the chain's head (engine.confirmations).  Only parsing
and the settings live here; nothing reads the database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rules.errors import ConfigError

#: The key of the settings for every chain not listed.
DEFAULT_KEY = "default"

#: Builds the error for a key path: (keys, what was expected, what was there).
Fail = Callable[[tuple[str, ...], str, Any], ConfigError]


@dataclass(frozen=True)
class ChainSettings:
    """One chain's entry (or the default's)."""

    confirmations: int = 0  # blocks below the head before an event is evaluated
    name: str | None = None  # shown by `engine status`


@dataclass(frozen=True)
class ChainsSettings:
    """``chains:``: per chain id, and the default for the chains not listed."""

    default: ChainSettings = field(default_factory=ChainSettings)
    by_id: Mapping[int, ChainSettings] = field(default_factory=dict)

    def confirmations_of(self, chain_id: int) -> int:
        return self.by_id.get(chain_id, self.default).confirmations

    def name_of(self, chain_id: int) -> str | None:
        entry = self.by_id.get(chain_id)
        return None if entry is None else entry.name

    @property
    def holds_any(self) -> bool:
        """Whether some chain's events wait for confirmations."""
        return self.default.confirmations > 0 or any(
            c.confirmations > 0 for c in self.by_id.values()
        )


def parse_chains(value: Any, fail: Fail) -> ChainsSettings:
    """The section as written (None: absent), checked; errors come from ``fail``."""
    if value is None:
        return ChainsSettings()
    if not isinstance(value, Mapping):
        raise fail(("chains",), "a mapping of chain id to {confirmations: N, name: ...}", value)
    default = ChainSettings()
    by_id: dict[int, ChainSettings] = {}
    for key, entry in value.items():
        path = ("chains", str(key))
        if key == DEFAULT_KEY:
            default = _chain(entry, path, fail, named=False)
            continue
        chain_id = key if isinstance(key, int) and not isinstance(key, bool) else None
        if isinstance(key, str) and key.isdigit():
            chain_id = int(key)
        if chain_id is None or chain_id < 0:
            raise fail(path, f"a chain id (a whole number) or {DEFAULT_KEY!r}", key)
        by_id[chain_id] = _chain(entry, path, fail, named=True)
    return ChainsSettings(default=default, by_id=by_id)


def _chain(entry: Any, path: tuple[str, ...], fail: Fail, *, named: bool) -> ChainSettings:
    if not isinstance(entry, Mapping):
        raise fail(path, "a mapping such as {confirmations: 3}", entry)
    allowed = ("confirmations", "name") if named else ("confirmations",)
    for key in entry:
        if key not in allowed:
            raise fail((*path, str(key)), f"one of {', '.join(allowed)}", key)
    confirmations = entry.get("confirmations", 0)
    if isinstance(confirmations, bool) or not isinstance(confirmations, int) or confirmations < 0:
        raise fail((*path, "confirmations"), "a whole number of blocks, 0 or more", confirmations)
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        raise fail((*path, "name"), "a string", name)
    return ChainSettings(confirmations=confirmations, name=name)

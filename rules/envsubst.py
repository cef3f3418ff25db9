"""``${VAR}`` and ``${VAR:-default}`` expansion in loaded YAML values.

Used for config files and rule files alike.  Rules read the environment through a
``RuleEnvironment``: the variables the operator's ``rules_env`` allows, so a rule file
cannot post the engine's own DSNs or tokens anywhere.  Expansion can report the values it
took from the environment, so whoever records or logs the result can mask exactly those.
The result never goes back to the database (secrets stay in the environment).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from rules.errors import EngineError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class UnsetVariableError(EngineError):
    """A ``${VAR}`` without default names a variable that is not set."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"environment variable {name} is not set (use ${{{name}:-default}})")


class DisallowedVariableError(UnsetVariableError):
    """A ``${VAR}`` names a variable the operator's ``rules_env`` does not let rules read."""

    def __init__(self, name: str, allowed_by: str) -> None:
        super().__init__(name)
        self.allowed_by = allowed_by
        self.args = (
            f"${{{name}}} is not in rules_env ({allowed_by}); add it there to let rules read it",
        )


class RuleEnvironment(Mapping[str, str]):
    """The environment as rules see it: only the variables ``allows`` lets through.

    ``patterns`` are fnmatch globs (case-sensitive, like variable names); a name that
    ``sensitive`` matches passes only when a pattern names it exactly, so a glob such as
    ``TELEGRAM_*`` never hands out ``TELEGRAM_BOT_TOKEN``.  ``allowed_by`` says where the
    patterns come from, for error messages.
    """

    def __init__(
        self,
        environ: Mapping[str, str],
        patterns: Iterable[str],
        *,
        sensitive: Callable[[str], bool] = lambda name: False,
        allowed_by: str = "rules_env",
    ) -> None:
        self.patterns = tuple(patterns)
        self.allowed_by = allowed_by
        self._sensitive = sensitive
        self._visible = {k: v for k, v in environ.items() if self.allows(k)}

    def allows(self, name: str) -> bool:
        """Whether rules may read ``name`` (set or not)."""
        if name in self.patterns:
            return True
        if self._sensitive(name):
            return False
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns)

    def __getitem__(self, name: str) -> str:
        return self._visible[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._visible)

    def __len__(self) -> int:
        return len(self._visible)


def expand_string(
    text: str, environ: Mapping[str, str], substituted: set[str] | None = None
) -> str:
    """Expand every ``${VAR}`` / ``${VAR:-default}`` in ``text``.

    Values taken from ``environ`` (not defaults, which the file shows anyway) are added to
    ``substituted`` when given.
    """

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if isinstance(environ, RuleEnvironment) and not environ.allows(name):
            raise DisallowedVariableError(name, environ.allowed_by)
        value = environ.get(name)
        if value is not None and (value != "" or default is None):
            if substituted is not None:
                substituted.add(value)
            return value
        if default is not None:
            return default
        raise UnsetVariableError(name)

    return _VAR.sub(substitute, text)


def expand_env(
    value: Any,
    environ: Mapping[str, str],
    *,
    on_error: Callable[[UnsetVariableError, tuple[str | int, ...]], None] | None = None,
    substituted: set[str] | None = None,
    _path: tuple[str | int, ...] = (),
) -> Any:
    """Return a copy of ``value`` with variables expanded in every string leaf.

    With ``on_error`` every unset (or disallowed) variable is reported (with the path of
    the leaf) and the leaf is left as written, so a caller can collect all errors instead
    of the first.  ``substituted`` collects the values taken from the environment.
    """
    if isinstance(value, str):
        if "${" not in value:
            return value
        try:
            return expand_string(value, environ, substituted)
        except UnsetVariableError as exc:
            if on_error is None:
                raise
            on_error(exc, _path)
            return value
    if isinstance(value, Mapping):
        return {
            k: expand_env(
                v, environ, on_error=on_error, substituted=substituted, _path=(*_path, str(k))
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            expand_env(v, environ, on_error=on_error, substituted=substituted, _path=(*_path, i))
            for i, v in enumerate(value)
        ]
    return value


def has_variables(value: Any) -> bool:
    """True when a string leaf of ``value`` holds a ``${VAR}`` reference."""
    if isinstance(value, str):
        return _VAR.search(value) is not None
    if isinstance(value, Mapping):
        return any(has_variables(v) for v in value.values())
    if isinstance(value, list):
        return any(has_variables(v) for v in value)
    return False


def variable_names(value: Any) -> set[str]:
    """The names of every ``${VAR}`` referenced in a string leaf of ``value``."""
    if isinstance(value, str):
        return {match.group(1) for match in _VAR.finditer(value)}
    if isinstance(value, Mapping):
        return set().union(*(variable_names(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(variable_names(v) for v in value))
    return set()

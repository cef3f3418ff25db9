"""``${VAR}`` and ``${VAR:-default}`` expansion in loaded YAML values.

Used for config files and rule files alike.  Expansion happens once, on load; the
result never goes back to the database (secrets stay in the environment).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from rules.errors import EngineError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class UnsetVariableError(EngineError):
    """A ``${VAR}`` without default names a variable that is not set."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"environment variable {name} is not set (use ${{{name}:-default}})")


def expand_string(text: str, environ: Mapping[str, str]) -> str:
    """Expand every ``${VAR}`` / ``${VAR:-default}`` in ``text``."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is not None and (value != "" or default is None):
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
    _path: tuple[str | int, ...] = (),
) -> Any:
    """Return a copy of ``value`` with variables expanded in every string leaf.

    With ``on_error`` every unset variable is reported (with the path of the leaf) and the
    leaf is left as written, so a caller can collect all errors instead of the first.
    """
    if isinstance(value, str):
        if "${" not in value:
            return value
        try:
            return expand_string(value, environ)
        except UnsetVariableError as exc:
            if on_error is None:
                raise
            on_error(exc, _path)
            return value
    if isinstance(value, Mapping):
        return {
            k: expand_env(v, environ, on_error=on_error, _path=(*_path, str(k)))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            expand_env(v, environ, on_error=on_error, _path=(*_path, i))
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

"""The import directions between our packages, checked on the source.

``rules`` is pure: nothing of ours outside itself and no I/O library.  ``actions`` never
imports ``engine`` (the worker's code must not pull in the daemon) nor ``devkit``.
``engine`` never imports ``devkit``, except engine/cli.py's imports inside the functions
of ``engine up`` and ``engine bench``, so the daemon never loads the dev tooling.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
OURS = {"engine", "actions", "devkit", "sql", "tests"}
IO_LIBRARIES = {
    "socket",
    "subprocess",
    "httpx",
    "asyncpg",
    "psycopg",
    "redis",
    "rq",
    "requests",
    "urllib",
}
# (file, imported package) pairs allowed inside a function body, not at module level.
LAZY_DEVKIT_IMPORTS = {("engine/cli.py", "devkit")}


def imports(package: str) -> Iterator[tuple[str, str, bool]]:
    """(file relative to the root, top-level package imported, at module level) of
    every absolute import in ``package``."""
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        in_function = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            module_level = id(node) not in in_function
            for name in names:
                yield str(path.relative_to(ROOT)), name.split(".")[0], module_level


def test_rules_imports_only_the_standard_library_and_its_own_dependencies():
    for path, name, _ in imports("rules"):
        assert name not in OURS | IO_LIBRARIES, f"{path}: imports {name}"


def test_actions_never_imports_engine_or_devkit():
    for path, name, _ in imports("actions"):
        assert name not in {"engine", "devkit", "tests"}, f"{path}: imports {name}"


def test_engine_imports_devkit_only_lazily_in_the_cli():
    for path, name, module_level in imports("engine"):
        if name == "tests":
            raise AssertionError(f"{path}: imports {name}")
        if name == "devkit":
            lazy = (path, name) in LAZY_DEVKIT_IMPORTS and not module_level
            assert lazy, f"{path}: imports devkit (only engine/cli.py may, inside a function)"


def test_the_checks_see_imports_at_every_level():
    """The walk finds module-level, function-level and nested imports (or the tests above
    would pass by seeing nothing)."""
    found = set(imports("engine"))
    assert ("engine/cli.py", "devkit", False) in found
    assert ("engine/daemon.py", "asyncpg", True) in found

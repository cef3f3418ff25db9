"""`rules` is pure: it imports nothing of ours outside itself and no I/O library."""

from __future__ import annotations

import ast
from pathlib import Path

RULES = Path(__file__).resolve().parents[3] / "rules"
FORBIDDEN = {
    "engine",
    "actions",
    "tests",
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


def test_rules_imports_only_the_standard_library_and_its_own_dependencies():
    for path in RULES.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path}: imports {name}"

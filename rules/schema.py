"""The JSON Schema (draft-07) of rule files, shipped as rules/rules.schema.json.

Editors use it (yaml-language-server) to complete and check rule files; the loader does its
own, more precise checks (lines, column types, durations, templates) and tests keep the two
in agreement on the examples.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

SCHEMA_FILE = "rules.schema.json"


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files("rules").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def rule_file_schema() -> dict[str, Any]:
    """The draft-07 JSON Schema of a rule file (a fresh copy each call)."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema

"""Named SQL, loaded from the ``sql`` package: ``-- name: x`` blocks in queries.sql and
numbered migration files.  SQL is never assembled from values here or anywhere else."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z0-9_]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str


def _read(resource: str) -> str:
    return resources.files("sql").joinpath(resource).read_text(encoding="utf-8")


@cache
def queries() -> dict[str, str]:
    """Every named query of ``sql/queries.sql``."""
    text = _read("queries.sql")
    found: dict[str, str] = {}
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"sql/queries.sql: query {name!r} defined twice")
        found[name] = body.strip()
    return found


def query(name: str) -> str:
    """The SQL of one named query (KeyError names it when missing)."""
    try:
        return queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/queries.sql") from None


def migrations() -> list[Migration]:
    """The numbered migration files, in order."""
    names = sorted(
        entry.name
        for entry in resources.files("sql").iterdir()
        if re.match(r"^\d{3}_.+\.sql$", entry.name)
    )
    return [Migration(name=n.removesuffix(".sql"), sql=_read(n)) for n in names]

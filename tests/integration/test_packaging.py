"""A non-editable install (what the Dockerfile does) ships what `engine` needs at run
time: the migrations and named queries of sql/, and the rule schema.

Built from a copy of the sources (a stale build/ in the repository must not leak in),
offline (--no-build-isolation: setuptools comes from the dev extras) and without
dependencies (--no-deps: they are the venv's), so it takes a few seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from sql import migrations
from tests.processes import ROOT

SOURCES = ("pyproject.toml", "README.md", "engine", "rules", "actions", "sql")


def _pip(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_wheel_install_ships_migrations_queries_and_schema(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    wheels = tmp_path / "wheels"
    _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), ".", cwd=source)
    [wheel] = wheels.glob("trigger_engine-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"sql/{p.name}" for p in (ROOT / "sql").glob("*.sql")}
    assert expected <= names
    assert {"sql/001_schema.sql", "sql/002_stats.sql", "sql/queries.sql"} <= names
    assert "rules/rules.schema.json" in names
    # Every package of the source tree, subpackages included, is in the wheel.
    packages = {
        str(init.relative_to(source))
        for top in ("engine", "rules", "actions", "sql")
        for init in (source / top).rglob("__init__.py")
    }
    assert packages <= names, sorted(packages - names)
    assert not any(name.startswith("tests/") for name in names)
    assert any(n.endswith("entry_points.txt") for n in names)

    target = tmp_path / "site"
    _pip("install", "--no-deps", "--target", str(target), str(wheel), cwd=tmp_path)

    # The container's layout: the example config and rules, no source tree around.
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy2(ROOT / "config.example.yaml", app / "config.yaml")
    shutil.copytree(ROOT / "examples" / "rules", app / "rules")
    env = {
        **os.environ,
        "PYTHONPATH": str(target),
        "ENGINE_CONFIG": str(app / "config.yaml"),
        "ENGINE_RULES": f"[{app / 'rules'}]",
        "ENGINE_HTTP": "{listen: '0.0.0.0:9187'}",
    }
    probe = (
        "import json, engine, sql;"
        "print(json.dumps([engine.__file__, [m.name for m in sql.migrations()],"
        " len(sql.queries())]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=app, env=env, capture_output=True, text=True, check=True
    )
    engine_file, migration_names, query_count = json.loads(done.stdout)
    assert engine_file.startswith(str(target))  # the installed copy, not the repository
    assert migration_names == [m.name for m in migrations()]
    assert query_count > 10

    outputs = {}
    for argv in (["check"], ["rules", "schema"], ["rules", "test"]):
        done = subprocess.run(
            [sys.executable, "-m", "engine", *argv],
            cwd=app,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
        outputs[" ".join(argv)] = done.stdout
    assert outputs["check"].startswith("config OK;")
    assert json.loads(outputs["rules schema"])["$schema"].startswith("http://json-schema.org/")

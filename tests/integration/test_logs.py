"""``--log-format json`` of the real CLI: every line on stderr is a JSON object, and the
database password of the config never appears in it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from devkit.localstack import free_port
from tests.processes import ROOT, wait_until, write_config


def _json_lines(text: str) -> list[dict[str, object]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "no log output"
    return [json.loads(line) for line in lines]


def test_migrate_logs_json_lines(tmp_path: Path, empty_database_url: str) -> None:
    config = write_config(
        tmp_path, database_url=empty_database_url, redis_url="redis://x", rules=[]
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "--log-format",
            "json",
            "--config",
            str(config),
            "migrate",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    docs = _json_lines(done.stderr)
    assert {"ts", "level", "logger", "message"} <= set(docs[0])
    assert any(d["message"] == "migration applied" and "migration" in d for d in docs)


def test_run_against_an_unreachable_database_logs_json_without_the_password(
    tmp_path: Path,
) -> None:
    password = "pw-that-must-not-leak"
    dead = f"postgresql://engine:{password}@127.0.0.1:{free_port()}/engine"
    config = write_config(tmp_path, database_url=dead, redis_url="redis://127.0.0.1:9/0", rules=[])
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "--log-format",
                "json",
                "--config",
                str(config),
                "run",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            cwd=ROOT,
        )
    try:
        wait_until(
            lambda: '"database unavailable"' in stderr_path.read_text(encoding="utf-8"),
            what="a reconnect attempt logged",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    stderr = stderr_path.read_text(encoding="utf-8")
    docs = _json_lines(stderr)
    assert any(d["message"] == "database unavailable" for d in docs), stderr
    assert password not in stderr

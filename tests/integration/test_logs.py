"""``--log-format json`` of the real CLI: every line on stderr is a JSON object, and the
database password of the config never appears in it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from devkit.localstack import free_port
from tests.processes import ROOT, write_config


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
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "--log-format", "json", "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    time.sleep(2.0)  # long enough for a few reconnect attempts
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    docs = _json_lines(stderr)
    assert any(d["message"] == "database unavailable" for d in docs), stderr
    assert password not in stderr

"""``engine status`` reports a known situation the same way in both of its formats:
a cursor behind by three events (two minutes of block time), two queued actions, one
failed, one retrying, rule statistics, a rule file with an error and a live worker."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import psycopg
import pytest

from tests.processes import (
    engine_processes,
    insert_events,
    run_engine,
    wait_until,
    write_config,
)

GOOD_RULE = """
rules:
  - id: any-feedback
    on: {registry: reputation, event_type: NewFeedback}
    actions:
      - rest: {url: "http://127.0.0.1:9/never", body: {a: 1}}
"""
BAD_RULE = """
rules:
  - id: broken
    on: {registry: reputation}
    when:
      ema: {of: score, window: -3, below: 60}
    actions:
      - rest: {url: "http://127.0.0.1:9/never"}
"""


def _situation(tmp_path: Path, database_url: str, redis_url: str) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "good.yaml").write_text(GOOD_RULE, encoding="utf-8")
    (rules / "bad.yaml").write_text(BAD_RULE, encoding="utf-8")
    config = write_config(tmp_path, database_url=database_url, redis_url=redis_url, rules=[])
    now = int(time.time())
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO engine_cursors (name) VALUES ('main');
           INSERT INTO triggers (id, document, content_hash, logic_hash, enabled)
           VALUES ('any-feedback', '{}', 'c', 'l', true), ('old-rule', '{}', 'c', 'l', false);
           INSERT INTO rule_stats (trigger_id, hour, matched, fired, suppressed, errors)
           VALUES ('any-feedback', date_trunc('hour', now()), 10, 4, 6, 0);
           INSERT INTO action_results (trigger_id, event_id, action_index, action_type,
                                       status, spec, context)
           VALUES ('any-feedback', 'e1', 0, 'rest', 'queued', '{}', '{}'),
                  ('any-feedback', 'e2', 0, 'rest', 'queued', '{}', '{}'),
                  ('any-feedback', 'e3', 0, 'rest', 'failed', '{}', '{}'),
                  ('any-feedback', 'e4', 0, 'rest', 'retrying', '{}', '{}'),
                  ('any-feedback', 'e5', 0, 'rest', 'success', '{}', '{}')"""
        )
    insert_events(
        database_url,
        [
            {
                "registry": "reputation",
                "event_type": "NewFeedback",
                "agent_id": i,
                "timestamp": now - 120 + i,
            }
            for i in range(3)
        ],
    )
    # the config's rules point at the directory with one good and one broken file
    text = config.read_text().replace("rules: []", f"rules: [{rules}]")
    config.write_text(text)
    return config


def test_status_json_and_table_agree_on_a_known_situation(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    config = _situation(tmp_path, database_url, redis_url)
    with engine_processes(config, tmp_path, ["worker"]):
        wait_until(
            lambda: (
                '"workers": [\n' in run_engine(config, "status", "--json").stdout
                and json.loads(run_engine(config, "status", "--json").stdout)["queue"]["workers"]
            ),
            what="the worker to register",
        )
        as_json = run_engine(config, "status", "--json")
        table = run_engine(config, "status")
    assert as_json.returncode == 0, as_json.stderr
    assert table.returncode == 0, table.stderr
    status = json.loads(as_json.stdout)

    [cursor] = status["cursors"]
    assert cursor["name"] == "main"
    assert cursor["pending_events"] == 3
    assert cursor["events_evaluated"] == 0
    assert 115 <= cursor["lag_seconds"] <= 180
    assert status["events_per_second"] == pytest.approx(3 / 60, abs=0.01)

    assert status["actions"] == {
        "queued": 2,
        "running": 0,
        "retrying": 1,
        "success": 1,
        "failed": 1,
        "quota_exceeded": 0,
        "silenced": 0,
        "oldest_queued_seconds": status["actions"]["oldest_queued_seconds"],
    }
    assert (status["silences"], status["disabled_rules"]) == ([], [])
    assert status["rules"]["loaded"] == 2
    assert status["rules"]["enabled"] == 1
    [error] = status["rules"]["file_errors"]
    assert "bad.yaml" in error and "broken" in error and "window" in error
    assert status["rules_last_hour"] == [
        {"rule": "any-feedback", "matched": 10, "fired": 4, "suppressed": 6, "errors": 0}
    ]
    queue = status["queue"]
    assert queue["name"] == "engine-actions"
    assert queue["depth"] == 0
    [worker] = queue["workers"]
    assert worker["name"].startswith("engine-worker-")

    text = table.stdout
    lines = text.splitlines()
    cursor_row = next(line for line in lines if line.strip().startswith("main "))
    assert cursor_row.split()[:3] == ["main", "0", "3"]
    assert re.fullmatch(r"1[1-9]\ds|[23]m", cursor_row.split()[3])  # 115-180 s of lag
    assert "rules: 2 loaded (1 enabled)" in text
    assert "1 error(s) in the rule files" in text
    feedback_row = next(line for line in lines if line.strip().startswith("any-feedback"))
    assert feedback_row.split() == ["any-feedback", "10", "4", "6", "0"]
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["queued", "running"])
    assert lines[header + 1].split() == ["2", "0", "1", "1", "1", "0", "0"]
    assert "engine actions failed" in text  # what to do about the dead letter
    assert "queue engine-actions: 0 waiting" in text
    assert "1 worker(s)" in text
    assert worker["name"] in text
    assert worker["state"] in ("idle", "busy", "started")


def test_status_without_redis_still_reports_the_database(tmp_path: Path, database_url: str) -> None:
    config = write_config(
        tmp_path, database_url=database_url, redis_url="redis://127.0.0.1:9/0", rules=[]
    )
    as_json = run_engine(config, "status", "--json")
    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)
    assert "error" in status["queue"]
    assert status["cursors"] == []
    table = run_engine(config, "status")
    assert "Redis unavailable" in table.stdout
    assert "none yet" in table.stdout

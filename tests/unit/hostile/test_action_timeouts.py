"""A rule cannot ask for an action timeout longer than the worker allows for its kind:
the load refuses it, naming the file, line, rule, key and the config key that sets the limit."""

from __future__ import annotations

from pathlib import Path

from rules import load_rules_text
from tests.processes import run_engine, write_config

RULE = """rules:
  - id: slow-hook
    on: {{registry: reputation, event_type: NewFeedback}}
    actions:
      - rest: {{url: "http://127.0.0.1:9/hook", timeout: {timeout}}}
"""


def test_a_timeout_above_the_kinds_maximum_is_refused_at_load() -> None:
    result = load_rules_text(
        RULE.format(timeout="3650d"), "rules/ops.yaml", environ={}, timeout_limits_s={"rest": 30}
    )
    assert [str(e) for e in result.errors] == [
        "rules/ops.yaml:5 rule 'slow-hook': actions[0].rest.timeout must be at most 30s, the "
        "longest a rest action may take on this deployment (worker.max_rest_timeout_s, at most "
        "worker.job_timeout_s, in the config; got '3650d')"
    ]
    assert not result.rules


def test_a_timeout_within_the_maximum_loads() -> None:
    result = load_rules_text(
        RULE.format(timeout="30s"), "rules/ops.yaml", environ={}, timeout_limits_s={"rest": 30}
    )
    assert not result.errors and [r.id for r in result.rules] == ["slow-hook"]


def test_engine_check_applies_the_configured_maximum(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.format(timeout="2m"), encoding="utf-8")
    config = write_config(
        tmp_path,
        database_url="postgresql://127.0.0.1:9/none",
        redis_url="redis://127.0.0.1:9/0",
        rules=str(rules),
        extra={"worker": {"max_rest_timeout_s": 45}},
    )
    checked = run_engine(config, "check")
    assert checked.returncode == 1
    assert f"{rules}:5 rule 'slow-hook': actions[0].rest.timeout must be at most 20s" in (
        checked.stderr
    ), checked.stderr  # job_timeout_s (20 in tests) caps every kind's maximum
    assert "worker.max_rest_timeout_s" in checked.stderr

"""Bad input at the command line: exit 1, the file, the line and what was expected."""

from __future__ import annotations

from pathlib import Path

from tests.processes import ROOT, run_engine


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_engine(tmp_path / "nope.yaml", "check")
    assert result.returncode == 1
    assert f"{tmp_path / 'nope.yaml'}: cannot read the config file" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_yaml_in_config_names_the_line(tmp_path: Path) -> None:
    config = write(tmp_path / "config.yaml", "database_url: x\nrules: [\n")
    result = run_engine(config, "check")
    assert result.returncode == 1
    assert f"{config}:3: invalid YAML" in result.stderr
    assert "Traceback" not in result.stderr


def test_unset_variable_in_config_is_named(tmp_path: Path) -> None:
    config = write(tmp_path / "config.yaml", "rules: []\nredis_url: ${NO_SUCH_VAR_XYZ}\n")
    result = run_engine(config, "check")
    assert result.returncode == 1
    assert f"{config}:2: redis_url: environment variable NO_SUCH_VAR_XYZ is not set" in (
        result.stderr
    )


def test_wrong_type_in_config(tmp_path: Path) -> None:
    config = write(tmp_path / "config.yaml", "rules: []\nnetwork:\n  allow_private: maybe\n")
    result = run_engine(config, "check")
    assert result.returncode == 1
    assert f"{config}:3: network.allow_private must be true or false (got 'maybe')" in (
        result.stderr
    )


def test_rule_file_errors_all_reported_with_file_line_and_rule(tmp_path: Path) -> None:
    rules = write(
        tmp_path / "ops.yaml",
        """rules:
  - id: bad-one
    on: {registry: reputation}
    where:
      score: {lt: "abc"}
    actions:
      - rest: {url: "http://example.com/x"}
  - id: bad-two
    when:
      ema: {of: score, window: -3, below: 60}
    actions:
      - rest: {url: "http://example.com/x"}
""",
    )
    config = write(tmp_path / "config.yaml", f"rules: [{rules}]\n")
    result = run_engine(config, "check")
    assert result.returncode == 1
    assert f"{rules}:5 rule 'bad-one': where.score.lt" in result.stderr
    assert f"{rules}:10 rule 'bad-two': when.ema.window must be a positive integer (got -3)" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_missing_rule_file_is_reported(tmp_path: Path) -> None:
    config = write(tmp_path / "config.yaml", f"rules: [{tmp_path / 'absent.yaml'}]\n")
    result = run_engine(config, "check")
    assert result.returncode == 1
    assert "absent.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_examples_check_and_their_tests_pass() -> None:
    config = ROOT / "config.example.yaml"
    assert run_engine(config, "check").returncode == 0
    result = run_engine(config, "rules", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout

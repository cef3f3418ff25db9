"""Rule files read only the environment variables the operator's ``rules_env`` allows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from rules import load_rules, load_rules_text
from rules.envsubst import expand_env

ROOT = Path(__file__).resolve().parents[3]
ENVIRON = {
    "WEBHOOK_URL": "http://127.0.0.1:9/hook",
    "TELEGRAM_CHAT_ID": "-1001234567890",
    "TELEGRAM_BOT_TOKEN": "123456:ABCdefGhIJKlmnoPQRstuVWXyz-0123456",
    "ENGINE_DATABASE_URL": "postgresql://engine:hunter22@db:5432/engine",
    "PAYMENTS_API_KEY": "pk_live_abcdef123456",
    "PG_CONNECTION": "postgresql://app:pw@db/app",
    "TEAM_NAME": "ops",
}


def rule_file(value: str) -> str:
    return (
        "rules:\n"
        "  - id: leak\n"
        "    on: {registry: reputation}\n"
        "    actions:\n"
        "      - rest:\n"
        f"          url: '{value}'\n"
    )


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(body)
    return path


def errors(config_path: Path, text: str, environ: dict[str, str] = ENVIRON) -> list[str]:
    settings = load_config(config_path, environ=environ)
    result = load_rules_text(text, "rules/ops.yaml", environ=settings.rules_environ(environ))
    return [str(error) for error in result.errors]


def test_the_default_keeps_the_engines_settings_dsns_and_tokens_from_rules(tmp_path):
    path = config(tmp_path, "database_url: ${PG_CONNECTION}\n")
    for name in ("ENGINE_DATABASE_URL", "TELEGRAM_BOT_TOKEN", "PAYMENTS_API_KEY", "PG_CONNECTION"):
        assert errors(path, rule_file(f"http://x/${{{name}}}")) == [
            f"rules/ops.yaml:6 rule 'leak': ${{{name}}} is not in rules_env ({path}); "
            "add it there to let rules read it"
        ]


def test_the_default_lets_rules_read_ordinary_variables(tmp_path):
    path = config(tmp_path, "{}\n")
    assert errors(path, rule_file("${WEBHOOK_URL}?team=${TEAM_NAME}")) == []


def test_a_disallowed_variable_is_an_error_even_with_a_default(tmp_path):
    # Falling back to the default would hide that the rule reads something it may not.
    path = config(tmp_path, "rules_env: [WEBHOOK_URL]\n")
    assert errors(path, rule_file("http://x/${TEAM_NAME:-x}")) == [
        f"rules/ops.yaml:6 rule 'leak': ${{TEAM_NAME}} is not in rules_env ({path}); "
        "add it there to let rules read it"
    ]


def test_globs_choose_variables_but_never_hand_out_a_token(tmp_path):
    path = config(tmp_path, 'rules_env: [WEBHOOK_URL, "TELEGRAM_*"]\n')
    assert errors(path, rule_file("${WEBHOOK_URL}/${TELEGRAM_CHAT_ID}")) == []
    assert len(errors(path, rule_file("http://x/${TELEGRAM_BOT_TOKEN}"))) == 1
    assert len(errors(path, rule_file("http://x/${TEAM_NAME}"))) == 1


def test_a_sensitive_variable_named_exactly_is_allowed(tmp_path):
    path = config(tmp_path, "rules_env: [WEBHOOK_URL, PAYMENTS_API_KEY]\n")
    assert errors(path, rule_file("${WEBHOOK_URL}?k=${PAYMENTS_API_KEY}")) == []


def test_rules_env_must_be_a_list_of_names(tmp_path):
    path = config(tmp_path, "rules:\n  - x\nrules_env: {a: 1}\n")
    with pytest.raises(Exception, match=r"config.yaml:3: rules_env must be a list of variable"):
        load_config(path, environ={})


def test_the_workers_expansion_refuses_a_disallowed_variable(tmp_path):
    from rules.envsubst import DisallowedVariableError

    settings = load_config(config(tmp_path, "rules_env: [WEBHOOK_URL]\n"), environ=ENVIRON)
    environ = settings.rules_environ(ENVIRON)
    assert expand_env({"url": "${WEBHOOK_URL}"}, environ) == {"url": ENVIRON["WEBHOOK_URL"]}
    with pytest.raises(DisallowedVariableError):
        expand_env({"url": "${ENGINE_DATABASE_URL}"}, environ)
    assert "ENGINE_DATABASE_URL" not in environ


def test_the_example_config_lets_the_example_rules_load(tmp_path):
    settings = load_config(ROOT / "config.example.yaml", environ=ENVIRON)
    result = load_rules(
        [ROOT / "examples" / "rules"],
        environ=settings.rules_environ(ENVIRON),
        bot_names=settings.bot_names,
    )
    assert [str(e) for e in result.errors] == []
    assert result.rules


def test_engine_check_names_the_disallowed_variable(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "ops.yaml").write_text(rule_file("http://x/${ENGINE_DATABASE_URL}"))
    path = config(tmp_path, "rules: [rules]\nrules_env: [WEBHOOK_URL]\n")
    run = subprocess.run(
        [sys.executable, "-m", "engine", "--config", str(path), "check"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **ENVIRON},
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert (
        f"{tmp_path}/rules/ops.yaml:6 rule 'leak': ${{ENGINE_DATABASE_URL}} is not in rules_env "
        f"({path}); add it there to let rules read it"
    ) in run.stderr
    assert ENVIRON["ENGINE_DATABASE_URL"] not in run.stderr + run.stdout

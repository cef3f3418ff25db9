"""Log formatting: JSON lines that parse, and secrets that never reach the output."""

from __future__ import annotations

import json
import logging

import pytest

from engine.logs import JsonFormatter, TextFormatter, redact_text

BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "engine.test", "levelname": "WARNING", "msg": message})
    record.levelno = logging.WARNING
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"POST https://api.telegram.org/bot{BOT_TOKEN}/sendMessage failed", BOT_TOKEN[10:]),
        ("cannot connect to postgresql://engine:s3cret-pw@db:5432/engine", "s3cret-pw"),
        ("host=db port=5432 password=hunter22 dbname=engine", "hunter22"),
        ("host=db password='with space' dbname=engine", "with space"),
        ("Authorization: Bearer sk-abcdefgh12345678", "sk-abcdefgh12345678"),
    ],
)
def test_redact_text_blanks_the_secret_and_keeps_the_rest(text: str, secret: str) -> None:
    redacted = redact_text(text)
    assert secret not in redacted
    assert "<redacted>" in redacted
    assert redacted.split()[0] == text.split()[0] or "<redacted>" in redacted.split()[0]


def test_redact_text_leaves_urls_without_secrets_alone() -> None:
    text = "postgresql://db:5432/engine and https://hooks.example.com/x?y=1"
    assert redact_text(text) == text


def test_json_formatter_gives_one_parseable_line_with_extras_and_no_secrets() -> None:
    record = _record(
        f"delivery to https://api.telegram.org/bot{BOT_TOKEN}/sendMessage failed",
        action_id=7,
        trigger_id="low-score",
        token="plain-token-value",
        error="postgresql://u:pw-in-error@h/db unreachable",
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "warning"
    assert doc["logger"] == "engine.test"
    assert (doc["action_id"], doc["trigger_id"]) == (7, "low-score")
    assert doc["token"] == "<redacted>"
    assert BOT_TOKEN[10:] not in line
    assert "pw-in-error" not in line
    assert "plain-token-value" not in line


def test_text_formatter_redacts_too() -> None:
    line = TextFormatter().format(_record("x", dsn="postgresql://u:pw-text@h/db"))
    assert "pw-text" not in line
    assert "dsn=postgresql://u:<redacted>@h/db" in line

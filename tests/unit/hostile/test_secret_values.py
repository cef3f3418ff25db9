"""SecretValues masks exactly the secret values, in any case, in text, data and log records."""

from __future__ import annotations

import logging

from actions.redact import (
    MASK,
    MIN_SECRET_CHARS,
    SecretLogFilter,
    SecretValues,
    attempt_secrets,
    spec_credentials,
)

TOKEN = "123456:TEST-token-abcdef"


def test_masks_in_any_case_and_longest_first():
    secrets = SecretValues([TOKEN, "TEST-token"])
    text = f"not found: /bot{TOKEN.lower()}/sendmessage and {TOKEN.upper()}"
    assert secrets.redact(text) == f"not found: /bot{MASK}/sendmessage and {MASK}"


def test_masks_data_at_any_depth_and_in_keys_and_numbers():
    secrets = SecretValues(["acct-7f3a9c2e", "-1001234567890"])
    data = {"a": [{"ACCT-7F3A9C2E": {"deep": "x acct-7f3a9c2e y"}}], "chat_id": -1001234567890}
    assert secrets.redact_data(data) == {
        "a": [{MASK: {"deep": f"x {MASK} y"}}],
        "chat_id": MASK,
    }


def test_masks_the_forms_an_echo_takes():
    secrets = SecretValues(['p@ss "word" / x'])
    assert secrets.redact('{"v": "p@ss \\"word\\" / x"}') == f'{{"v": "{MASK}"}}'
    assert secrets.redact("q=p%40ss%20%22word%22%20%2F%20x") == f"q={MASK}"


def test_short_values_and_ordinary_headers_are_not_secrets():
    short = "x" * (MIN_SECRET_CHARS - 1)
    assert SecretValues([short, None, ""]).redact(f"{short} stays") == f"{short} stays"
    spec = {
        "secret": "whsec_abc123",
        "headers": {"Accept": "application/json", "X-Api-Key": "k-123456", "Authorization": "B x"},
    }
    assert sorted(spec_credentials(spec)) == ["B x", "k-123456", "whsec_abc123"]
    assert SecretValues(spec_credentials(spec)).redact("application/json") == "application/json"


def test_log_records_lose_the_running_attempts_secrets(caplog):
    caplog.handler.addFilter(SecretLogFilter())
    log = logging.getLogger("tests.hostile.secrets")
    token = attempt_secrets.set(SecretValues(["acct-7f3a9c2e"]))
    try:
        try:
            raise ValueError("cannot use ACCT-7F3A9C2E")
        except ValueError:
            log.exception("failed for %s", "acct-7f3a9c2e", extra={"error": "acct-7f3a9c2e!"})
    finally:
        attempt_secrets.reset(token)
    log.warning("after the attempt: acct-7f3a9c2e")  # no attempt running: not a secret here
    [during, after] = caplog.records
    assert "7f3a9c2e" not in caplog.handler.format(during).lower()
    assert during.error == f"{MASK}!"
    assert "cannot use" in during.getMessage()
    assert "acct-7f3a9c2e" in after.getMessage()

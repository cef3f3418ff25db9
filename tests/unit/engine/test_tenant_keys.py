"""API keys and the secrets box: pure, no services."""

from __future__ import annotations

import pytest

from engine.tenants.keys import Role, key_lookup, key_matches, new_key
from engine.tenants.secrets_box import (
    SecretsBox,
    SecretsKeyMissing,
    SecretUnreadable,
    new_secrets_key,
    secret_aad,
)
from rules.errors import ConfigError


def test_a_new_key_is_found_by_its_lookup_and_matches_only_itself() -> None:
    key = new_key()
    assert key.text.startswith("te_")
    assert key_lookup(key.text) == key.lookup
    assert key_matches(key.text, key.digest)
    other = new_key()
    assert other.lookup != key.lookup
    assert not key_matches(other.text, key.digest)
    assert not key_matches(key.text[:-1] + ("A" if key.text[-1] != "A" else "B"), key.digest)


@pytest.mark.parametrize("text", ["", "te_", "Bearer x", "te_short_x", "te_" + "a" * 60])
def test_anything_else_has_no_lookup(text: str) -> None:
    assert key_lookup(text) is None


def test_roles_are_ordered() -> None:
    assert Role.ADMIN.allows(Role.EDITOR)
    assert Role.EDITOR.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.EDITOR)
    assert not Role.EDITOR.allows(Role.ADMIN)


def test_a_secret_opens_only_in_its_own_row_and_under_its_key() -> None:
    box = SecretsBox(new_secrets_key())
    sealed = box.seal("s3cr3t-value", secret_aad(1, "TOKEN"))
    assert b"s3cr3t-value" not in sealed
    assert box.open(sealed, secret_aad(1, "TOKEN")) == "s3cr3t-value"
    with pytest.raises(SecretUnreadable):
        box.open(sealed, secret_aad(2, "TOKEN"))  # copied into another organization's row
    with pytest.raises(SecretUnreadable):
        SecretsBox(new_secrets_key()).open(sealed, secret_aad(1, "TOKEN"))


def test_without_a_key_storing_a_secret_is_a_clear_error() -> None:
    box = SecretsBox(None)
    assert not box.configured
    with pytest.raises(SecretsKeyMissing, match="secrets_key"):
        box.seal("x", secret_aad(1, "X"))


@pytest.mark.parametrize("key", ["not base64!!", "c2hvcnQ="])
def test_a_malformed_key_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError, match="32 random bytes"):
        SecretsBox(key)

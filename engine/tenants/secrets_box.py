"""Tenant secrets at rest: AES-256-GCM under config ``secrets_key``.

A stored value is a 12-byte random nonce followed by the ciphertext and its tag.  The
row's identity (``<org_id>/<name>``, or ``<org_id>/agent/<chain>/<agent>`` for an
agent's token) is the associated data, so a ciphertext copied into another row, or
another organization's, does not open.  Plain values exist only in memory, in the
process that needs them (the API when storing, a worker when executing).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rules.errors import ConfigError, EngineError

_NONCE_BYTES = 12


class SecretsKeyMissing(ConfigError):
    """No ``secrets_key`` is configured, so no secret can be stored or read."""


class SecretUnreadable(EngineError):
    """A stored secret does not open under the configured key (another key, or tampered)."""


def secret_aad(org_id: int, name: str) -> str:
    return f"{org_id}/{name}"


def agent_token_aad(org_id: int, chain_id: int, agent_id: int) -> str:
    return f"{org_id}/agent/{chain_id}/{agent_id}"


def new_secrets_key() -> str:
    """A fresh key for config ``secrets_key``."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class SecretsBox:
    """Encrypts and decrypts secret values with one configured key."""

    def __init__(self, key: str | None) -> None:
        self._aead: AESGCM | None = None
        if key:
            try:
                raw = base64.urlsafe_b64decode(key.encode())
            except (binascii.Error, ValueError) as exc:
                raise ConfigError(
                    "secrets_key must be urlsafe base64 of 32 random bytes"
                    " (make one with: engine secrets-key)"
                ) from exc
            if len(raw) != 32:
                raise ConfigError(
                    f"secrets_key must be urlsafe base64 of 32 random bytes (it has {len(raw)})"
                )
            self._aead = AESGCM(raw)

    @property
    def configured(self) -> bool:
        return self._aead is not None

    def _key(self) -> AESGCM:
        if self._aead is None:
            raise SecretsKeyMissing(
                "no secrets_key is configured: set secrets_key (urlsafe base64 of 32 random"
                " bytes) in the config to store and use secrets"
            )
        return self._aead

    def seal(self, plain: str, aad: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._key().encrypt(nonce, plain.encode(), aad.encode())

    def open(self, sealed: bytes, aad: str) -> str:
        sealed = bytes(sealed)
        try:
            plain = self._key().decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], aad.encode())
        except InvalidTag as exc:
            raise SecretUnreadable(
                "a stored secret does not open with the configured secrets_key"
                " (was the key changed?)"
            ) from exc
        return plain.decode()

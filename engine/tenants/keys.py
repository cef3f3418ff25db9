"""API keys: ``te_<lookup>_<secret>``, of which only a hash is ever stored.

The lookup finds the key's row (engine_authenticate in sql/004); the whole key's sha256
is compared with the stored one in constant time.  A key is shown once, when created.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

KEY_PREFIX = "te_"
_LOOKUP_CHARS = 12
_SECRET_BYTES = 32
# urlsafe base64 without padding: the lookup never contains '_' so the key splits at its
# first '_' after the prefix.
_KEY = re.compile(r"^te_(?P<lookup>[A-Za-z0-9-]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")


class Role(StrEnum):
    """What a key may do: viewer reads; editor also writes rules, silences and secrets;
    admin also manages the keys of its own organization."""

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        order = (Role.VIEWER, Role.EDITOR, Role.ADMIN)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class NewKey:
    """A key as created: ``text`` is shown once, ``lookup`` and ``digest`` are stored."""

    text: str
    lookup: str
    digest: bytes


def new_key() -> NewKey:
    while True:  # a lookup of '_' would make the key ambiguous to split
        lookup = secrets.token_urlsafe(9)[:_LOOKUP_CHARS]
        if "_" not in lookup:
            break
    text = f"{KEY_PREFIX}{lookup}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    return NewKey(text=text, lookup=lookup, digest=key_digest(text))


def key_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def key_lookup(text: str) -> str | None:
    """The lookup part of a well-formed key, None for anything else."""
    match = _KEY.match(text)
    return match["lookup"] if match else None


def key_matches(text: str, stored_digest: bytes) -> bool:
    """Whether ``text`` is the key whose digest was stored (constant time)."""
    return hmac.compare_digest(key_digest(text), bytes(stored_digest))

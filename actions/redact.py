"""Keeps secrets out of error messages and recorded data.

Rule specs carry secrets in clear (``secret``, ``token``, bot tokens, auth headers), and
client libraries like to quote URLs (python-telegram-bot puts the token in every URL).
Anything an executor records or raises passes through ``redact`` with the secrets it knows.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "[redacted]"
# Short values are not scrubbed: replacing "a" everywhere would garble the message while
# protecting nothing a real secret looks like.
_MIN_SECRET_LEN = 4


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each secret replaced by a mask."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if len(secret) >= _MIN_SECRET_LEN:
            text = text.replace(secret, MASK)
    return text

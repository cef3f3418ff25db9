"""Keeps secrets out of error messages and recorded data.

Rule specs carry secrets in clear (``secret``, ``token``, bot tokens, auth headers), and
client libraries like to quote URLs (python-telegram-bot puts the token in every URL).
Anything an executor records or raises passes through ``redact`` with the secrets it knows,
and ``LibraryLogRedactor`` rewrites what the client libraries log (httpx logs every URL).
"""

from __future__ import annotations

import logging
import re
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


# Bot API URLs carry the token as /bot<id>:<secret>/; webhook URLs may carry secrets in
# their path or query (Slack-style hooks).  Log lines keep only scheme and host.
_BOT_TOKEN_IN_URL = re.compile(r"/bot\d+:[A-Za-z0-9_-]+")
_URL_PATH = re.compile(r"(https?://[^/\s\"']+)/[^\s\"']*")
# Logger filters do not apply to child loggers' records, so each emitting logger is named.
_LIBRARY_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "telegram",
    "telegram.Bot",
    "telegram.BaseRequest",
    "telegram.HTTPXRequest",
    "mcp.client.streamable_http",
    "client",  # mcp.client.session's logger
)


class LibraryLogRedactor(logging.Filter):
    """Rewrites library log records (httpx logs every request URL at INFO) without secrets."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = {s for s in secrets if s}

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the message by its redacted form; never drops a record."""
        message = record.getMessage()
        message = _BOT_TOKEN_IN_URL.sub("/bot[redacted]", message)
        message = _URL_PATH.sub(r"\1/…", message)
        record.msg, record.args = redact(message, self.secrets), None
        return True


def install_library_log_redactor(secrets: Iterable[str]) -> LibraryLogRedactor:
    """Attach one redactor to the loggers of the client libraries (idempotent)."""
    redactor = next(
        (f for f in logging.getLogger("httpx").filters if isinstance(f, LibraryLogRedactor)),
        None,
    )
    if redactor is None:
        redactor = LibraryLogRedactor()
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).addFilter(redactor)
    redactor.secrets.update(s for s in secrets if s)
    return redactor

"""Keeps secrets out of everything an attempt records or logs.

A secret is a value, not a place: whatever a rule's ``${VAR}`` took from the environment,
the configured bot tokens, a webhook's signing ``secret``, an MCP ``token``, the value of
a credential header (and, with tenants, each stored secret a rule uses).  ``SecretValues``
collects them for one attempt (anything may ``add`` to it) and masks each occurrence,
case-insensitively (python-telegram-bot lowercases its error texts, a server may
upper-case an echo), in strings and in JSON data at any depth, keys included.  Nothing
else is masked: a header such as ``Accept: application/json`` is not a secret.

Values shorter than ``MIN_SECRET_CHARS`` are not treated as secrets: such a value is no
credential worth the name (a few million guesses find it), and masking it would mask every
"prod", "true" or port number in a response.

Log records: ``SecretLogFilter`` masks the secrets of the attempt running in the current
context (``attempt_secrets``) and the process-wide ones (bot tokens) in a record's
message, extras and traceback; ``LibraryLogRedactor`` also strips URL paths from what the
client libraries log (httpx logs every request URL).
"""

from __future__ import annotations

import json
import logging
import re
import traceback
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

MASK = "[redacted]"
MIN_SECRET_CHARS = 6
_STANDARD_RECORD_KEYS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "taskName"}


def _encoded_forms(value: str) -> set[str]:
    """The value as it may come back: as is, JSON-escaped, percent-encoded."""
    return {
        value,
        json.dumps(value, ensure_ascii=False)[1:-1],
        json.dumps(value)[1:-1],
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value, safe=""),
    }


class SecretValues:
    """A set of secret values that masks them in text and data (see the module docstring)."""

    def __init__(self, values: Iterable[str | None] = ()) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.update(values)

    def add(self, value: str | None) -> None:
        """Treat ``value`` (and its encoded forms) as a secret from now on."""
        if value is None or len(value) < MIN_SECRET_CHARS:
            return
        new = {form for form in _encoded_forms(value) if len(form) >= MIN_SECRET_CHARS}
        if not new <= self._forms:
            self._forms |= new
            self._pattern = None

    def update(self, values: Iterable[str | None]) -> None:
        for value in values:
            self.add(value)

    def copy(self) -> SecretValues:
        other = SecretValues()
        other._forms = set(self._forms)
        return other

    def __iter__(self) -> Iterator[str]:
        return iter(self._forms)

    def __len__(self) -> int:
        return len(self._forms)

    def _compiled(self) -> re.Pattern[str] | None:
        if self._pattern is None and self._forms:
            # Longest first, so a secret containing another is masked whole.
            ordered = sorted(self._forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE)
        return self._pattern

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of a secret, in any case, masked."""
        pattern = self._compiled()
        return text if pattern is None else pattern.sub(MASK, text)

    def redact_data(self, value: Any) -> Any:
        """A copy of JSON-like ``value`` with secrets masked in every string, keys included;
        a number whose digits hold a secret becomes the masked text."""
        if self._compiled() is None:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact(str(k)): self.redact_data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_data(v) for v in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            masked = self.redact(str(value))
            return value if masked == str(value) else masked
        return value


# Header names whose values are credentials by definition.
_CREDENTIAL_HEADER = re.compile(r"auth|token|secret|key|password|cookie|signature", re.I)


def spec_credentials(spec: Mapping[str, Any]) -> list[str]:
    """The secrets a rendered action spec holds by its shape: a webhook's signing
    ``secret``, an MCP ``token``, a telegram ``bot_token``, the values of credential
    headers."""
    found = [str(spec[key]) for key in ("secret", "token", "bot_token") if spec.get(key)]
    headers = spec.get("headers")
    if isinstance(headers, Mapping):
        found += [str(v) for k, v in headers.items() if _CREDENTIAL_HEADER.search(str(k))]
    return found


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each secret masked (see ``SecretValues``)."""
    return SecretValues(secrets).redact(text)


# The secrets of the attempt running in this context: asyncio tasks copy the context, so
# concurrent attempts of one worker each see their own.
attempt_secrets: ContextVar[SecretValues | None] = ContextVar("attempt_secrets", default=None)
# Secrets of the whole process (configured bot tokens), masked in every record.
process_secrets = SecretValues()


def current_secrets() -> SecretValues:
    """The process's secrets plus those of the attempt running in this context."""
    current = attempt_secrets.get()
    if current is None:
        return process_secrets
    merged = current.copy()
    merged.update(process_secrets)
    return merged


def redact_record(record: logging.LogRecord, secrets: SecretValues) -> None:
    """Mask ``secrets`` in a record's message, extras and traceback, in place."""
    if not len(secrets):
        return
    record.msg, record.args = secrets.redact(record.getMessage()), None
    for key, value in list(record.__dict__.items()):
        if key not in _STANDARD_RECORD_KEYS and not key.startswith("_"):
            record.__dict__[key] = secrets.redact_data(value)
    if record.exc_info and record.exc_info[1] is not None:
        # The traceback quotes the exception's text: masked, it joins the message, since
        # a formatter would format ``exc_info`` afresh.
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.msg = f"{record.msg}\n{secrets.redact(text)}"
        record.exc_info, record.exc_text = None, None


class SecretLogFilter(logging.Filter):
    """Masks the current secrets in every record a handler emits; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, current_secrets())
        return True


def install_secret_log_filter(handlers: Iterable[logging.Handler]) -> None:
    """Attach one ``SecretLogFilter`` to each handler (idempotent)."""
    for handler in handlers:
        if not any(isinstance(f, SecretLogFilter) for f in handler.filters):
            handler.addFilter(SecretLogFilter())


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
        record.msg, record.args = message, None
        secrets = current_secrets().copy()
        secrets.update(self.secrets)
        redact_record(record, secrets)
        return True


def install_library_log_redactor(secrets: Iterable[str]) -> LibraryLogRedactor:
    """Attach one redactor to the loggers of the client libraries (idempotent); the
    ``secrets`` are also masked in every record of the process (``process_secrets``)."""
    secrets = [s for s in secrets if s]
    process_secrets.update(secrets)
    redactor = next(
        (f for f in logging.getLogger("httpx").filters if isinstance(f, LibraryLogRedactor)),
        None,
    )
    if redactor is None:
        redactor = LibraryLogRedactor()
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).addFilter(redactor)
    redactor.secrets.update(secrets)
    return redactor

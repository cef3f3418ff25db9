"""Log set-up for the command line: readable text on a terminal, JSON lines on request.

Only the CLI calls ``configure``; library modules just log short constant messages
with stable ``extra`` keys (event_id, trigger_id, action_id).  Values of keys that
look like secrets are redacted.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_SECRET_KEY = re.compile(r"(secret|token|password|authorization)", re.IGNORECASE)
# Each pattern keeps its first group and blanks what follows: a bot token in a Bot API
# URL, the password of a URL-style DSN, of a key=value DSN, and a bearer token.
_SECRETS_IN_TEXT = (
    re.compile(r"(bot\d+:)[A-Za-z0-9_-]{20,}"),
    re.compile(r"(://[^:/@\s]+:)[^@\s]+(?=@)"),
    re.compile(r"(\bpassword\s*=\s*)('[^']*'|[^\s'\"]+)", re.IGNORECASE),
    re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE),
)


def redact_text(text: str) -> str:
    """Blank out bot tokens in URLs, passwords in DSNs and bearer tokens."""
    for pattern in _SECRETS_IN_TEXT:
        text = pattern.sub(lambda m: f"{m.group(1)}<redacted>", text)
    return text


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_"):
            continue
        found[key] = "<redacted>" if _SECRET_KEY.search(key) else value
    return found


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line = f"{line}  {extras}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return redact_text(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return redact_text(json.dumps(doc, default=str))


def configure(*, level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "telegram", "rq.worker", "mcp", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

"""A fake Telegram Bot API on 127.0.0.1 that python-telegram-bot can talk to unchanged.

Answers ``/bot<TOKEN>/getMe`` and ``/bot<TOKEN>/sendMessage`` like the real API (same
JSON envelope, same HTTP statuses), parses HTML and MarkdownV2 the way Telegram does
closely enough to reject badly escaped text with "can't parse entities", rejects parsed
texts over 4,096 characters, and records each delivered message with its plain text.
``fail_next`` scripts failures: 429 with ``retry_after``, 400, 403, a migrated group, and a
400 that quotes the request path (``echo_path``; its token included, as some servers do).
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_LEN = 4096
HTML_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
    "a", "code", "pre", "blockquote", "tg-emoji",
}  # fmt: skip
MD_RESERVED = set("_*[]()~`>#+-=|{}.!")


class EntityError(ValueError):
    """The text does not parse in its parse mode."""


def parse_html(text: str) -> str:
    """The plain text of Telegram HTML, or EntityError."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "<":
            end = text.find(">", i)
            match = (
                re.match(r"<(/?)([a-z-]+)(\s[^>]*)?>$", text[i : end + 1]) if end != -1 else None
            )
            if match is None or match.group(2) not in HTML_TAGS:
                raise EntityError(f"Unsupported start tag at byte offset {i}")
            if match.group(1):
                if not stack or stack[-1] != match.group(2):
                    raise EntityError(f"Unmatched end tag at byte offset {i}")
                stack.pop()
            else:
                stack.append(match.group(2))
            i = end + 1
        elif char == "&":
            match = re.match(r"&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);", text[i:])
            if match is None:
                raise EntityError(f"Unsupported entity at byte offset {i}")
            out.append(html.unescape(match.group(0)))
            i += len(match.group(0))
        else:
            out.append(char)
            i += 1
    if stack:
        raise EntityError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


def _md_code(text: str, i: int, stack: list[str], out: list[str]) -> int:
    if text[i] == "\\":
        out.append(text[i + 1 : i + 2])
        return i + 2
    if stack[-1] == "pre" and text.startswith("```", i):
        stack.pop()
        return i + 3
    if stack[-1] == "code" and text[i] == "`":
        stack.pop()
        return i + 1
    out.append(text[i])
    return i + 1


def _md_toggle(stack: list[str], name: str) -> None:
    if stack and stack[-1] == name:
        stack.pop()
    elif name in stack:
        raise EntityError(f"Can't find end of {name} entity")
    else:
        stack.append(name)


def _md_step(text: str, i: int, stack: list[str], out: list[str]) -> int:  # noqa: C901
    char = text[i]
    if stack and stack[-1] in ("code", "pre"):
        return _md_code(text, i, stack, out)
    if char == "\\":
        if i + 1 >= len(text) or ord(text[i + 1]) > 126:
            raise EntityError(f"Character '\\' is reserved at byte offset {i}")
        out.append(text[i + 1])
        return i + 2
    if text.startswith("```", i):
        stack.append("pre")
        newline = text.find("\n", i + 3)
        language = text[i + 3 : newline] if newline != -1 else ""
        return newline + 1 if newline != -1 and re.fullmatch(r"\w*", language) else i + 3
    if char == "`":
        stack.append("code")
        return i + 1
    for marker, name in (("||", "spoiler"), ("__", "underline")):
        if text.startswith(marker, i):
            _md_toggle(stack, name)
            return i + 2
    if char in "*_~":
        _md_toggle(stack, {"*": "bold", "_": "italic", "~": "strike"}[char])
        return i + 1
    if char == "[":
        stack.append("link")
        return i + 1
    if char == "]" and stack and stack[-1] == "link":
        stack.pop()
        match = re.match(r"\]\(((?:\\.|[^)\\])*)\)", text[i:])
        if match is None:
            raise EntityError(f"Can't find end of a url at byte offset {i}")
        return i + len(match.group(0))
    if char == ">" and (i == 0 or text[i - 1] == "\n"):
        return i + 1  # a blockquote line
    if char in MD_RESERVED:
        raise EntityError(
            f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
        )
    out.append(char)
    return i + 1


def parse_markdown_v2(text: str) -> str:
    """The plain text of Telegram MarkdownV2, or EntityError."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    while i < len(text):
        i = _md_step(text, i, stack, out)
    if stack:
        raise EntityError(f"Can't find end of {stack[-1]} entity")
    return "".join(out)


def plain_text(text: str, parse_mode: str | None) -> str:
    if parse_mode == "HTML":
        return parse_html(text)
    if parse_mode == "MarkdownV2":
        return parse_markdown_v2(text)
    return text


@dataclass
class SentMessage:
    chat_id: int | str
    text: str
    parse_mode: str | None
    plain: str
    message_id: int
    at: float
    params: dict[str, Any]


class FakeTelegramAPI:
    """The fake Bot API server; ``api_base_url`` is what ``telegram.api_base_url`` takes."""

    def __init__(self, tokens: set[str] | None = None) -> None:
        self.tokens = tokens or {"123456:TEST-token-abcdef"}
        self.messages: list[SentMessage] = []
        self.requests: list[tuple[str, str, dict[str, Any]]] = []  # token, method, params
        self._failures: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._next_id = 1
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                params = _parse_params(raw, self.headers.get("content-type", ""))
                status, payload = api._handle(self.path, params)
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def fail_next(self, kind: str, **params: Any) -> None:
        """Answer the next sendMessage with a failure: retry_after, parse, blocked, migrate."""
        with self._lock:
            self._failures.append((kind, params))

    def _handle(self, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        match = re.fullmatch(r"/bot([^/]+)/(\w+)", path)
        if match is None or match.group(1) not in self.tokens:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        token, method = match.groups()
        with self._lock:
            self.requests.append((token, method, params))
            if method.lower() == "getme":
                return 200, {"ok": True, "result": _BOT_USER}
            if method.lower() == "sendmessage":
                if self._failures and self._failures[0][0] == "echo_path":
                    self._failures.pop(0)
                    return _error(400, f"Bad Request: chat not found for {path}")
                return self._send_message(params)
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}

    def _send_message(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self._failures:
            return _failure(*self._failures.pop(0))
        parse_mode = params.get("parse_mode") or None
        text = str(params.get("text", ""))
        try:
            plain = plain_text(text, parse_mode)
        except EntityError as exc:
            return _error(400, f"Bad Request: can't parse entities: {exc}")
        if len(plain.encode("utf-16-le")) // 2 > MAX_LEN:
            return _error(400, "Bad Request: message is too long")
        chat_id = _chat(params.get("chat_id"))
        message_id = self._next_id
        self._next_id += 1
        now = time.time()
        self.messages.append(
            SentMessage(chat_id, text, parse_mode, plain, message_id, now, dict(params))
        )
        chat_type = "private" if isinstance(chat_id, int) and chat_id > 0 else "supergroup"
        result = {
            "message_id": message_id,
            "date": int(now),
            "chat": {"id": chat_id if isinstance(chat_id, int) else -1001, "type": chat_type},
            "text": plain,
        }
        return 200, {"ok": True, "result": result}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


_BOT_USER = {"id": 123456, "is_bot": True, "first_name": "Fake", "username": "fake_bot"}


def _error(status: int, description: str, **parameters: Any) -> tuple[int, dict[str, Any]]:
    payload: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        payload["parameters"] = parameters
    return status, payload


def _failure(kind: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if kind == "retry_after":
        seconds = params.get("seconds", 1)
        return _error(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)
    if kind == "parse":
        return _error(400, "Bad Request: can't parse entities: Unsupported start tag")
    if kind == "blocked":
        return _error(403, "Forbidden: bot was blocked by the user")
    if kind == "migrate":
        return _error(
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
            migrate_to_chat_id=params["to"],
        )
    raise ValueError(kind)


def _chat(value: Any) -> int | str:
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def _parse_params(raw: str, content_type: str) -> dict[str, Any]:
    if not raw:
        return {}
    if "json" in content_type:
        loaded: dict[str, Any] = json.loads(raw)
        return loaded
    return {k: v[-1] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}

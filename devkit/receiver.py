"""The local endpoints of ``engine up``: a webhook receiver and a Telegram Bot API stand-in.

One threaded HTTP server on 127.0.0.1 prints what it receives, readably, and answers as
the real thing would, so a newcomer sees their rules fire without any account or
endpoint of their own.  Requests to ``/bot<TOKEN>/<method>`` are Telegram Bot API calls
(getMe, sendMessage; anything else is acknowledged); every other request is a webhook
delivery, answered 200.  It never forwards anything anywhere.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

SHOWN_HEADERS = (
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "idempotency-key",
)
SIGNATURE_SHOWN_CHARS = 24
MAX_BODY_SHOWN_CHARS = 4000
STAND_IN_BOT = {
    "id": 1000000001,
    "is_bot": True,
    "first_name": "Local stand-in",
    "username": "local_stand_in_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
_TELEGRAM_PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)$")


def _pretty(body: bytes) -> str:
    if not body:
        return "(empty body)"
    try:
        text = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        text = body.decode("utf-8", "replace")
    if len(text) > MAX_BODY_SHOWN_CHARS:
        text = text[:MAX_BODY_SHOWN_CHARS] + f"\n… ({len(text) - MAX_BODY_SHOWN_CHARS} more chars)"
    return text


def _telegram_params(content_type: str, body: bytes, query: str) -> dict[str, Any]:
    """Bot API parameters: JSON, form-encoded (values JSON-encoded by python-telegram-bot)."""
    params: dict[str, Any] = dict(parse_qsl(query))
    if "json" in content_type and body:
        loaded = json.loads(body)
        if isinstance(loaded, dict):
            params.update(loaded)
    elif body:
        params.update(parse_qsl(body.decode("utf-8", "replace")))
    for key, value in list(params.items()):
        if isinstance(value, str) and value[:1] in "[{":
            with contextlib.suppress(ValueError):
                params[key] = json.loads(value)
    return params


class LocalReceiver:
    """The webhook receiver and Telegram stand-in; ``start()`` returns at once."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, out: TextIO | None = None):
        self.host = host
        self.port = port
        self.out = out if out is not None else sys.stdout
        self.deliveries = 0
        self.telegram_messages = 0
        self._message_ids = itertools.count(1)
        self._print_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def webhook_url(self) -> str:
        """Where example rules may POST: any path works, this one reads well."""
        return f"{self.url}/webhook"

    @property
    def telegram_api_base_url(self) -> str:
        return self.url

    def start(self) -> None:
        server = ThreadingHTTPServer((self.host, self.port), self._handler_class())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="local-receiver", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # -- what a delivery looks like on the terminal ------------------------------------

    def _print(self, text: str) -> None:
        with self._print_lock:
            self.out.write(text + "\n")
            self.out.flush()

    def show_delivery(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.deliveries += 1
        stamp = time.strftime("%H:%M:%S")
        lines = [f"── receiver {stamp}  {method} {path}  (delivery #{self.deliveries})"]
        for name in SHOWN_HEADERS:
            value = headers.get(name)
            if value is None:
                continue
            if name == "webhook-signature" and len(value) > SIGNATURE_SHOWN_CHARS:
                value = value[:SIGNATURE_SHOWN_CHARS] + "…"
            lines.append(f"   {name}: {value}")
        lines.extend("   " + line for line in _pretty(body).splitlines())
        self._print("\n".join(lines))

    def answer_telegram(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """The Bot API's answer to ``method``, printing messages as they are 'sent'."""
        if method == "getMe":
            return {"ok": True, "result": STAND_IN_BOT}
        if method == "sendMessage":
            self.telegram_messages += 1
            chat_id = params.get("chat_id")
            text = str(params.get("text", ""))
            stamp = time.strftime("%H:%M:%S")
            body = "\n".join("   " + line for line in text.splitlines() or [""])
            self._print(f"── telegram {stamp}  sendMessage → chat {chat_id}\n{body}")
            chat: dict[str, Any] = {"id": chat_id, "type": "private"}
            if not isinstance(chat_id, int):
                try:
                    chat["id"] = int(str(chat_id))
                except ValueError:
                    chat = {"id": -1000000000001, "type": "channel", "username": chat_id}
            message = {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": chat,
                "from": STAND_IN_BOT,
                "text": text,
            }
            return {"ok": True, "result": message}
        self._print(f"── telegram {time.strftime('%H:%M:%S')}  {method} (acknowledged)")
        return {"ok": True, "result": True}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                parts = urlsplit(self.path)
                match = _TELEGRAM_PATH.match(parts.path)
                if match is None:
                    receiver.show_delivery(self.command, self.path, headers, body)
                    self._reply(200, {"ok": True})
                    return
                try:
                    params = _telegram_params(headers.get("content-type", ""), body, parts.query)
                except ValueError:
                    self._reply(400, {"ok": False, "error_code": 400, "description": "bad body"})
                    return
                self._reply(200, receiver.answer_telegram(match["method"], params))

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def serve_receiver(
    host: str = "127.0.0.1", port: int = 0, *, out: TextIO | None = None
) -> LocalReceiver:
    """Start the local receiver (``port=0``: any free port) and return it, serving."""
    receiver = LocalReceiver(host, port, out=out)
    receiver.start()
    return receiver

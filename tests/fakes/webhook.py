"""A real HTTP server on 127.0.0.1 that records every request, for webhook tests.

Its answers are programmable (a status forever, failures for the first N requests, a
delay, a custom responder) and it can be stopped and started again on the same port to
play an endpoint that is down and then comes back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived; ``json`` is None when the body is not JSON."""

    method: str
    path: str
    headers: dict[str, str]  # keys lower-cased
    body: bytes
    json: Any
    received_at: float  # time.time()
    received_monotonic: float

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": JSON_CONTENT_TYPE})


Responder = Callable[[RecordedRequest], Response]


@dataclass
class Behaviour:
    """How the receiver answers: see ``WebhookReceiver.set_behaviour``."""

    status: int = 200
    fail_first: int = 0
    fail_status: int = 500
    delay_s: float = 0.0
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": JSON_CONTENT_TYPE})
    responder: Responder | None = None
    seen: int = 0  # requests answered since this behaviour was set

    def respond(self, request: RecordedRequest) -> Response:
        self.seen += 1
        if self.responder is not None:
            return self.responder(request)
        if self.seen <= self.fail_first:
            return Response(self.fail_status, b'{"error": "programmed failure"}', self.headers)
        return Response(self.status, self.body, self.headers)


class WebhookReceiver:
    """Records requests; ``url`` is the base URL (``http://127.0.0.1:PORT``)."""

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._behaviour = Behaviour()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Listen (again) on the same port; requests recorded before are kept."""
        if self._server is not None:
            return
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler_class())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: connections to the port are refused until ``start()``."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WebhookReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests use ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def set_behaviour(
        self,
        *,
        status: int = 200,
        fail_first: int = 0,
        fail_status: int = 500,
        delay_s: float = 0.0,
        body: bytes | Any = b'{"ok": true}',
        headers: dict[str, str] | None = None,
        responder: Responder | None = None,
    ) -> None:
        """Answer ``status`` (after ``fail_first`` answers of ``fail_status``), each after
        ``delay_s``; a non-bytes ``body`` is sent as JSON; ``responder`` overrides it all."""
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        with self._lock:
            self._behaviour = Behaviour(
                status=status,
                fail_first=fail_first,
                fail_status=fail_status,
                delay_s=delay_s,
                body=body,
                headers=headers or {"Content-Type": JSON_CONTENT_TYPE},
                responder=responder,
            )

    def wait_for(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests arrived; AssertionError says what did."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._requests) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [(r.method, r.path, r.body[:200]) for r in self._requests]
                    raise AssertionError(
                        f"expected {n} request(s) within {timeout}s, got {len(got)}: {got}"
                    )
                self._lock.wait(remaining)
            return list(self._requests)

    # -- internals --------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> tuple[Response, float]:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()
            behaviour = self._behaviour
            delay_s = behaviour.delay_s
            response = behaviour.respond(request)
        return response, delay_s

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    parsed = None
                request = RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    json=parsed,
                    received_at=time.time(),
                    received_monotonic=time.monotonic(),
                )
                response, delay_s = receiver._record(request)
                if delay_s:
                    time.sleep(delay_s)
                try:
                    self.send_response(response.status)
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(response.body)))
                    self.end_headers()
                    self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

"""A programmable HTTP server on 127.0.0.1 for action tests: files, webhooks, misbehaviour.

Serves registration JSON files and file contents, redirects, scripted status sequences
(503 then 200), an endless body (to prove reads are bounded) and a trickling body (to
prove the overall deadline), and records every request it receives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: Callable[[BaseHTTPRequestHandler], None] | None = None


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def endless_body(handler: BaseHTTPRequestHandler) -> None:
    """Write megabytes until the client hangs up (a "1 GB" answer)."""
    chunk = b"x" * 65536
    try:
        for _ in range(16384):  # 1 GiB at most
            handler.wfile.write(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass


def trickle_body(handler: BaseHTTPRequestHandler) -> None:
    """One byte a second, for a minute: never finishes within a test's timeout."""
    try:
        for _ in range(60):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(1)
    except (BrokenPipeError, ConnectionResetError):
        pass


class FilesServer:
    """``add(path, *replies)``: each request pops the next reply; the last one repeats."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Reply]] = {}
        self.received: list[Received] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = server._next(self.command, self.path, dict(self.headers), body)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.stream is not None:
                    self.send_header("Content-Length", str(1 << 30))
                    self.end_headers()
                    reply.stream(self)
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, path: str, *replies: Reply) -> str:
        """Script the answers for ``path``; returns its full URL."""
        with self._lock:
            self.routes[path] = list(replies)
        return self.url + path

    def file(self, path: str, body: bytes, content_type: str = "application/json") -> str:
        return self.add(path, Reply(body=body, headers={"Content-Type": content_type}))

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        return self.add(path, Reply(status=status, headers={"Location": location}))

    def _next(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            self.received.append(Received(method, path, headers, body))
            replies = self.routes.get(path)
            if not replies:
                return Reply(status=404, body=b"not found")
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

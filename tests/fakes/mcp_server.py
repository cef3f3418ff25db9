"""A real MCP server (the SDK's FastMCP, streamable HTTP) on 127.0.0.1 for action tests.

Runs under uvicorn in a thread, requires ``Authorization: Bearer <token>``, and offers:
- ``notify(message, severity, payload)``: records its arguments and the request ``_meta``;
- ``fail(reason)``: raises, which FastMCP returns as a result with ``isError``;
- ``big(size)``: returns a long text (to check truncation);
- ``slow(seconds)``: answers late (to check the deadline).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass
class ToolCall:
    tool: str
    arguments: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


class _BearerAuth:
    """Plain ASGI middleware (keeps streaming responses intact) checking the bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            if request.headers.get("authorization") != f"Bearer {self.token}":
                response: Response = JSONResponse({"error": "unauthorized"}, status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _meta_of(ctx: Context[Any, Any, Any]) -> dict[str, Any]:
    meta = ctx.request_context.meta
    return {} if meta is None else meta.model_dump(exclude_none=True)


class FakeMCPServer:
    """``url`` is the streamable-HTTP endpoint; ``calls`` what the tools received."""

    def __init__(self, token: str = "mcp-secret-token") -> None:
        self.token = token
        self.calls: list[ToolCall] = []
        mcp = FastMCP("fake-alerts", host="127.0.0.1")
        calls = self.calls

        @mcp.tool()
        def notify(
            message: str,
            ctx: Context[Any, Any, Any],
            severity: str = "info",
            payload: dict[str, Any] | None = None,
        ) -> str:
            """Record an alert."""
            arguments = {"message": message, "severity": severity, "payload": payload}
            calls.append(ToolCall("notify", arguments, _meta_of(ctx)))
            return f"noted: {message}"

        @mcp.tool()
        def fail(reason: str, ctx: Context[Any, Any, Any]) -> str:
            """Always fails with ``reason``."""
            calls.append(ToolCall("fail", {"reason": reason}, _meta_of(ctx)))
            raise ValueError(reason)

        @mcp.tool()
        async def slow(seconds: float) -> str:
            """Answers after ``seconds``."""
            await anyio.sleep(seconds)
            return "late"

        @mcp.tool()
        def big(size: int) -> str:
            """A long answer."""
            return "y" * size

        app = _BearerAuth(mcp.streamable_http_app(), token)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def port(self) -> int:
        sockets = self._server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake MCP server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

"""`engine api`: the tenants' HTTP API (FastAPI under uvicorn), a process of its own.

Any number of these processes may run beside `engine run`: each has its own connection
pool, keeps no state between requests, and never evaluates events or touches Redis.
Every request's database work is one transaction as ``engine_tenant`` (engine.api.db).
Tenants' templates are rendered only in the app's render jail, a child process stopped
at ``worker.render_timeout_s`` / ``worker.render_memory_mb`` (engine.api.routes_rule_tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from actions.render_jail import RenderBudget, RenderJail
from engine.api import (
    routes_actions,
    routes_events,
    routes_explain,
    routes_follows,
    routes_keys,
    routes_rule_tests,
    routes_rules,
    routes_secrets,
    routes_silences,
)
from engine.api.db import open_pool
from engine.api.errors import install_error_handlers, problem_response
from engine.api.models import Health
from engine.config import Settings
from engine.tenants.secrets_box import SecretsBox
from rules.errors import ConfigError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DESCRIPTION = """\
Rules, action results, events and API keys of one organization.
Send `Authorization: Bearer <key>`; keys are made with `engine keys create` (or by an admin
key, `POST /v1/keys`).  Every error is a JSON body with a `message`; a 422 also lists
`errors` with the `path` and (YAML) `line` of each mistake.
"""


class BodySizeLimit:
    """Answers 413 to a request body over ``max_bytes`` before any route reads it.

    The body is read here (at most ``max_bytes`` + one chunk) and handed on whole, so a
    client that lies about, or leaves out, its Content-Length gets the same answer.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413, f"the request body is larger than {self.max_bytes} bytes (api.max_body_bytes)"
        )
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(settings: Settings) -> FastAPI:
    """The API's ASGI application; its pool opens with the app's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            if getattr(app.state, "pool", None) is not None:
                yield  # given by serve()
                return
            app.state.pool = await open_pool(settings.database_url, settings.api)
            try:
                yield
            finally:
                await app.state.pool.close()
        finally:
            await app.state.rule_jail.aclose()

    app = FastAPI(
        title="trigger-engine API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = None
    # A malformed secrets_key stops the process here, before it serves anything.
    app.state.secrets_box = SecretsBox(settings.secrets_key)
    # Its child starts with the first rule test, so an API nobody tests rules through
    # runs no extra process.
    budget = RenderBudget(
        timeout_s=settings.worker.render_timeout_s, memory_mb=settings.worker.render_memory_mb
    )
    app.state.rule_jail = RenderJail(budget, child_module="engine.api.rule_runs")
    install_error_handlers(app)
    for module in (
        routes_rules,
        routes_rule_tests,
        routes_follows,
        routes_secrets,
        routes_actions,
        routes_events,
        routes_explain,
        routes_keys,
        routes_silences,
    ):
        app.include_router(module.router)

    @app.get("/healthz", summary="Liveness", response_model=Health, tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process answers (no key needed; the database is not asked)."""
        return {"status": "ok"}

    app.add_middleware(BodySizeLimit, max_bytes=settings.api.max_body_bytes)
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:8080``) of config ``api.listen``."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"api.listen must be host:port, e.g. 127.0.0.1:8080 (got {listen!r})")
    return host.strip("[]"), int(port)


def serve(settings: Settings) -> int:
    """Run the API on ``api.listen`` until SIGINT/SIGTERM."""
    host, port = parse_listen(settings.api.listen)

    async def main() -> None:
        app = create_app(settings)
        app.state.pool = await open_pool(settings.database_url, settings.api)
        try:
            config = uvicorn.Config(app, host=host, port=port, log_config=None, server_header=False)
            await uvicorn.Server(config).serve()
        finally:
            await app.state.pool.close()

    asyncio.run(main())
    return 0

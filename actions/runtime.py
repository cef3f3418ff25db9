"""The worker runtime: the long-lived clients every executor shares.

One ``WorkerRuntime`` is created per worker process, used from one event loop, and reused
across jobs (closing it with ``aclose`` at shutdown): one guarded ``httpx.AsyncClient``
and its connection pool, the Telegram flood limits and delivered parts (shared through
Redis in a worker, ``WorkerRuntime.with_redis``; their in-memory twins in unit tests),
one initialised ``telegram.Bot`` per token, and the agent endpoint cache.  Creating
these per job would cost a TCP/TLS handshake and a ``getMe`` per action.

Executors accept the narrow ``ActionRuntime`` of ``actions.base`` and ask for what they
need through ``resources_of``, so a test may pass any object with these attributes.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

import httpx
import telegram
from redis.asyncio import Redis
from telegram.request import HTTPXRequest

from actions.agents import AgentEndpointCache
from actions.base import ActionRuntime, ActionSettings, AgentDirectory
from actions.errors import PermanentActionError
from actions.flood import FloodLimiter, RedisFloodLimiter
from actions.netguard import GuardedTransport, NetworkGuard
from actions.redact import install_library_log_redactor
from actions.telegram_parts import RedisTelegramParts, TelegramParts

_CLIENT_HEADERS = {
    "user-agent": "trigger-engine",
    # Bodies are size-bounded after decoding; not asking for compression keeps a small
    # compressed answer from expanding into a large one.
    "accept-encoding": "identity",
}


@runtime_checkable
class ExecutorResources(Protocol):
    """What the rest, telegram and mcp executors use beyond ``ActionRuntime``."""

    settings: ActionSettings

    @property
    def agents(self) -> AgentDirectory: ...

    @property
    def http(self) -> httpx.AsyncClient: ...

    @property
    def http_transport(self) -> httpx.AsyncBaseTransport: ...

    @property
    def flood(self) -> FloodLimiter: ...

    @property
    def telegram_parts(self) -> TelegramParts: ...

    @property
    def agent_endpoints(self) -> AgentEndpointCache: ...

    async def telegram_bot(self, name: str) -> tuple[telegram.Bot, str]: ...

    async def telegram_bot_for_token(self, token: str) -> telegram.Bot: ...


def resources_of(runtime: ActionRuntime) -> ExecutorResources:
    """The executor resources of ``runtime`` (a ``WorkerRuntime`` in production)."""
    if isinstance(runtime, ExecutorResources):
        return runtime
    raise TypeError(f"{type(runtime).__name__} does not provide the executor resources")


class WorkerRuntime:
    """The ``ActionRuntime`` of an ``engine worker`` process (see the module docstring)."""

    def __init__(
        self,
        settings: ActionSettings,
        *,
        agents: AgentDirectory,
        flood: FloodLimiter,
        telegram_parts: TelegramParts,
        redis: Redis | None = None,
    ) -> None:
        """``redis``: the client behind ``flood`` and ``telegram_parts``, closed by ``aclose``."""
        self.settings = settings
        self._agents = agents
        install_library_log_redactor(settings.telegram_bots.values())
        guard = NetworkGuard(allow_private=settings.allow_private_network)
        self._transport = GuardedTransport(guard, httpx.AsyncHTTPTransport(retries=0))
        # trust_env=False: proxy variables would mount transports that bypass the guard.
        self._http = httpx.AsyncClient(
            transport=self._transport,
            follow_redirects=False,
            trust_env=False,
            timeout=settings.default_timeout_s,
            headers=_CLIENT_HEADERS,
        )
        self._redis = redis
        self._flood = flood
        self._telegram_parts = telegram_parts
        self._agent_endpoints = AgentEndpointCache(settings.agent_resolve_ttl_s)
        self._bots: dict[str, telegram.Bot] = {}
        self._bot_lock = asyncio.Lock()

    @classmethod
    def with_redis(
        cls, settings: ActionSettings, *, redis_url: str, agents: AgentDirectory
    ) -> WorkerRuntime:
        """The runtime of a worker process: flood limits and parts shared through Redis."""
        client: Redis = Redis.from_url(redis_url)
        return cls(
            settings,
            agents=agents,
            flood=RedisFloodLimiter(client),
            telegram_parts=RedisTelegramParts(client),
            redis=client,
        )

    @property
    def agents(self) -> AgentDirectory:
        """The engine's lookup of agents' registration URIs."""
        return self._agents

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared client; every request passes the network guard."""
        return self._http

    @property
    def http_transport(self) -> httpx.AsyncBaseTransport:
        """The guarded transport, for clients the MCP SDK needs with their own headers."""
        return self._transport

    @property
    def flood(self) -> FloodLimiter:
        """Telegram flood limits (shared with every other worker through Redis)."""
        return self._flood

    @property
    def telegram_parts(self) -> TelegramParts:
        """Telegram parts already delivered, so a retry does not send them again."""
        return self._telegram_parts

    @property
    def agent_endpoints(self) -> AgentEndpointCache:
        """Resolved agent MCP endpoints, cached for ``agent_resolve_ttl_s``."""
        return self._agent_endpoints

    async def telegram_bot(self, name: str) -> tuple[telegram.Bot, str]:
        """The initialised bot named ``name`` in ``telegram.bots`` and its token."""
        token = self.settings.telegram_bots.get(name)
        if not token:
            raise PermanentActionError(f"no telegram bot named {name!r} in telegram.bots")
        return await self.telegram_bot_for_token(token), token

    async def telegram_bot_for_token(self, token: str) -> telegram.Bot:
        """The initialised bot of ``token`` (an action's own ``bot_token``, or a configured one)."""
        async with self._bot_lock:
            bot = self._bots.get(token)
            if bot is None:
                bot = telegram.Bot(
                    token,
                    base_url=self.settings.telegram_api_base_url.rstrip("/") + "/bot",
                    request=HTTPXRequest(connection_pool_size=16),
                )
                # initialize() calls getMe; a failure leaves nothing cached, so the next
                # job tries again.  Its errors are redacted by the telegram executor.
                await bot.initialize()
                self._bots[token] = bot
        return bot

    async def aclose(self) -> None:
        """Close every client; the runtime is unusable afterwards."""
        bots, self._bots = list(self._bots.values()), {}
        for bot in bots:
            await bot.shutdown()
        await self._http.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        # The agent directory is the engine's; close it too when it holds a connection.
        close_agents = getattr(self._agents, "aclose", None)
        if close_agents is not None:
            await close_agents()

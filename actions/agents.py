"""Finding an agent's MCP endpoint from its ERC-8004 registration file.

agent id -> ``token_uri`` (the engine's AgentDirectory: latest Registered/URIUpdated
identity event) -> registration JSON (https, ipfs or data URI, fetched through the guard)
-> the ``services`` entry (older files: ``endpoints``) named "MCP" -> its ``endpoint``.

Resolutions are cached per worker for ``settings.agent_resolve_ttl_s``: an alert storm
about one agent must not refetch its registration file for every action.  Failures are
not cached, so a fixed registration file is picked up at the next attempt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from actions.base import ActionSettings, AgentDirectory
from actions.errors import PermanentActionError, RetryableActionError
from actions.fetch import fetch_uri

_SERVICE_LISTS = ("services", "endpoints")
_MCP_NAME = "mcp"


def mcp_endpoint_from_registration(document: Any) -> str:
    """The MCP endpoint URL named in a registration file (parsed JSON)."""
    if not isinstance(document, dict):
        raise PermanentActionError("registration file is not a JSON object")
    for list_name in _SERVICE_LISTS:
        services = document.get(list_name)
        if not isinstance(services, list):
            continue
        for service in services:
            if not isinstance(service, dict):
                continue
            name = service.get("name")
            endpoint = service.get("endpoint")
            if isinstance(name, str) and name.strip().lower() == _MCP_NAME:
                if isinstance(endpoint, str) and endpoint:
                    return endpoint
                raise PermanentActionError("registration file's MCP service has no endpoint")
    raise PermanentActionError("registration file lists no service named MCP")


class AgentEndpointCache:
    """(chain_id, agent_id) -> MCP endpoint, resolved and cached with a TTL."""

    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[tuple[int, int], tuple[float, str]] = {}

    async def mcp_endpoint(
        self,
        chain_id: int,
        agent_id: int,
        *,
        agents: AgentDirectory,
        client: httpx.AsyncClient,
        settings: ActionSettings,
    ) -> str:
        """The agent's MCP endpoint, from the cache while it is fresh."""
        key = (chain_id, agent_id)
        now = self._clock()
        cached = self._entries.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            token_uri = await agents.token_uri(chain_id, agent_id)
        except Exception as exc:  # the engine's directory (a database) is down: try later
            raise RetryableActionError(
                f"looking up agent {agent_id} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not token_uri:
            raise PermanentActionError(
                f"agent {agent_id} on chain {chain_id} has no registration URI"
            )
        what = f"registration file of agent {agent_id}"
        raw = await fetch_uri(client, token_uri, settings, what=what)
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PermanentActionError(f"{what} is not JSON ({exc})") from exc
        endpoint = mcp_endpoint_from_registration(document)
        self._entries[key] = (now + self._ttl_s, endpoint)
        return endpoint


class InMemoryAgentDirectory:
    """An AgentDirectory over a dict, for tests and `engine rules test`-like tooling."""

    def __init__(self, uris: dict[tuple[int, int], str] | None = None) -> None:
        self.uris: dict[tuple[int, int], str] = dict(uris or {})
        self.lookups = 0

    async def token_uri(self, chain_id: int, agent_id: int) -> str | None:
        """The registered URI, or None for an unknown agent."""
        self.lookups += 1
        return self.uris.get((chain_id, agent_id))

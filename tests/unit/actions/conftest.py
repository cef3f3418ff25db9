"""Fixtures for the executor tests: local fake servers and a worker runtime around them.

The servers listen on 127.0.0.1, so most tests turn the network guard off
(``allow_private``) exactly as ``network.allow_private: true`` does; the guard's own
tests keep it on.  Flood limits and delivered parts are the in-memory twins: no Redis
(tests/integration covers the Redis ones and checks both behave alike).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from actions.agents import InMemoryAgentDirectory
from actions.base import ActionRequest, ActionSettings
from actions.flood import InMemoryFloodLimiter
from actions.runtime import WorkerRuntime
from actions.telegram_parts import InMemoryTelegramParts
from tests.fakes.files_server import FilesServer
from tests.fakes.mcp_server import FakeMCPServer
from tests.fakes.telegram_api import FakeTelegramAPI

BOT_TOKEN = "123456:TEST-token-abcdef"
OTHER_BOT_TOKEN = "654321:OTHER-token-zyxwvu"


@pytest.fixture
def files_server() -> Iterator[FilesServer]:
    server = FilesServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def telegram_api() -> Iterator[FakeTelegramAPI]:
    api = FakeTelegramAPI({BOT_TOKEN, OTHER_BOT_TOKEN})
    api.start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[FakeMCPServer]:
    server = FakeMCPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def agents() -> InMemoryAgentDirectory:
    return InMemoryAgentDirectory()


RuntimeFactory = Callable[..., WorkerRuntime]


@pytest.fixture
async def make_runtime(agents: InMemoryAgentDirectory) -> AsyncIterator[RuntimeFactory]:
    """Builds WorkerRuntimes (closed after the test); keyword args override settings.

    Each runtime has fresh in-memory flood limits and delivered parts.
    """
    made: list[WorkerRuntime] = []

    def make(**overrides: Any) -> WorkerRuntime:
        fields: dict[str, Any] = {
            "allow_private_network": True,
            "telegram_bots": {"default": BOT_TOKEN, "other": OTHER_BOT_TOKEN},
        }
        fields.update(overrides)
        runtime = WorkerRuntime(
            ActionSettings(**fields),
            agents=agents,
            flood=InMemoryFloodLimiter(),
            telegram_parts=InMemoryTelegramParts(),
        )
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.aclose()


def build_request(
    kind: str, spec: dict[str, Any], *, action_id: int = 42, **event: Any
) -> ActionRequest:
    """An ActionRequest as the job builds it (event fields default to chain 1, agent 7)."""
    row = {"chain_id": 1, "agent_id": 7, **event}
    return ActionRequest(
        action_id=action_id, trigger_id="test-rule", kind=kind, spec=spec, context={"event": row}
    )


@pytest.fixture
def request_for() -> Callable[..., ActionRequest]:
    """``request_for(kind, spec, action_id=…, **event_fields)``."""
    return build_request

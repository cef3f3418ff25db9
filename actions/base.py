"""What every executor receives and returns: the narrow boundary between the job and I/O."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ActionSettings:
    """Worker-side settings the executors need (built by ``engine`` from the config)."""

    allow_private_network: bool = False
    telegram_api_base_url: str = "https://api.telegram.org"
    telegram_bots: Mapping[str, str] = field(default_factory=dict)  # bot name -> token
    ipfs_gateway: str = "https://ipfs.io/ipfs/"
    agent_resolve_ttl_s: float = 300.0
    max_response_bytes: int = 64 * 1024  # what is kept of a response body in action_results
    max_download_bytes: int = 10 * 1024 * 1024  # registration files, file_uri contents
    default_timeout_s: float = 10.0
    # A 429's retry_after beyond this is not believed (see actions.telegram).
    telegram_max_retry_after_s: float = 3600.0


@dataclass(frozen=True)
class ActionRequest:
    """One attempt at one action firing.

    ``spec`` is rendered and ``${VAR}``-expanded: it may hold secrets in clear, so it is
    never logged nor recorded.  ``action_id`` is the action_results id, the idempotency
    key sent with every attempt.
    """

    action_id: int
    trigger_id: str
    kind: str
    spec: Mapping[str, Any]
    context: Mapping[str, Any]
    attempt: int = 1


@dataclass
class ActionOutcome:
    """A successful attempt; ``response_data`` (JSON-safe, truncated) is recorded."""

    response_data: dict[str, Any] = field(default_factory=dict)


class AgentDirectory(Protocol):
    """Looks up an agent's registration URI (token_uri of its latest identity event)."""

    async def token_uri(self, chain_id: int, agent_id: int) -> str | None: ...


class ActionRuntime(Protocol):
    """Long-lived per worker process: clients are created once and reused across jobs."""

    settings: ActionSettings

    @property
    def agents(self) -> AgentDirectory: ...


Executor = Callable[[ActionRequest, ActionRuntime], Awaitable[ActionOutcome]]

"""A tenant action's credentials and network policy, resolved at each attempt.

A tenant rule names a secret wherever a credential goes (``{secret: NAME}``: see
rules.action_specs); the worker reads it from the ``secrets`` table of the action's
organization, opens it with the ``SealedOpener`` it was given (the engine's SecretsBox:
this package never holds the key), and adds it to the attempt's ``SecretValues`` before
anything uses it, so it is masked in everything recorded and logged.  A worker connects as
the tables' owner, whom row-level security does not restrict: every query here names the
action's organization, so a rule can only ever reach its own organization's secrets.

Tenant rules never read the worker's environment (``${VAR}`` stays as written: defence in
depth, the API refuses them), never use the operator's configured Telegram bots, and are
always behind the network guard unless their organization may reach private addresses.
Errors name the secret, never its value.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from actions.errors import PermanentActionError
from actions.netguard import AttemptNetwork
from actions.redact import SecretValues
from rules.action_specs import secret_refs

FetchOne = Callable[..., Awaitable[tuple[Any, ...] | None]]
Place = tuple[str, ...]


class SealedOpener(Protocol):
    """Opens what was sealed for one organization's row (raises an ActionError if it cannot)."""

    def open_secret(self, org_id: int, name: str, sealed: bytes) -> str: ...

    def open_agent_token(self, org_id: int, chain_id: int, agent_id: int, sealed: bytes) -> str: ...


class TenantCredentials:
    """An organization's secrets, agent tokens and network policy, read by the owner."""

    def __init__(self, fetch_one: FetchOne, opener: SealedOpener) -> None:
        """``fetch_one(query_name, *params)``: one row of a named query (actions.claims)."""
        self._fetch_one = fetch_one
        self._opener = opener

    async def network(self, org_id: int) -> AttemptNetwork:
        row = await self._fetch_one("org_allow_private", org_id)
        if row is None:
            raise PermanentActionError(f"organization {org_id} no longer exists")
        return AttemptNetwork(allow_private=bool(row[0]), org_id=org_id)

    async def secret(self, org_id: int, name: str) -> str:
        row = await self._fetch_one("org_secret_sealed", org_id, name)
        if row is None:
            raise PermanentActionError(
                f"secret {name!r} is not stored for this organization"
                f" (store it with PUT /v1/secrets/{name}, then retry the action)"
            )
        return self._opener.open_secret(org_id, name, bytes(row[0]))

    async def agent_token(self, org_id: int, chain_id: int, agent_id: int) -> str | None:
        row = await self._fetch_one("org_agent_token_sealed", org_id, chain_id, agent_id)
        if row is None:
            return None
        return self._opener.open_agent_token(org_id, chain_id, agent_id, bytes(row[0]))


def refuse_secret_refs(kind: str, spec: Mapping[str, Any], trigger_id: str) -> None:
    """A file rule has no organization, so no secrets: say what to write instead."""
    for place, ref in secret_refs(kind, spec):
        raise PermanentActionError(
            f"rule '{trigger_id}': {kind}.{'.'.join(place)} names secret {ref.get('secret')!r},"
            " but file rules have no organization's secrets: use ${VAR} (listed in rules_env)"
        )


def _without(spec: Mapping[str, Any], places: list[Place]) -> dict[str, Any]:
    """A copy of ``spec`` without the values at ``places`` (they are not templates)."""
    out = dict(spec)
    for place in places:
        if len(place) == 1:
            out.pop(place[0], None)
        else:
            headers = out["headers"] = dict(out["headers"])
            headers.pop(place[1], None)
    return out


async def tenant_spec(
    kind: str,
    spec: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    org_id: int,
    trigger_id: str,
    credentials: TenantCredentials,
    secrets: SecretValues,
    render: Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """The rendered spec of a tenant action, its ``{secret: NAME}`` values filled in.

    ``render`` renders a spec within the worker's render budget.  Secrets are put in
    after rendering: a value is never read as a template.
    """
    refs = list(secret_refs(kind, spec))
    rendered = await render(_without(spec, [place for place, _ in refs]))
    if kind == "telegram" and not refs and not rendered.get("bot_token"):
        raise PermanentActionError(
            f"rule '{trigger_id}': an organization's telegram action names its own bot"
            " (bot_token: {secret: NAME}); the operator's telegram.bots are not lent out"
        )
    for place, ref in refs:
        value = await credentials.secret(org_id, str(ref["secret"]))
        secrets.add(value)
        text = f"{ref.get('prefix') or ''}{value}"
        if len(place) == 1:
            rendered[place[0]] = text
        else:
            rendered.setdefault("headers", {})[place[1]] = text
    if kind == "mcp" and not rendered.get("token") and not rendered.get("url"):
        agent_token = await _agent_token(rendered, context, org_id, credentials)
        if agent_token is not None:
            secrets.add(agent_token)
            rendered["token"] = agent_token
    return rendered


async def _agent_token(
    rendered: Mapping[str, Any],
    context: Mapping[str, Any],
    org_id: int,
    credentials: TenantCredentials,
) -> str | None:
    """The organization's token for the agent an ``agent:``-mode MCP action calls, if any."""
    event = context.get("event") or {}
    try:
        agent_id, chain_id = int(rendered["agent"]), int(event["chain_id"])
    except (KeyError, TypeError, ValueError):
        return None  # the executor says what is wrong with the agent
    return await credentials.agent_token(org_id, chain_id, agent_id)

"""The ``mcp`` action: call one tool on an MCP server with the official SDK (1.x).

Spec (rendered): ``url`` or ``agent`` (an agent id whose MCP endpoint comes from its
registration file, ``actions.agents``), ``tool``, ``arguments``, ``token`` (bearer),
``verify_file_hash`` (fetch the event's ``file_uri`` and check its keccak-256 against
``file_hash`` before calling), ``timeout`` (an overall deadline, handshake included).

Transport: streamable HTTP, on an ``httpx.AsyncClient`` lent the worker's guarded
transport, so the SDK's own requests pass the network guard too.  The idempotency key
travels in the request's ``_meta`` as ``{"idempotency_key": "<action_results id>"}``.
A result with ``isError`` is a permanent failure carrying the tool's text; a JSON-RPC
error from the server is permanent; connection failures, timeouts and 408/429/5xx are
retryable.  ``response_data``: ``endpoint_host``, ``content`` (the result's content
blocks, as JSON) and ``structured_content`` when present, cut to ``max_response_bytes``
(``content_truncated``).  The token is never recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.types import CallToolResult, TextContent

from actions.base import ActionOutcome, ActionRequest, ActionRuntime
from actions.errors import ActionError, PermanentActionError, RetryableActionError
from actions.filehash import verify_event_file
from actions.httpio import parse_timeout_s, status_error, transport_error
from actions.netguard import SharedTransport
from actions.redact import redact
from actions.runtime import ExecutorResources, resources_of

IDEMPOTENCY_META_KEY = "idempotency_key"


async def resolve_endpoint(request: ActionRequest, resources: ExecutorResources) -> str:
    """The MCP endpoint: ``url`` as given, or the ``agent``'s from its registration file."""
    spec = request.spec
    url = spec.get("url")
    if isinstance(url, str) and url:
        return url
    agent = spec.get("agent")
    if agent is None or agent == "":
        raise PermanentActionError("mcp needs a url or an agent")
    event = request.context.get("event") or {}
    try:
        agent_id = int(agent)
        chain_id = int(event["chain_id"])
    except (KeyError, TypeError, ValueError):
        raise PermanentActionError(
            f"mcp.agent must be an agent id and the event must have a chain_id (got {agent!r})"
        ) from None
    return await resources.agent_endpoints.mcp_endpoint(
        chain_id,
        agent_id,
        agents=resources.agents,
        client=resources.http,
        settings=resources.settings,
    )


def result_data(result: CallToolResult, limit: int) -> dict[str, Any]:
    """The tool's result as recorded: content blocks and structured content, bounded."""
    data: dict[str, Any] = {
        "content": [block.model_dump(mode="json", exclude_none=True) for block in result.content]
    }
    if result.structuredContent is not None:
        data["structured_content"] = result.structuredContent
    encoded = json.dumps(data, ensure_ascii=False)
    if len(encoded.encode()) <= limit:
        return data
    cut = encoded.encode()[:limit].decode("utf-8", errors="ignore")
    return {"content_json": cut, "content_truncated": True}


def tool_error_text(result: CallToolResult) -> str:
    """The text blocks of an ``isError`` result, the tool's own explanation."""
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    return " ".join(texts).strip() or "(no text)"


async def _call(
    url: str, request: ActionRequest, resources: ExecutorResources, timeout_s: float
) -> CallToolResult:
    spec = request.spec
    tool = spec.get("tool")
    if not isinstance(tool, str) or not tool:
        raise PermanentActionError("mcp.tool is missing")
    arguments = spec.get("arguments") or {}
    if not isinstance(arguments, Mapping):
        raise PermanentActionError("mcp.arguments must be a mapping")
    headers = {"Authorization": f"Bearer {spec['token']}"} if spec.get("token") else {}
    client = httpx.AsyncClient(
        transport=SharedTransport(resources.http_transport),
        headers=headers,
        timeout=httpx.Timeout(timeout_s),
        trust_env=False,
    )
    async with (
        client,
        streamable_http_client(url, http_client=client) as (read, write, _),
        ClientSession(read, write, read_timeout_seconds=timedelta(seconds=timeout_s)) as session,
    ):
        await session.initialize()
        return await session.call_tool(
            tool,
            dict(arguments),
            meta={IDEMPOTENCY_META_KEY: str(request.action_id)},
        )


def _first_leaf(exc: BaseException) -> BaseException:
    """The SDK runs in anyio task groups: unwrap single-error ExceptionGroups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def translate_error(exc: BaseException) -> ActionError | None:
    """The action error for what the SDK or httpx raised, None when it is unexpected."""
    leaf = _first_leaf(exc)
    if isinstance(leaf, ActionError):
        return leaf
    if isinstance(leaf, httpx.HTTPStatusError):
        return status_error(
            leaf.response.status_code,
            "mcp server answered",
            retry_after=leaf.response.headers.get("retry-after"),
        )
    if isinstance(leaf, httpx.TransportError):
        return transport_error(leaf, "mcp server")
    if isinstance(leaf, McpError):
        return PermanentActionError(f"mcp server error: {leaf.error.message}")
    return None


async def execute_mcp(request: ActionRequest, runtime: ActionRuntime) -> ActionOutcome:
    """Call the tool (see the module docstring for the contract)."""
    resources = resources_of(runtime)
    settings = resources.settings
    spec = request.spec
    secrets = [str(spec.get("token") or "")]
    timeout_s = parse_timeout_s(spec.get("timeout"), settings.default_timeout_s)
    try:
        async with asyncio.timeout(timeout_s):
            if spec.get("verify_file_hash"):
                await verify_event_file(request.context.get("event") or {}, resources)
            url = await resolve_endpoint(request, resources)
            result = await _call(url, request, resources, timeout_s)
    except TimeoutError as exc:
        message = f"mcp call timed out: no result within {timeout_s:g}s"
        raise RetryableActionError(message) from exc
    except Exception as exc:
        error = translate_error(exc)
        if error is None:
            raise
        error.message = redact(error.message, secrets)
        error.args = (error.message,)
        if error is exc:
            raise
        # An ActionError unwrapped from a task group needs no group as its cause.
        raise error from (None if error is _first_leaf(exc) else exc)
    data = result_data(result, settings.max_response_bytes)
    data["endpoint_host"] = httpx.URL(url).host
    if result.isError:
        text = f"mcp tool {spec.get('tool')!r} failed: {tool_error_text(result)}"
        message = redact(text, secrets)
        raise PermanentActionError(message[: settings.max_response_bytes], response_data=data)
    return ActionOutcome(response_data=data)

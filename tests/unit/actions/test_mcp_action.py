"""The mcp executor with the official SDK client against a real FastMCP server."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from typing import Any

import pytest
from eth_hash.auto import keccak

from actions.errors import PermanentActionError, RetryableActionError
from actions.mcp_tool import execute_mcp

FILE = b'{"feedback": "great agent", "score": 97}'
FILE_HASH = "0x" + keccak(FILE).hex()


def registration(endpoint: str, key: str = "services", name: str = "MCP") -> bytes:
    return json.dumps(
        {
            "type": "https://eips.ethereum.org/EIPS/eip-8004#registration-v1",
            "name": "alert agent",
            key: [
                {"name": "A2A", "endpoint": "https://a2a.example/agent.json"},
                {"name": name, "endpoint": endpoint, "version": "2025-06-18"},
            ],
        }
    ).encode()


def call_spec(server: Any, **extra: Any) -> dict[str, Any]:
    return {
        "tool": "notify",
        "arguments": {"message": "agent 7 dropped", "severity": "high", "payload": {"n": 3}},
        "token": server.token,
        **extra,
    }


async def test_calls_the_tool_with_meta_and_records_content(mcp_server, make_runtime, request_for):
    before = len(mcp_server.calls)
    request = request_for("mcp", call_spec(mcp_server, url=mcp_server.url), action_id=555)
    outcome = await execute_mcp(request, make_runtime())

    call = mcp_server.calls[before]
    assert call.arguments == {"message": "agent 7 dropped", "severity": "high", "payload": {"n": 3}}
    assert call.meta["idempotency_key"] == "555"
    assert outcome.response_data["content"] == [{"type": "text", "text": "noted: agent 7 dropped"}]
    assert outcome.response_data["endpoint_host"] == "127.0.0.1"
    assert mcp_server.token not in json.dumps(outcome.response_data)


async def test_tool_is_error_is_permanent_with_its_text(mcp_server, make_runtime, request_for):
    spec = {
        "url": mcp_server.url,
        "tool": "fail",
        "arguments": {"reason": "quota exhausted"},
        "token": mcp_server.token,
    }
    with pytest.raises(PermanentActionError, match="quota exhausted") as caught:
        await execute_mcp(request_for("mcp", spec), make_runtime())
    assert (caught.value.response_data or {})["content"][0]["type"] == "text"


async def test_result_content_is_truncated(mcp_server, make_runtime, request_for):
    spec = {
        "url": mcp_server.url,
        "tool": "big",
        "arguments": {"size": 5000},
        "token": mcp_server.token,
    }
    outcome = await execute_mcp(request_for("mcp", spec), make_runtime(max_response_bytes=1000))
    assert outcome.response_data["content_truncated"] is True
    assert len(outcome.response_data["content_json"].encode()) <= 1000


async def test_wrong_token_is_permanent_and_not_echoed(mcp_server, make_runtime, request_for):
    spec = call_spec(mcp_server, url=mcp_server.url, token="wrong-token-value")
    with pytest.raises(PermanentActionError, match="401") as caught:
        await execute_mcp(request_for("mcp", spec), make_runtime())
    assert "wrong-token-value" not in str(caught.value)


async def test_unknown_tool_is_permanent(mcp_server, make_runtime, request_for):
    spec = call_spec(mcp_server, url=mcp_server.url, tool="nope")
    with pytest.raises(PermanentActionError):
        await execute_mcp(request_for("mcp", spec), make_runtime())


async def test_unreachable_server_is_retryable(make_runtime, request_for):
    spec = {"url": "http://127.0.0.1:9/mcp", "tool": "notify", "arguments": {"message": "x"}}
    with pytest.raises(RetryableActionError):
        await execute_mcp(
            request_for(
                "mcp",
                spec,
            ),
            make_runtime(),
        )


async def test_guard_applies_to_the_sdk_client(mcp_server, make_runtime, request_for):
    spec = call_spec(mcp_server, url=mcp_server.url)
    before = len(mcp_server.calls)
    with pytest.raises(PermanentActionError, match="network guard refused"):
        await execute_mcp(request_for("mcp", spec), make_runtime(allow_private_network=False))
    assert len(mcp_server.calls) == before


async def test_agent_resolved_over_https_and_cached(
    mcp_server, files_server, agents, make_runtime, request_for
):
    uri = files_server.file("/agents/7.json", registration(mcp_server.url))
    agents.uris[(1, 7)] = uri
    runtime = make_runtime()
    for _ in range(2):
        await execute_mcp(request_for("mcp", call_spec(mcp_server, agent="7")), runtime)
    assert agents.lookups == 1
    assert [r.path for r in files_server.received] == ["/agents/7.json"]


async def test_agent_resolution_cache_expires(
    mcp_server, files_server, agents, make_runtime, request_for
):
    agents.uris[(1, 7)] = files_server.file("/agents/7.json", registration(mcp_server.url))
    runtime = make_runtime(agent_resolve_ttl_s=0.0)
    for _ in range(2):
        await execute_mcp(request_for("mcp", call_spec(mcp_server, agent=7)), runtime)
    assert agents.lookups == 2


@pytest.mark.parametrize("encoding", ["base64", "percent"])
async def test_agent_resolved_from_data_uri(
    encoding, mcp_server, agents, make_runtime, request_for
):
    document = registration(mcp_server.url, key="endpoints", name="mcp")
    if encoding == "base64":
        uri = "data:application/json;base64," + base64.b64encode(document).decode()
    else:
        uri = "data:application/json," + urllib.parse.quote(document)
    agents.uris[(1, 7)] = uri
    before = len(mcp_server.calls)
    await execute_mcp(request_for("mcp", call_spec(mcp_server, agent="7")), make_runtime())
    assert len(mcp_server.calls) == before + 1


async def test_agent_resolved_through_ipfs_gateway(
    mcp_server, files_server, agents, make_runtime, request_for
):
    files_server.file("/ipfs/bafyCID/agent.json", registration(mcp_server.url))
    agents.uris[(1, 7)] = "ipfs://bafyCID/agent.json"
    runtime = make_runtime(ipfs_gateway=files_server.url + "/ipfs/")
    await execute_mcp(request_for("mcp", call_spec(mcp_server, agent="7")), runtime)
    assert [r.path for r in files_server.received] == ["/ipfs/bafyCID/agent.json"]


async def test_agent_without_mcp_service_or_uri(files_server, agents, make_runtime, request_for):
    runtime = make_runtime()
    spec = {"agent": "7", "tool": "notify"}
    with pytest.raises(PermanentActionError, match="no registration URI"):
        await execute_mcp(request_for("mcp", spec), runtime)
    agents.uris[(1, 7)] = files_server.file("/a.json", registration("http://x", name="A2A"))
    with pytest.raises(PermanentActionError, match="no service named MCP"):
        await execute_mcp(request_for("mcp", spec), runtime)


async def test_registration_fetch_is_guarded(files_server, agents, make_runtime, request_for):
    agents.uris[(1, 7)] = files_server.file("/a.json", registration("http://x"))
    runtime = make_runtime(allow_private_network=False)
    with pytest.raises(PermanentActionError, match="network guard refused"):
        await execute_mcp(request_for("mcp", {"agent": "7", "tool": "notify"}), runtime)
    assert files_server.received == []


async def test_verify_file_hash_match_then_calls(
    mcp_server, files_server, make_runtime, request_for
):
    file_uri = files_server.file("/feedback/1.json", FILE)
    spec = call_spec(mcp_server, url=mcp_server.url, verify_file_hash=True)
    before = len(mcp_server.calls)
    await execute_mcp(
        request_for(
            "mcp", spec, file_uri=file_uri, file_hash=FILE_HASH.upper().replace("0X", "0x")
        ),
        make_runtime(),
    )
    assert len(mcp_server.calls) == before + 1


async def test_verify_file_hash_mismatch_is_permanent_and_skips_the_call(
    mcp_server, files_server, make_runtime, request_for
):
    file_uri = files_server.file("/feedback/1.json", FILE + b" ")
    spec = call_spec(mcp_server, url=mcp_server.url, verify_file_hash=True)
    before = len(mcp_server.calls)
    with pytest.raises(PermanentActionError, match="does not match") as caught:
        await execute_mcp(
            request_for("mcp", spec, file_uri=file_uri, file_hash=FILE_HASH), make_runtime()
        )
    assert f"expected {FILE_HASH}" in str(caught.value)
    assert f"got 0x{keccak(FILE + b' ').hex()}" in str(caught.value)
    assert len(mcp_server.calls) == before


async def test_verify_file_hash_size_bounded(mcp_server, files_server, make_runtime, request_for):
    file_uri = files_server.file("/big.bin", b"z" * 5000)
    spec = call_spec(mcp_server, url=mcp_server.url, verify_file_hash=True)
    with pytest.raises(PermanentActionError, match="larger than 1000 bytes"):
        await execute_mcp(
            request_for("mcp", spec, file_uri=file_uri, file_hash=FILE_HASH),
            make_runtime(max_download_bytes=1000),
        )


async def test_slow_tool_hits_the_deadline(mcp_server, make_runtime, request_for):
    spec = {
        "url": mcp_server.url,
        "tool": "slow",
        "arguments": {"seconds": 5},
        "token": mcp_server.token,
        "timeout": "1s",
    }
    started = time.monotonic()
    with pytest.raises(RetryableActionError, match="timed out"):
        await execute_mcp(request_for("mcp", spec), make_runtime())
    assert time.monotonic() - started < 3

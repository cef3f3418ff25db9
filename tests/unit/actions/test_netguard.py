"""The network guard: refused addresses, pinning to the checked address, redirects."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import httpx
import pytest

from actions.errors import PermanentActionError
from actions.netguard import GuardedTransport, NetworkGuard, refusal_reason
from actions.rest import execute_rest
from tests.fakes.files_server import Reply


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("fc00::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_refused_addresses(address, reason):
    assert refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        # Every form that carries an IPv4 address inside an IPv6 one is judged by that IPv4
        # address too: a relay or translator on the path would deliver it there.
        ("2002:7f00:1::1", "loopback (6to4 of 127.0.0.1)"),
        ("2002:a9fe:a9fe::1", "cloud metadata (6to4 of 169.254.169.254)"),
        ("2002:a00:1::1", "private (6to4 of 10.0.0.1)"),
        ("2001:0:7f00:1::1", "loopback (Teredo server of 127.0.0.1)"),
        # The Teredo client address is stored inverted: ffff:ffff is 0.0.0.0, 80ff:fefe is
        # 127.0.1.1 (and 5601:5601 is 169.254.169.254).
        ("2001:0:5db8:d822:0:ffff:80ff:fefe", "loopback (Teredo client of 127.0.1.1)"),
        ("2001:0:5db8:d822:0:ffff:5601:5601", "cloud metadata (Teredo client of 169.254.169.254)"),
        ("64:ff9b::7f00:1", "loopback (NAT64 of 127.0.0.1)"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata (NAT64 of 169.254.169.254)"),
        ("::7f00:1", "loopback (IPv4-compatible of 127.0.0.1)"),
        ("::a9fe:a9fe", "cloud metadata (IPv4-compatible of 169.254.169.254)"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("::ffff:192.0.0.192", "not globally routable"),
    ],
)
def test_embedded_ipv4_judged(address, reason):
    assert refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address",
    [
        "192.0.0.192",  # IETF protocol assignments: not globally reachable
        "192.0.0.8",
        "2002:101:101::1",  # 6to4 of a public address: the 6to4 range itself is not global
        "3fff::1",  # documentation
    ],
)
def test_not_globally_reachable_refused_on_every_interpreter(address):
    assert refusal_reason(ipaddress.ip_address(address)) == "not globally routable"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        # A public IPv4 address inside does not make the outer range public.
        ("2001:0:101:101::fefe:fefe", "private"),  # Teredo, public server and client
        ("64:ff9b::101:101", "reserved"),  # NAT64 and IPv4-compatible sit in ::/8
        ("64:ff9b:1::101:101", "reserved"),  # local-use NAT64
        ("::101:101", "reserved"),
    ],
)
def test_tunnel_ranges_refused_with_public_ipv4_inside(address, reason):
    assert refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "192.0.0.9",  # PCP anycast: globally reachable
        "::ffff:1.1.1.1",
    ],
)
def test_public_addresses_pass(address):
    assert refusal_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hook",
        "http://[::1]:{port}/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://100.64.1.1/",
        "http://0.0.0.0:{port}/",
        "http://[2002:7f00:1::1]:{port}/hook",
        "http://[2002:a9fe:a9fe::1]/latest/meta-data/",
    ],
)
async def test_literal_private_urls_refused(url, files_server, make_runtime, request_for):
    files_server.add("/hook", Reply(status=200))
    runtime = make_runtime(allow_private_network=False)
    with pytest.raises(PermanentActionError, match="network guard refused"):
        await execute_rest(
            request_for("rest", {"url": url.format(port=files_server.port)}), runtime
        )
    assert files_server.received == []


async def test_hostname_resolving_to_loopback_refused(files_server, make_runtime, request_for):
    files_server.add("/hook", Reply(status=200))
    runtime = make_runtime(allow_private_network=False)
    url = f"http://localhost:{files_server.port}/hook"
    with pytest.raises(PermanentActionError, match=r"localhost \((127\.0\.0\.1|::1)\)"):
        await execute_rest(request_for("rest", {"url": url}), runtime)
    assert files_server.received == []


async def test_redirect_to_metadata_refused(files_server, make_runtime, request_for, monkeypatch):
    # The first hop must pass the guard: pretend "hooks.example" is a public address
    # that in fact is our local server, then let it redirect to the metadata service.
    files_server.redirect("/hook", "http://169.254.169.254/latest/meta-data/iam")
    _resolve_as(monkeypatch, "hooks.example", "93.184.216.34")
    _connect_public_to_local(monkeypatch, files_server.port)
    runtime = make_runtime(allow_private_network=False)
    with pytest.raises(PermanentActionError, match=r"169\.254\.169\.254.*cloud metadata"):
        await execute_rest(request_for("rest", {"url": "http://hooks.example/hook"}), runtime)
    assert [r.path for r in files_server.received] == ["/hook"]


async def test_connects_to_the_checked_address_keeping_host(monkeypatch):
    """No DNS rebinding: the name is resolved once and the request goes to that address."""
    answers = iter(["93.184.216.34", "127.0.0.1"])  # a rebinding DNS server
    monkeypatch.setattr(
        "actions.netguard._lookup", _async_returning(lambda: [ipaddress.ip_address(next(answers))])
    )
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    transport = GuardedTransport(NetworkGuard(allow_private=False), httpx.MockTransport(record))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://rebind.example/x")
    [request] = seen
    assert request.url.host == "93.184.216.34"
    assert request.headers["host"] == "rebind.example"
    assert request.extensions["sni_hostname"] == "rebind.example"


async def test_non_http_schemes_refused():
    transport = GuardedTransport(
        NetworkGuard(allow_private=True), httpx.MockTransport(lambda request: httpx.Response(200))
    )
    with pytest.raises(PermanentActionError, match="scheme"):
        await transport.handle_async_request(httpx.Request("GET", "ftp://example.com/x"))


async def test_allow_private_turns_the_guard_off(files_server, make_runtime, request_for):
    url = files_server.add("/hook", Reply(status=200))
    await execute_rest(request_for("rest", {"url": url}), make_runtime(allow_private_network=True))
    assert len(files_server.received) == 1


def _async_returning(make: Any) -> Any:
    async def lookup(host: str, port: int) -> Any:
        return make()

    return lookup


def _resolve_as(monkeypatch, name: str, address: str) -> None:
    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if host == name:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 80))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


def _connect_public_to_local(monkeypatch, port: int) -> None:
    """Route connections for the pretend public address to the local server."""
    import anyio

    real = anyio.connect_tcp

    async def connect(remote_host, remote_port, **kwargs):
        if str(remote_host) == "93.184.216.34":
            return await real("127.0.0.1", port, **kwargs)
        return await real(remote_host, remote_port, **kwargs)

    monkeypatch.setattr(anyio, "connect_tcp", connect)

"""The network guard: rule-controlled URLs may only reach public addresses.

Rules choose URLs (REST webhooks, MCP servers, registration files, file URIs), so a rule
author could otherwise make a worker talk to the cloud metadata service, to Redis on
localhost or to anything on the private network (SSRF).  The guard sits in the httpx
*transport*: every request, including every redirect hop and every request the MCP SDK
makes, resolves its host once, refuses the whole host if any of its addresses is not
public, and then connects to the address that was checked.  Connecting by address (with
the Host header and the TLS SNI/certificate check still using the name) is what defeats
DNS rebinding: a second resolution between the check and the connect never happens.

This module must never fail open: an address it cannot classify is refused.
``allow_private=True`` (config ``network.allow_private``) turns the guard off for file
rules, for tests and private deployments.  A tenant's attempt sets ``attempt_network``
instead: its organization's ``allow_private`` column decides, whatever the config says,
so one organization's rules never reach the operator's private network by default.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import httpx

from actions.errors import PermanentActionError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata endpoints, named separately so the error says what was being reached.
_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
# Blocks of the IANA special-purpose registries that are not globally reachable but that
# `is_global` of older interpreters (before 3.11.10 / 3.12.4) still calls global, so the
# guard answers the same on every interpreter the project supports.
_NOT_GLOBAL = (
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("2002::/16"),  # 6to4: any relay may deliver it anywhere
    ipaddress.ip_network("3fff::/20"),  # documentation
)
_GLOBAL_INSIDE_NOT_GLOBAL = frozenset(
    {ipaddress.ip_address("192.0.0.9"), ipaddress.ip_address("192.0.0.10")}  # anycast
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_ALLOWED_SCHEMES = frozenset({"http", "https"})


@dataclass(frozen=True)
class AttemptNetwork:
    """The network policy of a tenant's attempt: its organization's, not the config's."""

    allow_private: bool
    org_id: int


# Set by the job for a tenant's attempt; None (a file rule's attempt): the config decides.
# asyncio tasks copy the context, so concurrent attempts of one worker each see their own.
attempt_network: ContextVar[AttemptNetwork | None] = ContextVar("attempt_network", default=None)


class AddressRefused(PermanentActionError):
    """A rule-controlled URL resolved to an address the guard refuses (never retried)."""


def refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not be reached, or None when it is a public address.

    An IPv6 address that carries an IPv4 address (6to4, Teredo, NAT64, IPv4-compatible)
    is refused when that IPv4 address would be: a relay or translator on the path
    delivers the packet there.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # ::ffff:127.0.0.1 is 127.0.0.1 itself: judge the IPv4 address inside.
            return refusal_reason(address.ipv4_mapped)
        for form, inner in _embedded_ipv4(address):
            reason = refusal_reason(inner)
            if reason is not None:
                return f"{reason} ({form} of {inner})"
    checks: Sequence[tuple[bool, str]] = (
        (address in _METADATA, "cloud metadata"),
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address in _CGNAT, "carrier-grade NAT"),
        (address in _UNIQUE_LOCAL, "unique-local"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
        (not _is_global(address), "not globally routable"),
    )
    return next((reason for refused, reason in checks if refused), None)


def _is_global(address: IPAddress) -> bool:
    if address in _GLOBAL_INSIDE_NOT_GLOBAL:
        return True
    return address.is_global and not any(address in block for block in _NOT_GLOBAL)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, each with the name of its form."""
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        server, client = address.teredo
        found += [("Teredo server", server), ("Teredo client", client)]
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64:
        found.append(("NAT64", low32))
    elif address in _IPV4_COMPATIBLE and not (address.is_unspecified or address.is_loopback):
        found.append(("IPv4-compatible", low32))  # :: and ::1 are not IPv4 addresses
    return found


class NetworkGuard:
    """Resolves a host and returns the one address a request may connect to."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    def private_allowed(self) -> bool:
        """Whether the attempt running in this context may reach private addresses."""
        tenant = attempt_network.get()
        return self.allow_private if tenant is None else tenant.allow_private

    async def resolve(self, host: str, port: int) -> IPAddress:
        """The checked address for ``host``; raises AddressRefused naming the bad address."""
        literal = _parse_literal(host)
        addresses = [literal] if literal is not None else await _lookup(host, port)
        for address in addresses:
            reason = refusal_reason(address)
            if reason is not None:
                shown = host if literal is not None else f"{host} ({address})"
                raise AddressRefused(
                    f"network guard refused {shown}: {reason} address {address} ({_how_to_allow()})"
                )
        return addresses[0]


def _how_to_allow() -> str:
    tenant = attempt_network.get()
    if tenant is None:
        return "set network.allow_private to allow private addresses"
    return (
        f"organization {tenant.org_id} may not reach private addresses; an operator may allow"
        " it with: engine orgs set NAME allow_private=true"
    )


def _parse_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def _lookup(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        # A name that does not resolve today may resolve tomorrow: let the caller retry.
        raise httpx.ConnectError(f"cannot resolve {host}: {exc.strerror}") from exc
    # Drop an IPv6 scope id ("fe80::1%eth0") before parsing; the address itself is judged.
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise httpx.ConnectError(f"cannot resolve {host}: no addresses")
    return addresses


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that passes every request through the network guard.

    The request is re-addressed to the checked IP; ``Host`` stays as httpx set it and the
    ``sni_hostname`` extension keeps TLS (SNI and certificate verification) on the name.
    """

    def __init__(self, guard: NetworkGuard, inner: httpx.AsyncBaseTransport) -> None:
        self._guard = guard
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Check the scheme and the resolved address, then send to that address."""
        url = request.url
        if url.scheme not in _ALLOWED_SCHEMES:
            raise AddressRefused(f"network guard refused scheme {url.scheme!r}")
        if self._guard.private_allowed():
            return await self._inner.handle_async_request(request)
        port = url.port or (443 if url.scheme == "https" else 80)
        address = await self._guard.resolve(url.host, port)
        extensions = dict(request.extensions)
        if url.scheme == "https" and _parse_literal(url.host) is None:
            extensions.setdefault("sni_hostname", url.host)
        pinned = httpx.Request(
            request.method,
            url.copy_with(host=str(address)),
            headers=request.headers,  # already carries Host: <name>
            stream=request.stream,
            extensions=extensions,
        )
        return await self._inner.handle_async_request(pinned)

    async def aclose(self) -> None:
        """Close the pooled connections of the inner transport."""
        await self._inner.aclose()


class SharedTransport(httpx.AsyncBaseTransport):
    """Lends a long-lived transport to a short-lived client without letting it close it.

    The MCP SDK wants its own ``httpx.AsyncClient`` (headers per server); wrapping the
    worker's guarded transport keeps both the guard and the connection pool.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Delegate to the shared transport."""
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Leave the shared pool open: its owner (the worker runtime) closes it."""

"""HTTP plumbing shared by the executors: bounded reads, redirects, timeouts, Retry-After.

Every response body from a rule-controlled URL is read with a size limit, so a server that
answers with a gigabyte cannot exhaust a worker; callers also wrap a whole exchange in an
overall deadline, so a server trickling one byte a second cannot hold a worker either.
Nothing here logs or formats a URL: URLs may carry secrets (webhook paths, query tokens).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx

from actions.errors import PermanentActionError, RetryableActionError

MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_timeout_s(value: Any, default_s: float) -> float:
    """A timeout given as seconds (number) or a duration string ("500ms", "10s", "2m")."""
    if value is None:
        return default_s
    if isinstance(value, bool):
        raise PermanentActionError(f"timeout must be a duration like '10s' (got {value!r})")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise PermanentActionError(f"timeout must be a duration like '10s' (got {value!r})")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds <= 0:
        raise PermanentActionError(f"timeout must be positive (got {value!r})")
    return seconds


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


async def read_bounded(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit`` bytes of a streamed body; True when more was left unread.

    Decoded bytes (a gzip-encoded file hashes as its content); the runtime asks for
    ``Accept-Encoding: identity`` so a compression bomb is unlikely to be offered at all.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit - size])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


@asynccontextmanager
async def send_following_redirects(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    max_redirects: int = MAX_REDIRECTS,
    private_headers: Collection[str] = (),
) -> AsyncIterator[tuple[httpx.Response, int]]:
    """Send ``request`` streamed, following at most ``max_redirects`` hops ourselves.

    Each hop is a new request through the client's (guarded) transport, so a redirect to a
    private address is refused like a direct URL.  httpx's ``next_request`` gives the
    standard method rewriting (303 -> GET) and drops Authorization across origins; the
    ``private_headers`` (a rule's own headers, which may hold API keys) are dropped too
    when a hop leaves the original origin.  Yields the final response and the hops followed.
    """
    origin = _origin(request.url)
    hops = 0
    response = await client.send(request, stream=True, follow_redirects=False)
    try:
        while response.status_code in _REDIRECT_STATUSES and response.next_request is not None:
            if hops == max_redirects:
                raise PermanentActionError(
                    f"too many redirects (more than {max_redirects})",
                    response_data={"status": response.status_code, "redirects": hops},
                )
            next_request = response.next_request
            if _origin(next_request.url) != origin:
                for name in private_headers:
                    next_request.headers.pop(name, None)
            await response.aclose()
            hops += 1
            response = await client.send(next_request, stream=True, follow_redirects=False)
        yield response, hops
    finally:
        await response.aclose()


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def transport_error(exc: httpx.TransportError, what: str) -> RetryableActionError:
    """A retryable error for a connection failure or a timeout, without the URL."""
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "connection failed"
    detail = str(exc) or type(exc).__name__
    return RetryableActionError(f"{what} {kind}: {detail}")


async def fetch_bounded(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    what: str,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """GET ``url`` (guarded, redirects checked) and return its body, at most ``max_bytes``.

    A body over the limit is a permanent failure: the same file will be as large next time.
    4xx is permanent, 408/429/5xx and transport failures are retryable.
    """
    try:
        request = client.build_request("GET", url, headers=headers)
        async with send_following_redirects(client, request) as (response, _):
            status = response.status_code
            if status >= 400:
                raise status_error(status, what, retry_after=response.headers.get("retry-after"))
            if status >= 300:
                raise PermanentActionError(f"{what}: unexpected HTTP {status}")
            body, truncated = await read_bounded(response, max_bytes)
    except httpx.TransportError as exc:
        raise transport_error(exc, what) from exc
    except httpx.InvalidURL as exc:
        raise PermanentActionError(f"{what}: invalid URL ({exc})") from exc
    if truncated:
        raise PermanentActionError(f"{what} is larger than {max_bytes} bytes")
    return body


def is_retryable_status(status: int) -> bool:
    """408, 429 and 5xx may succeed later; any other failure status will not."""
    return status in (408, 429) or status >= 500


def status_error(
    status: int,
    what: str,
    *,
    retry_after: str | None = None,
    response_data: dict[str, Any] | None = None,
) -> RetryableActionError | PermanentActionError:
    """The error an unexpected HTTP status maps to, honouring Retry-After when retryable."""
    message = f"{what}: HTTP {status}"
    if is_retryable_status(status):
        return RetryableActionError(
            message, retry_after=parse_retry_after(retry_after), response_data=response_data
        )
    return PermanentActionError(message, response_data=response_data)

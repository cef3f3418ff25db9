"""The ``rest`` action: one HTTP request to a webhook, signed the Standard Webhooks way.

Spec (rendered): ``url``, ``method`` (POST), ``headers``, ``body`` (sent as JSON; a string
body with an explicit non-JSON Content-Type is sent as is), ``timeout`` ("10s" or seconds,
an overall deadline for the whole exchange, redirects and body included), ``secret``
(see ``actions.signing``), ``expect_status`` (an int or a list; default any 2xx).

Every attempt carries ``webhook-id`` = the action_results id, so a receiver can drop
duplicates of an at-least-once delivery.  Outcomes: connection failures, timeouts, 408,
429 and 5xx are retryable (honouring Retry-After); any other unexpected status is
permanent.  Redirects are followed by hand, at most five, each through the network guard.
``response_data``: status, the body cut to ``max_response_bytes`` (``body_truncated``),
content-type / retry-after / location headers, and the number of redirects followed.
Request headers, the URL and the secret are never recorded.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx

from actions.base import ActionOutcome, ActionRequest, ActionRuntime
from actions.errors import ActionError, PermanentActionError, RetryableActionError
from actions.httpio import (
    parse_timeout_s,
    read_bounded,
    send_following_redirects,
    status_error,
    transport_error,
)
from actions.redact import redact, spec_credentials
from actions.runtime import resources_of
from actions.signing import webhook_headers

_HEADERS_OF_INTEREST = ("content-type", "retry-after", "location")
# Rule headers safe to forward to another origin on a redirect; any other may be a key.
_PUBLIC_HEADERS = frozenset({"content-type", "accept", "user-agent"})


def expected_statuses(value: Any) -> frozenset[int] | None:
    """``expect_status`` as a set of codes; None means any 2xx."""
    if value is None:
        return None
    values = value if isinstance(value, list | tuple) else [value]
    try:
        return frozenset(int(v) for v in values)
    except (TypeError, ValueError):
        message = f"rest.expect_status must be status codes (got {value!r})"
        raise PermanentActionError(message) from None


def encode_body(body: Any, headers: dict[str, str]) -> bytes | None:
    """The request body bytes, setting Content-Type to JSON unless the rule set one."""
    if body is None:
        return None
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    if isinstance(body, str) and content_type is not None and "json" not in content_type.lower():
        return body.encode("utf-8")
    if content_type is None:
        headers["Content-Type"] = "application/json"
    try:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise PermanentActionError(f"rest.body cannot be encoded as JSON ({exc})") from exc


# RFC 9110: a field name is a token; a value is visible ASCII, spaces and tabs.  httpx
# would raise UnicodeEncodeError, h11 "Illegal header value", both quoting the value.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")


def _string_headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PermanentActionError("rest.headers must be a mapping of names to values")
    headers = {str(k): str(v) for k, v in value.items()}
    for name, text in headers.items():
        # Neither the name nor the value is quoted: either may hold a secret.
        if not _HEADER_NAME.fullmatch(name):
            raise PermanentActionError(
                "rest.headers has a name that is not a valid HTTP header name "
                "(letters, digits and !#$%&'*+.^_`|~- only)"
            )
        if not _HEADER_VALUE.fullmatch(text):
            raise PermanentActionError(
                f"rest.headers.{name} is not a valid HTTP header value (printable ASCII "
                "only, no line breaks; after ${VAR} expansion and rendering)"
            )
    return headers


async def _response_data(response: httpx.Response, limit: int, hops: int) -> dict[str, Any]:
    body, truncated = await read_bounded(response, limit)
    headers = {h: response.headers[h] for h in _HEADERS_OF_INTEREST if h in response.headers}
    return {
        "status": response.status_code,
        "body": body.decode("utf-8", errors="replace"),
        "body_truncated": truncated,
        "headers": headers,
        "redirects": hops,
    }


def _build_request(request: ActionRequest, client: httpx.AsyncClient) -> httpx.Request:
    spec = request.spec
    url = spec.get("url")
    if not isinstance(url, str) or not url:
        raise PermanentActionError("rest.url is missing")
    method = str(spec.get("method") or "POST").upper()
    headers = _string_headers(spec.get("headers"))
    content = encode_body(spec.get("body"), headers)
    secret = spec.get("secret")
    # The timestamp is this attempt's; the id is the action's, identical on every retry.
    headers.update(
        webhook_headers(
            None if secret is None else str(secret),
            str(request.action_id),
            int(time.time()),
            content or b"",
        )
    )
    try:
        return client.build_request(method, url, headers=headers, content=content)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise PermanentActionError(f"rest.url is not a valid http(s) URL ({exc})") from exc


async def _exchange(
    client: httpx.AsyncClient,
    outgoing: httpx.Request,
    limit: int,
    expect: frozenset[int] | None,
    private_headers: list[str],
) -> dict[str, Any]:
    async with send_following_redirects(client, outgoing, private_headers=private_headers) as (
        response,
        hops,
    ):
        data = await _response_data(response, limit, hops)
    status = response.status_code
    ok = 200 <= status < 300 if expect is None else status in expect
    if not ok:
        raise status_error(
            status,
            "webhook answered",
            retry_after=response.headers.get("retry-after"),
            response_data=data,
        )
    return data


async def execute_rest(request: ActionRequest, runtime: ActionRuntime) -> ActionOutcome:
    """Deliver one webhook (see the module docstring for the contract)."""
    resources = resources_of(runtime)
    settings = resources.settings
    spec = request.spec
    rule_headers = _string_headers(spec.get("headers"))
    secrets = spec_credentials(spec)  # not every header value: `Accept` is no secret
    private_headers = [name for name in rule_headers if name.lower() not in _PUBLIC_HEADERS]
    timeout_s = parse_timeout_s(spec.get("timeout"), settings.default_timeout_s)
    expect = expected_statuses(spec.get("expect_status"))
    client = resources.http
    try:
        outgoing = _build_request(request, client)
        outgoing.extensions["timeout"] = httpx.Timeout(timeout_s).as_dict()
        async with asyncio.timeout(timeout_s):
            data = await _exchange(
                client, outgoing, settings.max_response_bytes, expect, private_headers
            )
    except TimeoutError as exc:
        message = f"webhook timed out: no complete answer within {timeout_s:g}s"
        raise RetryableActionError(message) from exc
    except httpx.TransportError as exc:
        raise _redacted(transport_error(exc, "webhook"), secrets) from exc
    except ActionError as exc:
        _redacted(exc, secrets)
        raise
    data["body"] = redact(data["body"], secrets)  # a receiver may echo what it was sent
    return ActionOutcome(response_data=data)


def _redacted(exc: ActionError, secrets: list[str]) -> ActionError:
    """The same error with secrets (secret, header values) masked out of what is recorded."""
    exc.message = redact(exc.message, secrets)
    exc.args = (exc.message,)
    if exc.response_data and isinstance(exc.response_data.get("body"), str):
        exc.response_data["body"] = redact(exc.response_data["body"], secrets)
    return exc

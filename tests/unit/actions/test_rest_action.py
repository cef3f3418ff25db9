"""The rest executor against a real local HTTP server, with the real httpx client."""

from __future__ import annotations

import base64
import json
import time

import pytest
import standardwebhooks

from actions.errors import PermanentActionError, RetryableActionError
from actions.rest import execute_rest
from tests.fakes.files_server import Reply, endless_body, trickle_body

WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


async def test_delivers_json_body_with_method_and_headers(files_server, make_runtime, request_for):
    url = files_server.add("/hook", Reply(status=200, body=b'{"ok":true}'))
    spec = {
        "url": url,
        "method": "PUT",
        "headers": {"X-Team": "ops"},
        "body": {"agent": 7, "score": 12.5, "tags": ["a", "b"], "note": "<&>"},
    }
    outcome = await execute_rest(request_for("rest", spec), make_runtime())

    [received] = files_server.received
    assert received.method == "PUT"
    assert json.loads(received.body) == spec["body"]
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-Team"] == "ops"
    assert outcome.response_data["status"] == 200
    assert outcome.response_data["body"] == '{"ok":true}'


async def test_webhook_id_is_the_action_id_on_every_attempt(
    files_server, make_runtime, request_for
):
    url = files_server.add("/hook", Reply(status=503), Reply(status=200))
    runtime = make_runtime()
    request = request_for("rest", {"url": url, "body": {"n": 1}}, action_id=9001)
    with pytest.raises(RetryableActionError):
        await execute_rest(request, runtime)
    await execute_rest(request, runtime)
    assert [r.headers["webhook-id"] for r in files_server.received] == ["9001", "9001"]


@pytest.mark.parametrize("secret", [WHSEC, "a plain shared secret"])
async def test_signature_verifies_with_standardwebhooks(
    secret, files_server, make_runtime, request_for
):
    url = files_server.add("/hook", Reply(status=204))
    spec = {"url": url, "body": {"event": "Registered", "text": "é ✓"}, "secret": secret}
    await execute_rest(request_for("rest", spec, action_id=77), make_runtime())

    [received] = files_server.received
    # What a receiver does: the whsec_ form as is, a plain string as its bytes.
    receiver_key = secret if secret.startswith("whsec_") else secret.encode()
    payload = standardwebhooks.Webhook(receiver_key).verify(received.body, received.headers)
    assert payload == spec["body"]
    assert received.headers["webhook-id"] == "77"
    assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 60


async def test_tampered_body_fails_verification(files_server, make_runtime, request_for):
    url = files_server.add("/hook", Reply(status=200))
    await execute_rest(
        request_for("rest", {"url": url, "body": {"a": 1}, "secret": WHSEC}), make_runtime()
    )
    [received] = files_server.received
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(WHSEC).verify(b'{"a":2}', received.headers)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
async def test_transient_statuses_are_retryable(status, files_server, make_runtime, request_for):
    url = files_server.add("/hook", Reply(status=status, body=b"busy"))
    with pytest.raises(RetryableActionError) as caught:
        await execute_rest(request_for("rest", {"url": url}), make_runtime())
    assert (caught.value.response_data or {})["status"] == status
    assert (caught.value.response_data or {})["body"] == "busy"


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
async def test_other_4xx_are_permanent(status, files_server, make_runtime, request_for):
    url = files_server.add("/hook", Reply(status=status))
    with pytest.raises(PermanentActionError) as caught:
        await execute_rest(request_for("rest", {"url": url}), make_runtime())
    assert (caught.value.response_data or {})["status"] == status


async def test_retry_after_seconds_and_http_date(files_server, make_runtime, request_for):
    runtime = make_runtime()
    url = files_server.add("/s", Reply(status=429, headers={"Retry-After": "7"}))
    with pytest.raises(RetryableActionError) as caught:
        await execute_rest(request_for("rest", {"url": url}), runtime)
    assert caught.value.retry_after == 7
    assert (caught.value.response_data or {})["headers"]["retry-after"] == "7"

    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    url = files_server.add("/d", Reply(status=503, headers={"Retry-After": when}))
    with pytest.raises(RetryableActionError) as caught:
        await execute_rest(request_for("rest", {"url": url}), runtime)
    assert 100 < (caught.value.retry_after or 0) <= 121


async def test_expect_status(files_server, make_runtime, request_for):
    runtime = make_runtime()
    url = files_server.add("/hook", Reply(status=202))
    await execute_rest(request_for("rest", {"url": url, "expect_status": [200, 202]}), runtime)
    with pytest.raises(PermanentActionError):
        await execute_rest(request_for("rest", {"url": url, "expect_status": 200}), runtime)


async def test_connection_refused_is_retryable(make_runtime, request_for):
    with pytest.raises(RetryableActionError, match="connection failed"):
        await execute_rest(request_for("rest", {"url": "http://127.0.0.1:9/x"}), make_runtime())


async def test_huge_body_is_not_read_whole(files_server, make_runtime, request_for):
    url = files_server.add("/big", Reply(status=200, stream=endless_body))
    started = time.monotonic()
    outcome = await execute_rest(
        request_for("rest", {"url": url}), make_runtime(max_response_bytes=1000)
    )
    assert len(outcome.response_data["body"]) == 1000
    assert outcome.response_data["body_truncated"] is True
    assert time.monotonic() - started < 5


async def test_trickling_server_hits_the_overall_deadline(files_server, make_runtime, request_for):
    url = files_server.add("/slow", Reply(status=200, stream=trickle_body))
    started = time.monotonic()
    with pytest.raises(RetryableActionError, match="timed out"):
        await execute_rest(request_for("rest", {"url": url, "timeout": "1.5s"}), make_runtime())
    assert time.monotonic() - started < 3


async def test_redirects_followed_up_to_five(files_server, make_runtime, request_for):
    runtime = make_runtime()
    final = files_server.add("/final", Reply(status=200, body=b"here"))
    files_server.redirect("/r1", final, status=307)
    outcome = await execute_rest(
        request_for("rest", {"url": files_server.url + "/r1", "body": {"k": 1}}), runtime
    )
    assert outcome.response_data["redirects"] == 1
    assert [r.method for r in files_server.received] == ["POST", "POST"]
    assert files_server.received[1].body == b'{"k":1}'

    files_server.received.clear()
    for hop in range(7):
        files_server.redirect(f"/loop{hop}", f"/loop{hop + 1}")
    with pytest.raises(PermanentActionError, match="too many redirects"):
        await execute_rest(request_for("rest", {"url": files_server.url + "/loop0"}), runtime)
    assert len(files_server.received) == 6


async def test_secrets_never_in_errors_or_data(files_server, make_runtime, request_for):
    # A receiver echoing the headers it got, then failing.
    secret = "super-secret-signing-key"
    url = files_server.add("/echo", Reply(status=400, body=b"bad key Bearer tok-123456789"))
    spec = {"url": url, "secret": secret, "headers": {"Authorization": "Bearer tok-123456789"}}
    with pytest.raises(PermanentActionError) as caught:
        await execute_rest(request_for("rest", spec), make_runtime())
    recorded = repr(caught.value.response_data) + str(caught.value)
    assert "tok-123456789" not in recorded
    assert secret not in recorded


async def test_timeout_accepts_number_and_duration(files_server, make_runtime, request_for):
    runtime = make_runtime()
    url = files_server.add("/ok", Reply(status=200))
    for timeout in (5, 2.5, "3s", "500ms"):
        await execute_rest(request_for("rest", {"url": url, "timeout": timeout}), runtime)
    with pytest.raises(PermanentActionError, match="timeout"):
        await execute_rest(request_for("rest", {"url": url, "timeout": "soon"}), runtime)


async def test_rule_headers_dropped_when_a_redirect_leaves_the_origin(
    files_server, make_runtime, request_for
):
    other = files_server.url.replace("127.0.0.1", "localhost")  # same server, other origin
    files_server.add("/final", Reply(status=200))
    files_server.redirect("/hook", other + "/final", status=307)
    spec = {
        "url": files_server.url + "/hook",
        "headers": {"X-Api-Key": "k-123456", "Content-Type": "application/json"},
        "body": {"a": 1},
        "secret": WHSEC,
    }
    await execute_rest(request_for("rest", spec), make_runtime())
    first, second = files_server.received
    assert first.headers["X-Api-Key"] == "k-123456"
    assert "X-Api-Key" not in second.headers
    assert second.headers["Content-Type"] == "application/json"
    standardwebhooks.Webhook(WHSEC).verify(second.body, second.headers)

"""Pure helpers of the executors: signing keys, durations, Retry-After, URIs, hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from eth_hash.auto import keccak

from actions.errors import PermanentActionError
from actions.fetch import decode_data_uri, ipfs_gateway_url
from actions.filehash import keccak_hex, normalise_hash
from actions.httpio import parse_retry_after, parse_timeout_s
from actions.redact import redact
from actions.signing import sign, signing_key, webhook_headers


def test_whsec_secret_is_base64_decoded():
    key = b"\x00\x01secret-bytes\xff"
    assert signing_key("whsec_" + base64.b64encode(key).decode()) == key
    assert signing_key("whsec_" + base64.b64encode(key).decode().rstrip("=")) == key


def test_plain_secret_is_its_utf8_bytes():
    assert signing_key("pässword") == "pässword".encode()


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_***not base64***"])
def test_bad_secrets_are_permanent_and_not_echoed(secret):
    with pytest.raises(PermanentActionError) as caught:
        signing_key(secret)
    assert "not base64***" not in str(caught.value)


def test_signature_is_hmac_of_id_timestamp_body():
    expected = hmac.new(b"k", b"msg_1.1700000000.{}", hashlib.sha256).digest()
    assert sign(b"k", "msg_1", 1700000000, b"{}") == "v1," + base64.b64encode(expected).decode()


def test_unsigned_delivery_still_has_id_and_timestamp():
    headers = webhook_headers(None, "12", 1700000000, b"{}")
    assert headers == {"webhook-id": "12", "webhook-timestamp": "1700000000"}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, 10.0),
        (3, 3.0),
        (2.5, 2.5),
        ("10s", 10.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("7", 7.0),
    ],
)
def test_timeouts(value, seconds):
    assert parse_timeout_s(value, 10.0) == seconds


@pytest.mark.parametrize("value", ["soon", "-1s", 0, True, "10 parsecs"])
def test_bad_timeouts(value):
    with pytest.raises(PermanentActionError):
        parse_timeout_s(value, 10.0)


def test_retry_after_forms():
    assert parse_retry_after("120") == 120
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None


def test_ipfs_gateway_urls():
    gateway = "https://gw.example/ipfs/"
    assert ipfs_gateway_url("ipfs://bafy/a.json", gateway) == "https://gw.example/ipfs/bafy/a.json"
    assert ipfs_gateway_url("ipfs://ipfs/bafy", gateway) == "https://gw.example/ipfs/bafy"
    with pytest.raises(PermanentActionError):
        ipfs_gateway_url("ipfs://", gateway)


def test_data_uris():
    assert decode_data_uri("data:application/json;base64,e30=", max_bytes=10) == b"{}"
    assert decode_data_uri("data:,%7B%22a%22%3A1%7D", max_bytes=10) == b'{"a":1}'
    with pytest.raises(PermanentActionError, match="larger than"):
        decode_data_uri("data:," + "x" * 11, max_bytes=10)
    with pytest.raises(PermanentActionError):
        decode_data_uri("data:application/json;base64", max_bytes=10)


def test_keccak_is_not_sha3():
    assert keccak_hex(b"") == ("0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")
    assert keccak_hex(b"") != "0x" + hashlib.sha3_256(b"").hexdigest()
    assert keccak_hex(b"abc") == "0x" + keccak(b"abc").hex()


def test_file_hash_normalised():
    digest = keccak(b"x")
    assert normalise_hash(digest) == "0x" + digest.hex()
    assert normalise_hash("0X" + digest.hex().upper()) == "0x" + digest.hex()
    with pytest.raises(PermanentActionError):
        normalise_hash("0x1234")


def test_redact_masks_longest_first_and_skips_tiny_values():
    assert redact("token abcdef1234 and ABCDEF", ["abcdef", "abcdef1234"]) == (
        "token [redacted] and [redacted]"
    )
    assert redact("a b c", ["a", None, ""]) == "a b c"


def test_library_logs_lose_tokens_and_url_paths(caplog):
    import logging

    from actions.redact import install_library_log_redactor

    install_library_log_redactor(["123456:SECRET-token"])
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info(
            'HTTP Request: %s %s "%s"',
            "POST",
            "https://api.telegram.org/bot123456:SECRET-token/sendMessage",
            "HTTP/1.1 200 OK",
        )
        logging.getLogger("httpx").info("POST https://hooks.slack.com/services/T0/B0/XyZsecret")
    text = caplog.text
    assert "SECRET" not in text
    assert "XyZsecret" not in text
    assert "https://api.telegram.org/…" in text

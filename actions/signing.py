"""Standard Webhooks signatures for REST deliveries (https://www.standardwebhooks.com).

Headers sent with a signed delivery:

    webhook-id         the action_results id: stable across retries, the receiver's
                       idempotency key (sent even when the action has no ``secret``)
    webhook-timestamp  unix seconds of this attempt
    webhook-signature  "v1,<base64 of HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>"

The ``secret`` of a rest action is either ``whsec_<base64>`` (the Standard Webhooks form:
the key is the base64-decoded bytes) or any other string (the key is its UTF-8 bytes).
A receiver using the ``standardwebhooks`` package passes the ``whsec_…`` string as is, or
``Webhook(secret.encode())`` for a plain string.  The key never leaves this module in an
error message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from actions.errors import PermanentActionError

SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The HMAC key for a ``secret`` as written in a rule (see the module docstring)."""
    if not secret:
        raise PermanentActionError("rest.secret is empty")
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX) :]
        try:
            # Tolerate missing padding, as the reference implementations do.
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise PermanentActionError("rest.secret starts with whsec_ but is not base64") from None
        if not key:
            raise PermanentActionError("rest.secret is empty")
        return key
    return secret.encode("utf-8")


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def webhook_headers(secret: str | None, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers: always id and timestamp, a signature with a secret."""
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if secret is not None:
        headers["webhook-signature"] = sign(signing_key(secret), msg_id, timestamp, body)
    return headers

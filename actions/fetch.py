"""Fetching the documents a rule points at: registration files and ``file_uri`` contents.

ERC-8004 URIs come in three forms: ``https:``/``http:`` (fetched through the network
guard), ``ipfs://CID/path`` (fetched from the configured gateway, also guarded) and
``data:`` (decoded in place, base64 or percent-encoded).  Every fetch is size-bounded by
``settings.max_download_bytes``.  URIs are not quoted in errors beyond their scheme:
they can carry credentials.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse

import httpx

from actions.base import ActionSettings
from actions.errors import PermanentActionError
from actions.httpio import fetch_bounded


def ipfs_gateway_url(uri: str, gateway: str) -> str:
    """``ipfs://CID/path`` (or the legacy ``ipfs://ipfs/CID``) as a gateway URL."""
    path = uri[len("ipfs://") :]
    if path.startswith("ipfs/"):
        path = path[len("ipfs/") :]
    if not path:
        raise PermanentActionError("ipfs URI has no CID")
    return gateway.rstrip("/") + "/" + path


def decode_data_uri(uri: str, *, max_bytes: int) -> bytes:
    """The bytes of a ``data:[mediatype][;base64],payload`` URI."""
    header, sep, payload = uri[len("data:") :].partition(",")
    if not sep:
        raise PermanentActionError("data: URI has no ',' before its payload")
    if header.lower().endswith(";base64"):
        try:
            data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=False)
        except binascii.Error as exc:
            raise PermanentActionError(f"data: URI is not valid base64 ({exc})") from exc
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise PermanentActionError(f"data: URI is larger than {max_bytes} bytes")
    return data


async def fetch_uri(
    client: httpx.AsyncClient, uri: str, settings: ActionSettings, *, what: str
) -> bytes:
    """The content behind ``uri`` (https, http, ipfs or data), at most max_download_bytes."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    limit = settings.max_download_bytes
    if scheme == "data":
        return decode_data_uri(uri, max_bytes=limit)
    if scheme == "ipfs":
        url = ipfs_gateway_url(uri, settings.ipfs_gateway)
        return await fetch_bounded(client, url, max_bytes=limit, what=what)
    if scheme in ("http", "https"):
        return await fetch_bounded(client, uri, max_bytes=limit, what=what)
    raise PermanentActionError(f"{what}: unsupported URI scheme {scheme or '(none)'!r}")

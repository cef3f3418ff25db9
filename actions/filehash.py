"""``verify_file_hash``: the file an event points at must be the file it committed to.

ERC-8004 feedback and validation events carry ``file_uri`` and ``file_hash``, the
keccak-256 of the file (not SHA3-256: hashlib's sha3_256 pads differently, so eth-hash is
used).  The file is fetched through the network guard with the download size limit, and
a mismatch is permanent: the same bytes will hash the same way next time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eth_hash.auto import keccak

from actions.errors import PermanentActionError
from actions.fetch import fetch_uri
from actions.runtime import ExecutorResources


def keccak_hex(data: bytes) -> str:
    """The 0x-prefixed lower-case keccak-256 of ``data``."""
    return "0x" + bytes(keccak(data)).hex()


def normalise_hash(value: Any) -> str:
    """A 32-byte hash as 0x-prefixed lower-case hex; bytes from the database accepted."""
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).hex()
    else:
        text = str(value or "").strip().lower().removeprefix("0x")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise PermanentActionError(f"event.file_hash is not a 32-byte hex hash (got {value!r})")
    return "0x" + text


async def verify_event_file(event: Mapping[str, Any], resources: ExecutorResources) -> str:
    """Fetch ``event.file_uri`` and check it against ``event.file_hash``; returns the hash."""
    file_uri = event.get("file_uri")
    if not isinstance(file_uri, str) or not file_uri:
        raise PermanentActionError("verify_file_hash: the event has no file_uri")
    expected = normalise_hash(event.get("file_hash"))
    content = await fetch_uri(resources.http, file_uri, resources.settings, what="file_uri")
    actual = keccak_hex(content)
    if actual != expected:
        raise PermanentActionError(
            f"verify_file_hash: file_uri content does not match file_hash "
            f"(expected {expected}, got {actual})"
        )
    return actual

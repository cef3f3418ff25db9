"""Which parts of a Telegram text were already delivered, per action, across attempts.

Telegram has no idempotency key: a retried action (a later part failed, or the worker
died after sending but before recording the result) would send its messages again.  The
ledger remembers, for one action and one text, the message id of every part sent, so an
attempt skips what an earlier attempt delivered.  The key includes a hash of the text:
a text rendered differently on a later attempt is a different delivery.  Entries expire
after ``PARTS_TTL_S``, longer than any retry schedule.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from redis.asyncio import Redis

PARTS_TTL_S = 7 * 24 * 3600
KEY_PREFIX = "te:tgsent"


def parts_key(action_id: int, text: str) -> str:
    """The ledger entry for one action's text."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{KEY_PREFIX}:{action_id}:{digest}"


class TelegramParts(Protocol):
    """Part index -> Telegram message id, for the parts already delivered."""

    async def delivered(self, key: str) -> dict[int, int]:
        """The parts delivered so far under ``key``."""
        ...

    async def record(self, key: str, part: int, message_id: int) -> None:
        """Remember that ``part`` was delivered as ``message_id``."""
        ...


class RedisTelegramParts:
    """The ledger shared by every worker (a Redis hash per action text)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def delivered(self, key: str) -> dict[int, int]:
        """Same contract as ``TelegramParts.delivered``."""
        raw = await self._redis.hgetall(key)
        return {int(part): int(message_id) for part, message_id in raw.items()}

    async def record(self, key: str, part: int, message_id: int) -> None:
        """Same contract as ``TelegramParts.record``."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, str(part), str(message_id))
            pipe.expire(key, PARTS_TTL_S)
            await pipe.execute()


class InMemoryTelegramParts:
    """The in-process twin of ``RedisTelegramParts``."""

    def __init__(self) -> None:
        self._parts: dict[str, dict[int, int]] = {}

    async def delivered(self, key: str) -> dict[int, int]:
        """Same contract as ``TelegramParts.delivered``."""
        return dict(self._parts.get(key, {}))

    async def record(self, key: str, part: int, message_id: int) -> None:
        """Same contract as ``TelegramParts.record``."""
        self._parts.setdefault(key, {})[part] = message_id

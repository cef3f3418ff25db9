"""The Telegram part ledger: the Redis one and its in-memory twin pass the same cases."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from actions.telegram_parts import (
    PARTS_TTL_S,
    InMemoryTelegramParts,
    RedisTelegramParts,
    TelegramParts,
    parts_key,
)


@pytest.fixture(params=["redis", "memory"])
async def ledger(request, redis_url) -> AsyncIterator[TelegramParts]:
    if request.param == "memory":
        yield InMemoryTelegramParts()
        return
    client = Redis.from_url(redis_url)
    yield RedisTelegramParts(client)
    await client.aclose()


async def test_records_parts_per_action_and_text(ledger):
    key = parts_key(1, "text")
    assert await ledger.delivered(key) == {}
    await ledger.record(key, 0, 100)
    await ledger.record(key, 1, 101)
    assert await ledger.delivered(key) == {0: 100, 1: 101}
    assert await ledger.delivered(parts_key(1, "other text")) == {}
    assert await ledger.delivered(parts_key(2, "text")) == {}


async def test_redis_entries_expire(redis_url):
    client = Redis.from_url(redis_url)
    key = parts_key(1, "text")
    await RedisTelegramParts(client).record(key, 0, 1)
    assert 0 < await client.ttl(key) <= PARTS_TTL_S
    await client.aclose()

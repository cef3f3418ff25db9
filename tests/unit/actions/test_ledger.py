"""The Telegram part ledger: the Redis one and its in-memory twin pass the same cases."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from actions.ledger import (
    LEDGER_TTL_S,
    InMemoryPartLedger,
    PartLedger,
    RedisPartLedger,
    ledger_key,
)


@pytest.fixture(params=["redis", "memory"])
async def ledger(request, redis_url) -> AsyncIterator[PartLedger]:
    if request.param == "memory":
        yield InMemoryPartLedger()
        return
    client = Redis.from_url(redis_url)
    yield RedisPartLedger(client)
    await client.aclose()


async def test_records_parts_per_action_and_text(ledger):
    key = ledger_key(1, "text")
    assert await ledger.delivered(key) == {}
    await ledger.record(key, 0, 100)
    await ledger.record(key, 1, 101)
    assert await ledger.delivered(key) == {0: 100, 1: 101}
    assert await ledger.delivered(ledger_key(1, "other text")) == {}
    assert await ledger.delivered(ledger_key(2, "text")) == {}


async def test_redis_entries_expire(redis_url):
    client = Redis.from_url(redis_url)
    key = ledger_key(1, "text")
    await RedisPartLedger(client).record(key, 0, 1)
    assert 0 < await client.ttl(key) <= LEDGER_TTL_S
    await client.aclose()

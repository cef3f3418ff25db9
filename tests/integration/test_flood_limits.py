"""Flood limits: the Redis limiter and its in-memory twin pass the same cases, and two
worker runtimes on one Redis share the limits."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

import actions.flood as flood
from actions.agents import InMemoryAgentDirectory
from actions.base import ActionSettings
from actions.errors import RetryableActionError
from actions.flood import InMemoryFloodLimiter, RedisFloodLimiter, Window, acquire_slot
from actions.runtime import WorkerRuntime
from actions.telegram import execute_telegram
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.unit.actions.conftest import BOT_TOKEN, build_request


@pytest.fixture(params=["redis", "memory"])
async def limiter(request, redis_url) -> AsyncIterator[flood.FloodLimiter]:
    if request.param == "memory":
        yield InMemoryFloodLimiter()
        return
    client = Redis.from_url(redis_url)
    yield RedisFloodLimiter(client)
    await client.aclose()


async def test_one_message_a_second_per_chat(limiter):
    assert await limiter.reserve("bot", 5) == 0
    wait = await limiter.reserve("bot", 5)
    assert 0.9 <= wait <= 1.0
    assert await limiter.reserve("bot", 6) == 0  # another chat is not held back


async def test_thirty_a_second_per_bot(limiter):
    for chat in range(30):
        assert await limiter.reserve("bot", chat) == 0
    assert await limiter.reserve("bot", 99) > 0
    assert await limiter.reserve("other-bot", 99) == 0


async def test_group_window(limiter, monkeypatch):
    monkeypatch.setattr(flood, "PER_CHAT", Window(100, 1.0))
    monkeypatch.setattr(flood, "PER_GROUP", Window(3, 60.0))
    for _ in range(3):
        assert await limiter.reserve("bot", -100) == 0
    assert 59 <= await limiter.reserve("bot", -100) <= 60
    assert await limiter.reserve("bot", 100) == 0  # a private chat has no group window


async def test_a_refused_reservation_takes_no_slot(limiter, monkeypatch):
    monkeypatch.setattr(flood, "PER_CHAT", Window(1, 0.2))
    assert await limiter.reserve("bot", 5) == 0
    assert await limiter.reserve("bot", 5) > 0
    await asyncio.sleep(0.25)
    assert await limiter.reserve("bot", 5) == 0


async def test_block_holds_the_chat(limiter):
    await limiter.block("bot", 5, 3.0)
    assert 2.5 <= await limiter.reserve("bot", 5) <= 3.0
    assert await limiter.reserve("bot", 6) == 0


async def test_acquire_waits_briefly_and_retries_long_waits(limiter):
    await limiter.reserve("bot", 5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await acquire_slot(limiter, "bot", 5)
    assert loop.time() - started >= 0.9
    await limiter.block("bot", 5, 30)
    with pytest.raises(RetryableActionError) as caught:
        await acquire_slot(limiter, "bot", 5)
    assert 29 <= (caught.value.retry_after or 0) <= 30


@pytest.fixture
def telegram_api() -> Iterator[FakeTelegramAPI]:
    api = FakeTelegramAPI({BOT_TOKEN})
    api.start()
    yield api
    api.stop()


async def test_shared_across_two_runtimes(redis_url, telegram_api):
    """Two worker processes (two runtimes, one Redis) still send one message a second."""
    settings = ActionSettings(
        allow_private_network=True,
        telegram_bots={"default": BOT_TOKEN},
        telegram_api_base_url=telegram_api.api_base_url,
    )
    first, second = (
        WorkerRuntime.with_redis(settings, redis_url=redis_url, agents=InMemoryAgentDirectory())
        for _ in range(2)
    )
    try:
        await asyncio.gather(
            *(
                execute_telegram(build_request("telegram", {"chat_id": 5, "text": f"m{n}"}), rt)
                for n, rt in enumerate([first, second, first, second])
            )
        )
    finally:
        await first.aclose()
        await second.aclose()
    times = sorted(message.at for message in telegram_api.messages)
    assert len(times) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.9

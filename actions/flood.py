"""Telegram flood limits, shared by every worker process through Redis.

Telegram answers 429 when a bot sends more than about one message a second to a chat,
twenty a minute to a group, or thirty a second overall.  Each worker process would keep
within the limits on its own and still exceed them together, so the windows live in
Redis: one Lua script checks every window that applies and takes a slot in all of them
atomically, or takes none and says how long to wait.  A 429 also *blocks* the chat for
its ``retry_after`` so the other workers wait too instead of each collecting a 429;
``blocked_chats`` lists the blocks in force (``engine status`` shows them).

Windows are sliding logs (a sorted set of send times per key), exact for "N per window"
where a token bucket would allow a burst on top of the rate.  Keys hold a hash of the bot
token, never the token.  ``InMemoryFloodLimiter`` is the twin for tests without Redis;
``tests/unit/actions/test_flood.py`` runs both against the same cases.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import redis
from redis.asyncio import Redis

from actions.errors import RetryableActionError

KEY_PREFIX = "te:tgflood"
# Waiting in the worker is cheaper than a retry round trip, up to this long; beyond it the
# job is rescheduled with retry_after so the worker is free for other actions.
MAX_INLINE_WAIT_S = 5.0


@dataclass(frozen=True)
class Window:
    """At most ``limit`` messages in any ``window_s`` seconds."""

    limit: int
    window_s: float


PER_CHAT = Window(1, 1.0)
PER_GROUP = Window(20, 60.0)
PER_BOT = Window(30, 1.0)


def bot_key(token: str) -> str:
    """A stable, non-secret name for a bot: part of a hash of its token."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def is_group(chat_id: int | str) -> bool:
    """Groups have negative ids; ``@name`` chats are channels, limited like groups."""
    text = str(chat_id)
    return text.startswith(("-", "@"))


def windows_for(bot: str, chat_id: int | str) -> list[tuple[str, Window]]:
    """The Redis keys and windows that one message to ``chat_id`` counts against."""
    chat = f"{KEY_PREFIX}:{bot}:chat:{chat_id}"
    keys = [(chat, PER_CHAT), (f"{KEY_PREFIX}:{bot}:bot", PER_BOT)]
    if is_group(chat_id):
        keys.append((f"{chat}:group", PER_GROUP))
    return keys


def block_key(bot: str, chat_id: int | str) -> str:
    """The key that holds a 429's "retry after" for one chat."""
    return f"{KEY_PREFIX}:{bot}:block:{chat_id}"


@dataclass(frozen=True)
class ChatBlock:
    """A chat no worker sends to until ``seconds_left`` have passed (a 429)."""

    bot: str  # bot_key of the bot's token
    chat_id: str
    seconds_left: float


#: Listing more blocks than this in one status report would not make it more useful.
MAX_BLOCKS_LISTED = 100


def blocked_chats(client: redis.Redis, limit: int = MAX_BLOCKS_LISTED) -> list[ChatBlock]:
    """The chats blocked now (at most ``limit``, the longest blocks first)."""
    prefix = f"{KEY_PREFIX}:"
    keys = [
        key.decode() if isinstance(key, bytes) else str(key)
        for key in client.scan_iter(match=f"{prefix}*:block:*", count=1000)
    ]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
    blocks = []
    for key, pttl in zip(keys, pipe.execute(), strict=True):
        bot, _, chat_id = key[len(prefix) :].partition(":block:")
        if pttl > 0 and bot and chat_id:
            blocks.append(ChatBlock(bot=bot, chat_id=chat_id, seconds_left=pttl / 1000.0))
    blocks.sort(key=lambda block: -block.seconds_left)
    return blocks[:limit]


class FloodLimiter(Protocol):
    """Takes a send slot for (bot, chat) in every window that applies."""

    async def reserve(self, bot: str, chat_id: int | str) -> float:
        """0 when a slot was taken; otherwise the seconds to wait (nothing taken)."""
        ...

    async def block(self, bot: str, chat_id: int | str, seconds: float) -> None:
        """No sends to ``chat_id`` for ``seconds`` (Telegram said retry_after)."""
        ...


async def acquire_slot(
    limiter: FloodLimiter,
    bot: str,
    chat_id: int | str,
    *,
    max_wait_s: float = MAX_INLINE_WAIT_S,
) -> None:
    """Wait for a send slot; a wait longer than ``max_wait_s`` becomes a retry."""
    waited = 0.0
    while True:
        wait = await limiter.reserve(bot, chat_id)
        if wait <= 0:
            return
        if waited + wait > max_wait_s:
            raise RetryableActionError(
                f"telegram flood limit for chat {chat_id}: retry in {wait:.1f}s",
                retry_after=wait,
            )
        await asyncio.sleep(wait)
        waited += wait


# KEYS[1] = block key, KEYS[2..] = window keys; ARGV[1] = unique member,
# then (limit, window_ms) per window key.  Times come from the Redis server, the one
# clock every worker shares.  Returns the milliseconds to wait, 0 when a slot was taken.
_RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
local blocked = redis.call('PTTL', KEYS[1])
if blocked > 0 then wait = blocked end
for i = 2, #KEYS do
  local limit = tonumber(ARGV[2 * i - 2])
  local window = tonumber(ARGV[2 * i - 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  if redis.call('ZCARD', KEYS[i]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + window - now
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[2 * i - 1])
end
return 0
"""


class RedisFloodLimiter:
    """The limiter every worker process shares (state in Redis)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._script = redis.register_script(_RESERVE_LUA)

    async def reserve(self, bot: str, chat_id: int | str) -> float:
        """Take a slot in every window of (bot, chat), or return the wait in seconds."""
        windows = windows_for(bot, chat_id)
        keys = [block_key(bot, chat_id), *(key for key, _ in windows)]
        args: list[str | int] = [uuid.uuid4().hex]
        for _, window in windows:
            args += [window.limit, int(window.window_s * 1000)]
        wait_ms = await self._script(keys=keys, args=args)
        return int(wait_ms) / 1000.0

    async def block(self, bot: str, chat_id: int | str, seconds: float) -> None:
        """Hold every worker back from ``chat_id`` for ``seconds``."""
        if seconds > 0:
            await self._redis.set(block_key(bot, chat_id), "1", px=max(1, int(seconds * 1000)))


class InMemoryFloodLimiter:
    """The in-process twin of ``RedisFloodLimiter`` (one process only)."""

    def __init__(self) -> None:
        self._sent: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    async def reserve(self, bot: str, chat_id: int | str) -> float:
        """Same contract as ``RedisFloodLimiter.reserve``."""
        now = time.monotonic()
        wait = max(0.0, self._blocked_until.get(block_key(bot, chat_id), 0.0) - now)
        windows = windows_for(bot, chat_id)
        for key, window in windows:
            sent = self._sent.setdefault(key, deque())
            while sent and sent[0] <= now - window.window_s:
                sent.popleft()
            if len(sent) >= window.limit:
                wait = max(wait, sent[0] + window.window_s - now)
        if wait > 0:
            return wait
        for key, _ in windows:
            self._sent[key].append(now)
        return 0.0

    async def block(self, bot: str, chat_id: int | str, seconds: float) -> None:
        """Same contract as ``RedisFloodLimiter.block``."""
        self._blocked_until[block_key(bot, chat_id)] = time.monotonic() + seconds

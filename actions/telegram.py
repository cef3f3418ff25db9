"""The ``telegram`` action: send a message with python-telegram-bot (a ``Bot``, no Application).

Spec (rendered): ``chat_id``, ``text``, ``parse_mode`` ("HTML" default, "MarkdownV2",
"none"), ``bot`` (a name under ``telegram.bots``, default "default") or ``bot_token`` (the
action's own bot: a tenant's ``{secret: NAME}``, resolved by the job), ``disable_preview``.
The template layer has already escaped inserted values for the parse mode; this module
sends the text as it is, split into several messages when it is too long
(``actions.telegram_text``).

Before every message a slot is taken in the flood windows shared through Redis
(``actions.flood``).  Telegram's answers map to:
- 429 ``retry_after``: the chat is blocked for every worker for that long (at most
  ``telegram.max_retry_after_s``: a longer one is logged and not believed, so that one
  answer cannot silence a chat for years); before any part was delivered the job is
  retried after it, afterwards (a split text) the worker waits, so the parts already
  sent are not sent again;
- a group migrated to a supergroup (``migrate_to_chat_id``): sent again to the new chat,
  recorded as ``migrated_to_chat_id``;
- 403 (blocked, kicked) and 400 (e.g. "can't parse entities"), a rejected token:
  permanent, with Telegram's reason;
- timeouts and network errors: retryable.
Telegram has no idempotency key, so each delivered part is written to a ledger in Redis
(``actions.telegram_parts``) keyed by the action id: a retried action skips the parts an earlier
attempt delivered (a worker killed between the send and the record may still repeat one).
``response_data``: ``chat_id``, ``message_ids``, ``message_id`` (the first), ``parts``.
The bot token is scrubbed from every message (PTB puts it in URLs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import telegram
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from actions.base import ActionOutcome, ActionRequest, ActionRuntime
from actions.errors import ActionError, PermanentActionError, RetryableActionError
from actions.flood import FloodLimiter, acquire_slot, bot_key
from actions.redact import redact
from actions.runtime import resources_of
from actions.telegram_parts import parts_key
from actions.telegram_text import split_message

log = logging.getLogger(__name__)

PARSE_MODES = {"html": "HTML", "markdownv2": "MarkdownV2", "none": None}
# With parts already delivered, waiting this long in the worker beats resending them.
MAX_WAIT_MID_MESSAGE_S = 60.0
_MAX_MIGRATIONS = 2


def parse_mode_of(value: Any) -> str | None:
    """The PTB parse mode for the rule's ``parse_mode`` (None sends plain text)."""
    mode = PARSE_MODES.get(str("HTML" if value is None else value).strip().lower(), "?")
    if mode == "?":
        raise PermanentActionError(
            f"telegram.parse_mode must be HTML, MarkdownV2 or none (got {value!r})"
        )
    return mode


def chat_id_of(value: Any) -> int | str:
    """A numeric chat id as an int; ``@channelname`` stays a string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value or "").strip()
    try:
        return int(text)
    except ValueError:
        if text.startswith("@") and len(text) > 1:
            return text
    raise PermanentActionError(f"telegram.chat_id must be a number or @channel (got {value!r})")


def retry_after_s(exc: RetryAfter) -> float:
    """Seconds from a RetryAfter, whichever type this PTB version hands out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PTB 22 deprecates the int form, not our concern
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


@dataclass
class _Delivery:
    """One action's messages to one chat, which may move when the group migrates."""

    bot: telegram.Bot
    bot_name: str
    flood: FloodLimiter
    chat_id: int | str
    parse_mode: str | None
    disable_preview: bool
    max_retry_after_s: float
    message_ids: list[int] = field(default_factory=list)
    migrated_to: int | None = None

    async def send(self, text: str) -> None:
        """Send one part, following a migration and waiting out a 429 mid-message."""
        migrations = 0
        while True:
            await acquire_slot(self.flood, self.bot_name, self.chat_id)
            try:
                message = await self.bot.send_message(
                    self.chat_id,
                    text,
                    parse_mode=self.parse_mode,
                    link_preview_options=telegram.LinkPreviewOptions(is_disabled=True)
                    if self.disable_preview
                    else None,
                )
            except ChatMigrated as exc:
                migrations += 1
                if migrations > _MAX_MIGRATIONS:
                    raise PermanentActionError("telegram chat keeps migrating") from exc
                self.chat_id = self.migrated_to = exc.new_chat_id
                continue
            except RetryAfter as exc:
                await self._wait_or_retry(retry_after_s(exc))
                continue
            self.message_ids.append(message.message_id)
            return

    async def _wait_or_retry(self, asked_s: float) -> None:
        seconds = min(asked_s, self.max_retry_after_s)
        if seconds < asked_s:
            log.warning(
                "telegram retry_after capped",
                extra={
                    "bot": self.bot_name,
                    "chat_id": self.chat_id,
                    "retry_after_s": asked_s,
                    "capped_to_s": seconds,
                },
            )
        await self.flood.block(self.bot_name, self.chat_id, seconds)
        if not self.message_ids or seconds > MAX_WAIT_MID_MESSAGE_S:
            raise RetryableActionError(
                f"telegram flood control: retry in {seconds:g}s",
                retry_after=seconds,
                response_data=self.response_data(),
            )
        await asyncio.sleep(seconds)

    def response_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"chat_id": self.chat_id, "message_ids": list(self.message_ids)}
        if self.message_ids:
            data["message_id"] = self.message_ids[0]
        if self.migrated_to is not None:
            data["migrated_to_chat_id"] = self.migrated_to
        return data


def _translate(exc: TelegramError, data: dict[str, Any] | None) -> ActionError:
    """The action error for a Telegram error; most specific PTB classes first."""
    reason = exc.message
    if isinstance(exc, Forbidden):
        return PermanentActionError(f"telegram refused (403): {reason}", response_data=data)
    if isinstance(exc, BadRequest):
        return PermanentActionError(f"telegram rejected (400): {reason}", response_data=data)
    if isinstance(exc, InvalidToken):
        return PermanentActionError(f"telegram rejected the bot token: {reason}")
    if isinstance(exc, NetworkError):  # includes TimedOut
        return RetryableActionError(f"telegram unreachable: {reason}", response_data=data)
    return RetryableActionError(f"telegram error: {reason}", response_data=data)


async def execute_telegram(request: ActionRequest, runtime: ActionRuntime) -> ActionOutcome:
    """Send the action's text (see the module docstring for the contract)."""
    resources = resources_of(runtime)
    spec = request.spec
    text = spec.get("text")
    if not isinstance(text, str) or not text.strip():
        raise PermanentActionError("telegram.text is empty")
    chat_id = chat_id_of(spec.get("chat_id"))
    parse_mode = parse_mode_of(spec.get("parse_mode"))
    own_token = spec.get("bot_token")
    bot_name = str(spec.get("bot") or "default")
    token = str(own_token) if own_token else resources.settings.telegram_bots.get(bot_name, "")
    delivery: _Delivery | None = None
    try:
        if own_token:
            bot = await resources.telegram_bot_for_token(token)
        else:
            bot, token = await resources.telegram_bot(bot_name)
        delivery = _Delivery(
            bot=bot,
            bot_name=bot_key(token),
            flood=resources.flood,
            chat_id=chat_id,
            parse_mode=parse_mode,
            disable_preview=bool(spec.get("disable_preview", False)),
            max_retry_after_s=resources.settings.telegram_max_retry_after_s,
        )
        parts = split_message(text, parse_mode)
        part_record, key = resources.telegram_parts, parts_key(request.action_id, text)
        sent_before = await part_record.delivered(key)
        for index, part in enumerate(parts):
            if index in sent_before:  # delivered by an earlier attempt of this action
                delivery.message_ids.append(sent_before[index])
                continue
            await delivery.send(part)
            await part_record.record(key, index, delivery.message_ids[-1])
    except TelegramError as exc:
        data = delivery.response_data() if delivery else None
        error = _translate(exc, data)
        error.message = redact(error.message, [token])
        error.args = (error.message,)
        raise error from None  # the PTB exception's text and URL may carry the token
    except ActionError as exc:
        exc.message = redact(exc.message, [token])
        exc.args = (exc.message,)
        raise
    data = delivery.response_data()
    data["parts"] = len(parts)
    return ActionOutcome(response_data=data)

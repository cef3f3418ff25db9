"""The telegram executor with python-telegram-bot against the fake Bot API."""

from __future__ import annotations

import html
import time

import pytest
from telegram.helpers import escape_markdown

from actions.errors import PermanentActionError, RetryableActionError
from actions.flood import InMemoryFloodLimiter
from actions.telegram import execute_telegram
from actions.telegram_parts import InMemoryTelegramParts
from tests.unit.actions.conftest import BOT_TOKEN

NASTY = "ipfs://agent_42/*[x](y)~`>#+-=|{}.!\\ <b>&amp; <&>"


@pytest.fixture
def tg_runtime(make_runtime, telegram_api):
    return make_runtime(telegram_api_base_url=telegram_api.api_base_url)


async def test_delivers_html_by_default(telegram_api, tg_runtime, request_for):
    spec = {"chat_id": 1001, "text": "<b>Agent 7</b> registered"}
    outcome = await execute_telegram(request_for("telegram", spec), tg_runtime)
    [message] = telegram_api.messages
    assert message.parse_mode == "HTML"
    assert message.plain == "Agent 7 registered"
    assert outcome.response_data == {
        "chat_id": 1001,
        "message_ids": [message.message_id],
        "message_id": message.message_id,
        "parts": 1,
    }


@pytest.mark.parametrize(
    ("parse_mode", "escape"),
    [
        ("HTML", lambda value: f"<code>{html.escape(value, quote=False)}</code>"),
        ("MarkdownV2", lambda value: f"*uri:* {escape_markdown(value, version=2)}"),
        ("none", lambda value: value),
    ],
)
async def test_escaped_values_arrive_intact(
    parse_mode, escape, telegram_api, tg_runtime, request_for
):
    spec = {"chat_id": 5, "text": escape(NASTY), "parse_mode": parse_mode}
    await execute_telegram(request_for("telegram", spec), tg_runtime)
    [message] = telegram_api.messages
    assert NASTY in message.plain


async def test_long_text_is_split_on_lines(telegram_api, tg_runtime, request_for):
    lines = [f"<b>line {n}</b> {'x' * 60}" for n in range(200)]  # ~15,000 characters
    text = "\n".join(lines)
    outcome = await execute_telegram(
        request_for("telegram", {"chat_id": 5, "text": text}), tg_runtime
    )
    parts = telegram_api.messages
    assert len(parts) == outcome.response_data["parts"] > 1
    assert "\n".join(p.plain.rstrip("\n") for p in parts) == "\n".join(
        line.replace("<b>", "").replace("</b>", "") for line in lines
    )
    assert outcome.response_data["message_ids"] == [p.message_id for p in parts]


async def test_split_keeps_an_open_tag_balanced(telegram_api, tg_runtime, request_for):
    text = "<b>" + ("word " * 2000) + "</b>"
    await execute_telegram(request_for("telegram", {"chat_id": 5, "text": text}), tg_runtime)
    assert len(telegram_api.messages) == 3
    assert all(m.text.startswith("<b>") and m.text.endswith("</b>") for m in telegram_api.messages)


async def test_429_then_success_with_the_wait_honoured(telegram_api, tg_runtime, request_for):
    telegram_api.fail_next("retry_after", seconds=2)
    request = request_for("telegram", {"chat_id": 5, "text": "hello"})
    with pytest.raises(RetryableActionError) as caught:
        await execute_telegram(request, tg_runtime)
    assert caught.value.retry_after == 2
    failed_at = time.monotonic()
    # The next attempt comes early (another worker, or a short backoff): the chat is
    # blocked in Redis, so it waits out the rest of retry_after before sending.
    await execute_telegram(request, tg_runtime)
    assert time.monotonic() - failed_at >= 1.8
    assert [m.plain for m in telegram_api.messages] == ["hello"]


async def test_429_mid_split_waits_instead_of_resending(telegram_api, tg_runtime, request_for):
    text = "\n".join(["y" * 100] * 60)  # two parts
    request = request_for("telegram", {"chat_id": 5, "text": text, "parse_mode": "none"})
    original = telegram_api._send_message
    calls = 0

    def second_fails(params):
        nonlocal calls
        calls += 1
        if calls == 2:  # called under the server's lock: queue the failure directly
            telegram_api._failures.append(("retry_after", {"seconds": 1}))
        return original(params)

    telegram_api._send_message = second_fails
    outcome = await execute_telegram(request, tg_runtime)
    assert len(telegram_api.messages) == 2
    assert outcome.response_data["parts"] == 2


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("blocked", "(?i)403.*bot was blocked by the user"),
        ("parse", "(?i)400.*can't parse entities"),
    ],
)
async def test_permanent_failures_keep_the_reason(
    kind, reason, telegram_api, tg_runtime, request_for
):
    telegram_api.fail_next(kind)
    with pytest.raises(PermanentActionError, match=reason) as caught:
        await execute_telegram(request_for("telegram", {"chat_id": 5, "text": "x"}), tg_runtime)
    assert BOT_TOKEN not in str(caught.value)


async def test_badly_escaped_text_is_a_permanent_parse_failure(
    telegram_api, tg_runtime, request_for
):
    spec = {"chat_id": 5, "text": "score 1.5 (low)", "parse_mode": "MarkdownV2"}
    with pytest.raises(PermanentActionError, match=r"(?i)can't parse entities"):
        await execute_telegram(request_for("telegram", spec), tg_runtime)


async def test_migrated_group_is_followed_and_recorded(telegram_api, tg_runtime, request_for):
    telegram_api.fail_next("migrate", to=-1001234567890)
    outcome = await execute_telegram(
        request_for("telegram", {"chat_id": -4242, "text": "hi"}), tg_runtime
    )
    [message] = telegram_api.messages
    assert message.chat_id == -1001234567890
    assert outcome.response_data["migrated_to_chat_id"] == -1001234567890
    assert outcome.response_data["chat_id"] == -1001234567890


async def test_named_bot_and_unknown_bot(telegram_api, tg_runtime, request_for):
    await execute_telegram(
        request_for("telegram", {"chat_id": 5, "text": "x", "bot": "other"}), tg_runtime
    )
    assert telegram_api.requests[-1][0].startswith("654321:")
    with pytest.raises(PermanentActionError, match="no telegram bot named 'nope'"):
        await execute_telegram(
            request_for("telegram", {"chat_id": 5, "text": "x", "bot": "nope"}), tg_runtime
        )


async def test_rejected_token_is_permanent_and_scrubbed(telegram_api, make_runtime, request_for):
    runtime = make_runtime(
        telegram_api_base_url=telegram_api.api_base_url,
        telegram_bots={"default": "999:NOT-a-known-token"},
    )
    with pytest.raises(PermanentActionError) as caught:
        await execute_telegram(request_for("telegram", {"chat_id": 5, "text": "x"}), runtime)
    assert "NOT-a-known-token" not in str(caught.value)


async def test_unreachable_api_is_retryable_and_scrubbed(make_runtime, request_for):
    runtime = make_runtime(telegram_api_base_url="http://127.0.0.1:9")
    with pytest.raises(RetryableActionError) as caught:
        await execute_telegram(request_for("telegram", {"chat_id": 5, "text": "x"}), runtime)
    assert BOT_TOKEN not in str(caught.value)


async def test_disable_preview_is_sent(telegram_api, tg_runtime, request_for):
    spec = {"chat_id": 5, "text": "https://example.com", "disable_preview": True}
    await execute_telegram(request_for("telegram", spec), tg_runtime)
    assert '"is_disabled": true' in telegram_api.messages[0].params["link_preview_options"]


async def test_bot_is_initialised_once_per_runtime(telegram_api, tg_runtime, request_for):
    for _ in range(3):
        await execute_telegram(request_for("telegram", {"chat_id": 5, "text": "x"}), tg_runtime)
        # The per-chat window allows one message a second, and the parts are delivered:
        # not what this test is about.  Forget both.
        tg_runtime._flood = InMemoryFloodLimiter()
        tg_runtime._telegram_parts = InMemoryTelegramParts()
    assert [method for _, method, _ in telegram_api.requests].count("getMe") == 1


async def test_retry_skips_parts_already_delivered(telegram_api, tg_runtime, request_for):
    text = "\n".join(["z" * 100] * 60)  # two parts
    request = request_for("telegram", {"chat_id": 5, "text": text, "parse_mode": "none"})
    original = telegram_api._send_message
    calls = 0

    def second_is_blocked(params):
        nonlocal calls
        calls += 1
        if calls == 2:  # a long 429 on the second part: the job is retried later
            telegram_api._failures.append(("retry_after", {"seconds": 120}))
        return original(params)

    telegram_api._send_message = second_is_blocked
    with pytest.raises(RetryableActionError) as caught:
        await execute_telegram(request, tg_runtime)
    first_id = telegram_api.messages[0].message_id
    assert (caught.value.response_data or {})["message_ids"] == [first_id]

    tg_runtime._flood = InMemoryFloodLimiter()  # forget the 429's block, keep the parts
    outcome = await execute_telegram(request, tg_runtime)
    assert len(telegram_api.messages) == 2  # part 1 was not sent again
    assert outcome.response_data["message_ids"] == [first_id, telegram_api.messages[1].message_id]


async def test_a_repeated_job_does_not_resend(telegram_api, tg_runtime, request_for):
    request = request_for("telegram", {"chat_id": 5, "text": "once"}, action_id=31337)
    first = await execute_telegram(request, tg_runtime)
    again = await execute_telegram(request, tg_runtime)
    assert len(telegram_api.messages) == 1
    assert again.response_data["message_ids"] == first.response_data["message_ids"]

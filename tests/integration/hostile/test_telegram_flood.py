"""A Telegram 429 asking for 999,999,999 s blocks its chat for at most
telegram.max_retry_after_s, says so in the worker's log, and `engine status` shows the chat
on hold (which bot, which chat, until when)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.telegram_api import FakeTelegramAPI
from tests.processes import (
    engine_processes,
    insert_events,
    query_all,
    run_engine,
    wait_until,
    write_config,
)

BOT_TOKEN = "123456:TEST-token-abcdef"
CAP_S = 60
RULES = """
rules:
  - id: tell-the-group
    on: {registry: reputation, event_type: NewFeedback}
    actions:
      - telegram: {chat_id: "-1001234567890", text: "feedback {{ event.score }}"}
"""


@pytest.fixture
def telegram_api() -> Iterator[FakeTelegramAPI]:
    api = FakeTelegramAPI({BOT_TOKEN})
    api.start()
    yield api
    api.stop()


def test_a_huge_retry_after_is_capped_logged_and_shown(
    tmp_path: Path, database_url: str, redis_url: str, telegram_api: FakeTelegramAPI
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    config = write_config(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rules=str(rules),
        extra={
            "telegram": {
                "api_base_url": telegram_api.api_base_url,
                "bots": {"alerts": {"token": BOT_TOKEN}, "default": {"token": BOT_TOKEN}},
                "max_retry_after_s": CAP_S,
            }
        },
    )
    telegram_api.fail_next("retry_after", seconds=999_999_999)
    with engine_processes(config, tmp_path, ["run"], ["worker"]) as (_, worker):
        insert_events(
            database_url, [{"registry": "reputation", "event_type": "NewFeedback", "score": 3}]
        )
        [(status, retry_in_s)] = wait_until(
            lambda: query_all(
                database_url,
                "SELECT status, extract(epoch FROM next_attempt_at - now())::float"
                " FROM action_results WHERE status = 'retrying'",
            ),
            what="the 429 recorded",
        )
        assert status == "retrying" and retry_in_s <= CAP_S
        wait_until(lambda: "telegram retry_after capped" in worker.output(), what="the log line")
    assert not telegram_api.messages

    shown = run_engine(config, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    [chat] = json.loads(shown.stdout)["telegram_blocks"]["chats"]
    assert chat["chat_id"] == "-1001234567890" and chat["bot"] in ("alerts", "default")
    assert 0 < chat["seconds_left"] <= CAP_S
    until = dt.datetime.fromisoformat(chat["until"])
    assert until <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=CAP_S + 1)

    text = run_engine(config, "status")
    assert "telegram chats on hold after a 429 (flood control)" in text.stdout
    assert "-1001234567890" in text.stdout

"""Filters rule templates may use, and the escaping of inserted values per target.

Filters never raise on odd input (a null address, a non-numeric time): they show the value
as it is, so one odd event cannot break an alert.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Any, Final

from rules.fields import as_json_number

#: Block explorers of the chains ERC-8004 registries are deployed on (and their testnets).
EXPLORERS: Final[dict[int, str]] = {
    1: "https://etherscan.io",
    11155111: "https://sepolia.etherscan.io",
    8453: "https://basescan.org",
    84532: "https://sepolia.basescan.org",
    137: "https://polygonscan.com",
    80002: "https://amoy.polygonscan.com",
    10: "https://optimistic.etherscan.io",
    11155420: "https://sepolia-optimism.etherscan.io",
    42161: "https://arbiscan.io",
    421614: "https://sepolia.arbiscan.io",
    56: "https://bscscan.com",
    43114: "https://snowtrace.io",
    59144: "https://lineascan.build",
}

_MARKDOWN_V2_SPECIAL: Final = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")
_HEX: Final = re.compile(r"^0x[0-9a-fA-F]+$")


def short_address(value: Any) -> str:
    """``0x1234…abcd`` for an address or hash; anything else unchanged (as text)."""
    text = "" if value is None else str(value)
    if _HEX.match(text) and len(text) > 12:
        return f"{text[:6]}…{text[-4:]}"
    return text


def explorer_url(chain_id: Any) -> str:
    """The block explorer's base URL for ``chain_id``, or "" for an unknown chain."""
    return EXPLORERS.get(chain_id, "") if type(chain_id) is int else ""


def explorer_link(value: Any, chain_id: Any) -> str:
    """The explorer page of an address (20 bytes), transaction (32 bytes) or block number.

    Unknown chains give the value unchanged, so a message still shows it.
    """
    base = explorer_url(chain_id)
    text = "" if value is None else str(value)
    if not base:
        return text
    if type(value) is int:
        return f"{base}/block/{value}"
    if _HEX.match(text):
        kind = "tx" if len(text) == 66 else "address"
        return f"{base}/{kind}/{text}"
    return text


def format_datetime(value: Any, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    """Unix seconds as a UTC date and time (``2026-11-25 10:00:00 UTC``)."""
    seconds = as_json_number(value)
    if seconds is None:
        return "" if value is None else str(value)
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).strftime(str(fmt))
    except (OverflowError, OSError, ValueError):
        return str(value)


FILTERS: Final = {
    "short_address": short_address,
    "explorer_link": explorer_link,
    "explorer_url": explorer_url,
    "datetime": format_datetime,
}


def escape_html(value: Any) -> str:
    """Escape an inserted value for Telegram's HTML parse mode (``<``, ``>``, ``&``)."""
    return html.escape(_text(value), quote=False)


def escape_markdown_v2(value: Any) -> str:
    """Escape an inserted value for Telegram's MarkdownV2 (each special character)."""
    return _MARKDOWN_V2_SPECIAL.sub(r"\\\1", _text(value))


def unescaped_text(value: Any) -> str:
    """An inserted value as text, unescaped."""
    return _text(value)


def _text(value: Any) -> str:
    # str() of a StrictUndefined raises UndefinedError: that is how a missing name surfaces.
    return str(value)

"""Splitting long Telegram texts into messages without breaking their markup.

Policy (docs/decisions-actions.md): a text over Telegram's 4,096-character limit is split
into several messages, never rejected.  Splits fall after a newline where possible, else
after a space, else anywhere that is safe; never inside an HTML tag or ``&entity;``,
a MarkdownV2 escape (``\\x``), a link or the language line of a code block.  Formatting
open at a split is closed at the end of the part and reopened at the start of the next,
so every part parses on its own (``<b>…</b>`` | ``<b>…</b>``).  Lengths are counted in
UTF-16 code units, as Telegram counts them, on the *source* text (at least the parsed
length, so a part never exceeds the limit).  Beyond ``MAX_PARTS`` messages the last part
is cut with a visible marker saying how much was left out.

Pure functions, no I/O.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass

from telegram.helpers import escape_markdown

TELEGRAM_MAX_CHARS = 4096
MAX_PARTS = 10
_HTML_TAG_NAME = re.compile(r"</?\s*([A-Za-z][A-Za-z0-9-]*)")
_HTML_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9A-Fa-f]{1,6}|[A-Za-z]{1,10});")


@dataclass(frozen=True)
class Opener:
    """An open formatting entity: how to reopen it and how to close it."""

    name: str
    open_text: str
    close_text: str


Stack = tuple[Opener, ...]


@dataclass
class _Scan:
    """Where a split may fall (``safe[i]``: before index i) and what is open there."""

    safe: list[bool]
    stacks: list[Stack]


def _u16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _pop(stack: Stack, name: str) -> Stack:
    """Close ``name`` (and anything opened after it, which malformed markup left open)."""
    for index in range(len(stack) - 1, -1, -1):
        if stack[index].name == name:
            return stack[:index]
    return stack


def _toggle(stack: Stack, name: str, marker: str) -> Stack:
    if any(opener.name == name for opener in stack):
        return _pop(stack, name)
    return (*stack, Opener(name, marker, marker))


def _scan_plain(text: str) -> _Scan:
    n = len(text)
    return _Scan([True] * (n + 1), [()] * (n + 1))


def _scan_html_step(text: str, i: int, stack: Stack) -> tuple[int, Stack]:
    """One HTML token from ``i``: a tag (opens or closes), an entity, or a character."""
    if text[i] == "<" and (close := text.find(">", i)) != -1:
        tag = text[i : close + 1]
        name_match = _HTML_TAG_NAME.match(tag)
        if name_match is not None:
            name = name_match.group(1).lower()
            if tag.startswith("</"):
                stack = _pop(stack, name)
            else:
                stack = (*stack, Opener(name, tag, f"</{name}>"))
        return close + 1, stack
    if text[i] == "&" and (entity := _HTML_ENTITY.match(text, i)) is not None:
        return entity.end(), stack
    return i + 1, stack


def _link_end(text: str, start: int) -> int:
    """The index after a MarkdownV2 ``[text](url)`` starting at ``start``, or -1."""
    i = start
    depth = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                break
        i += 1
    if not text.startswith("](", i):
        return -1
    i += 2
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == ")":
            return i + 1
        i += 1
    return -1


def _scan_code(text: str, i: int, stack: Stack) -> tuple[int, Stack]:
    """One step inside `code` or ```pre```, where only ` and \\ are special."""
    top = stack[-1].name
    if text[i] == "\\":
        return i + 2, stack
    if top == "pre" and text.startswith("```", i):
        return i + 3, stack[:-1]
    if top == "code" and text[i] == "`":
        return i + 1, stack[:-1]
    return i + 1, stack


def _scan_markdown_step(text: str, i: int, stack: Stack) -> tuple[int, Stack]:
    """One token of MarkdownV2 outside code: returns the next index and the new stack."""
    if stack and stack[-1].name in ("code", "pre"):
        return _scan_code(text, i, stack)
    char = text[i]
    if char == "\\":
        return i + 2, stack
    if text.startswith("```", i):
        # Keep the language line with its fence, so a reopened block keeps its language.
        line_end = text.find("\n", i + 3)
        end = len(text) if line_end == -1 else line_end + 1
        return end, (*stack, Opener("pre", text[i:end], "```"))
    if char == "`":
        return i + 1, (*stack, Opener("code", "`", "`"))
    for marker, name in (("||", "spoiler"), ("__", "underline")):
        if text.startswith(marker, i):
            return i + 2, _toggle(stack, name, marker)
    if char in "*_~":
        return i + 1, _toggle(stack, {"*": "bold", "_": "italic", "~": "strike"}[char], char)
    link_start = text.startswith("![", i) or char == "["
    if link_start and (end := _link_end(text, i + (char == "!"))) != -1:
        return end, stack  # a link is atomic: never split inside text or URL
    return i + 1, stack


def _scan_tokens(text: str, step: Callable[[str, int, Stack], tuple[int, Stack]]) -> _Scan:
    """Where a split may fall (token boundaries) and what is open there."""
    n = len(text)
    scan = _Scan([False] * (n + 1), [()] * (n + 1))
    stack: Stack = ()
    i = 0
    while i < n:
        scan.safe[i], scan.stacks[i] = True, stack
        i, stack = step(text, i, stack)
    scan.safe[n], scan.stacks[n] = True, stack
    return scan


def _scan(text: str, parse_mode: str | None) -> _Scan:
    if parse_mode == "HTML":
        return _scan_tokens(text, _scan_html_step)
    if parse_mode == "MarkdownV2":
        return _scan_tokens(text, _scan_markdown_step)
    return _scan_plain(text)


def _opening(stack: Stack) -> str:
    return "".join(opener.open_text for opener in stack)


def _closing(stack: Stack) -> str:
    return "".join(opener.close_text for opener in reversed(stack))


class _Splitter:
    """Greedy splitting over one scanned text."""

    def __init__(self, text: str, parse_mode: str | None, limit: int) -> None:
        self.text = text
        self.limit = limit
        self.scan = _scan(text, parse_mode)
        self.cum = [0]
        for char in text:
            self.cum.append(self.cum[-1] + (2 if ord(char) > 0xFFFF else 1))

    def fits(self, start: int, prefix_len: int, end: int, extra: int) -> bool:
        closing = _u16(_closing(self.scan.stacks[end]))
        return prefix_len + self.cum[end] - self.cum[start] + closing + extra <= self.limit

    def best_end(self, start: int, prefix_len: int, extra: int) -> int:
        """The furthest good split point after ``start`` that keeps the part in the limit."""
        budget = self.limit - prefix_len - extra
        hi = bisect.bisect_right(self.cum, self.cum[start] + budget) - 1
        hi = min(max(hi, start + 1), len(self.text))
        floor = start + (hi - start) // 4  # prefer a hard cut to a tiny part
        for wanted in ("\n", " ", None):
            for end in range(hi, max(start, floor), -1):
                if not self.scan.safe[end] or not self.fits(start, prefix_len, end, extra):
                    continue
                if wanted is None or self.text[end - 1] == wanted:
                    return end
        return hi  # no safe point at all (e.g. one enormous link): cut where it fits

    def part(self, start: int, end: int) -> str:
        return (
            _opening(self.scan.stacks[start])
            + self.text[start:end]
            + _closing(self.scan.stacks[end])
        )


def cut_marker(omitted: int, parse_mode: str | None) -> str:
    """The visible note ending a text cut after ``MAX_PARTS`` messages."""
    note = f"[… cut: {omitted} more characters]"
    if parse_mode == "MarkdownV2":
        note = escape_markdown(note, version=2)
    return "\n" + note


def split_message(
    text: str,
    parse_mode: str | None,
    *,
    limit: int = TELEGRAM_MAX_CHARS,
    max_parts: int = MAX_PARTS,
) -> list[str]:
    """Split ``text`` into at most ``max_parts`` messages of at most ``limit`` UTF-16 units."""
    splitter = _Splitter(text, parse_mode, limit)
    parts: list[str] = []
    start = 0
    while True:
        prefix_len = _u16(_opening(splitter.scan.stacks[start]))
        if prefix_len + splitter.cum[-1] - splitter.cum[start] <= limit:
            parts.append(splitter.part(start, len(text)))
            return parts
        if len(parts) == max_parts - 1:
            # Reserve room for the marker (its digits are at most len(text)'s).
            extra = _u16(cut_marker(len(text), parse_mode))
            end = splitter.best_end(start, prefix_len, extra)
            marker = cut_marker(len(text) - end, parse_mode)
            parts.append(splitter.part(start, end) + marker)
            return parts
        end = splitter.best_end(start, prefix_len, 0)
        parts.append(splitter.part(start, end))
        start = end

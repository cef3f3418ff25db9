"""Splitting long texts: every part fits, parses on its own, and nothing is lost.

The oracle is the fake Bot API's own HTML/MarkdownV2 parser (tests/fakes/telegram_api.py).
"""

from __future__ import annotations

import html

from hypothesis import given, settings
from hypothesis import strategies as st
from telegram.helpers import escape_markdown

from actions.telegram_text import MAX_PARTS, split_message
from tests.fakes.telegram_api import parse_html, parse_markdown_v2

WORDS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), include_characters="\n"),
    min_size=1,
    max_size=30,
)


def u16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def html_segment(kind: str, value: str) -> str:
    escaped = html.escape(value, quote=False)
    if kind == "plain":
        return escaped
    if kind == "a":
        return f'<a href="https://example.com/?q=1&amp;r=2">{escaped}</a>'
    if kind == "nested":
        return f"<b>x <i>{escaped}</i> y</b>"
    return f"<{kind}>{escaped}</{kind}>"


def md_segment(kind: str, value: str) -> str:
    if kind == "code":
        return "`" + escape_markdown(value, version=2, entity_type="code") + "`"
    if kind == "pre":
        return "```python\n" + escape_markdown(value, version=2, entity_type="pre") + "```"
    if kind == "link":  # shorten before escaping: a cut escape would break the markup
        return f"[{escape_markdown(value[:15], version=2)}](https://example.com/a\\)b)"
    escaped = escape_markdown(value, version=2)
    if kind == "plain":
        return escaped
    marker = {"bold": "*", "italic": "_", "under": "__", "strike": "~", "spoiler": "||"}[kind]
    return f"{marker}{escaped}{marker}"


HTML_TEXTS = st.lists(
    st.tuples(st.sampled_from(["plain", "b", "i", "code", "pre", "a", "nested"]), WORDS),
    min_size=1,
    max_size=60,
).map(lambda segs: " ".join(html_segment(kind, value) for kind, value in segs))

MD_TEXTS = st.lists(
    st.tuples(
        st.sampled_from(
            ["plain", "bold", "italic", "under", "strike", "spoiler", "code", "pre", "link"]
        ),
        WORDS,
    ),
    min_size=1,
    max_size=60,
).map(lambda segs: " ".join(md_segment(kind, value) for kind, value in segs))


def check(text: str, mode: str | None, parse, limit: int) -> None:
    parts = split_message(text, mode, limit=limit, max_parts=1000)
    assert all(u16(part) <= limit for part in parts)
    assert "".join(parse(part) for part in parts) == parse(text)


@settings(max_examples=150, deadline=None)
@given(text=HTML_TEXTS, limit=st.integers(min_value=120, max_value=400))
def test_html_parts_parse_and_keep_the_text(text, limit):
    check(text, "HTML", parse_html, limit)


@settings(max_examples=150, deadline=None)
@given(text=MD_TEXTS, limit=st.integers(min_value=120, max_value=400))
def test_markdown_parts_parse_and_keep_the_text(text, limit):
    check(text, "MarkdownV2", parse_markdown_v2, limit)


@settings(max_examples=100, deadline=None)
@given(text=st.lists(WORDS, max_size=80).map(" ".join), limit=st.integers(10, 200))
def test_plain_parts_concatenate_to_the_text(text, limit):
    check(text, None, lambda value: value, limit)


def test_short_text_is_one_part():
    assert split_message("<b>hi</b>", "HTML") == ["<b>hi</b>"]


def test_splits_after_newlines_when_it_can():
    text = "\n".join(f"line {n:04d}" for n in range(2000))
    parts = split_message(text, None)
    assert len(parts) > 1
    assert all(part.endswith("\n") for part in parts[:-1])
    assert all(u16(part) <= 4096 for part in parts)


def test_astral_characters_count_twice():
    text = "😀" * 3000  # 6,000 UTF-16 units
    parts = split_message(text, None)
    assert [u16(part) for part in parts] == [4096, 6000 - 4096]


def test_never_splits_an_escape_or_entity():
    md = split_message("\\." * 100, "MarkdownV2", limit=51)
    assert all(not part.endswith("\\") for part in md)
    ent = split_message("&amp;" * 50, "HTML", limit=52)
    assert all(part.endswith(";") for part in ent)


def test_pre_language_is_kept_when_reopened():
    text = "```python\n" + "x = 1\n" * 300 + "```"
    parts = split_message(text, "MarkdownV2", limit=500)
    assert all(part.startswith("```python\n") and part.endswith("```") for part in parts)


def test_beyond_max_parts_the_text_is_cut_visibly():
    text = "word " * 20000  # 100,000 characters
    parts = split_message(text, "MarkdownV2")
    assert len(parts) == MAX_PARTS
    assert u16(parts[-1]) <= 4096
    plain = parse_markdown_v2(parts[-1])
    assert "cut:" in plain
    assert plain.rstrip().endswith("more characters]")

"""Telegram text rendering: escaping and splitting below the limits."""

from __future__ import annotations

import pytest

from platforms.telegram.render import CAPTION_LIMIT, MESSAGE_LIMIT, as_html, split_text, utf16_len


def test_everything_is_escaped_as_text() -> None:
    assert as_html('a<b & "c">') == 'a&lt;b &amp; "c"&gt;'


def test_short_text_is_one_piece() -> None:
    assert split_text("你好") == ["你好"]
    assert split_text("") == [""]


@pytest.mark.parametrize(
    "text",
    [
        "第一行\n" + "甲" * 5000 + "\n" + "word " * 2000,
        "😀" * 3000,  # two UTF-16 units each
        "x" * 10_000,
        ("一行字\n" * 3000),
    ],
)
def test_pieces_fit_and_lose_nothing(text: str) -> None:
    pieces = split_text(text)
    assert all(0 < utf16_len(p) <= MESSAGE_LIMIT for p in pieces)
    assert "".join(pieces).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")


def test_cuts_at_a_line_break_when_there_is_one() -> None:
    text = ("一行字" * 10 + "\n") * 300
    for piece in split_text(text)[:-1]:
        assert piece.endswith("一行字")  # whole lines


def test_no_stub_piece_from_an_early_line_break() -> None:
    pieces = split_text("标题\n" + "甲" * 5000)
    assert utf16_len(pieces[0]) == MESSAGE_LIMIT


def test_caption_limit() -> None:
    assert all(utf16_len(p) <= CAPTION_LIMIT for p in split_text("字" * 3000, CAPTION_LIMIT))

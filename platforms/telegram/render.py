"""Turning a reply's plain text into Telegram messages: HTML-escaped, and split where it is too long.

Telegram counts a message's length after entities are parsed, in UTF-16 code units, up to 4096; a
photo caption up to 1024. Text is split at the last line break in the second half of what fits, else
the last space there, else exactly at the limit, and each piece is escaped on its own so no entity
is cut in two.
"""

from __future__ import annotations

import html

from platforms.limits import split_fitting

MESSAGE_LIMIT = 4096
CAPTION_LIMIT = 1024


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _cut(text: str, limit: int) -> int:
    """The largest prefix length (in characters) whose UTF-16 length fits ``limit``."""
    if utf16_len(text) <= limit:
        return len(text)
    n = 0
    used = 0
    for ch in text:
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > limit:
            break
        n += 1
    return n


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Pieces of ``text`` of at most ``limit`` UTF-16 units, cut at line breaks or spaces if possible."""
    return split_fitting(text, limit, _cut)


def as_html(text: str) -> str:
    """Plain text as Telegram HTML: nothing in a reply is markup."""
    return html.escape(text, quote=False)

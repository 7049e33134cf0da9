"""Texts for WeChat and WeCom: both take a text message of up to 2048 bytes (UTF-8) and refuse (or cut)
a longer one. Text is cut at the last line break in the second half of what fits, else the last
space, else at the limit (never inside a character)."""

from __future__ import annotations

from dialogs.i18n import Catalogs
from dialogs.models import Button
from platforms.limits import split_fitting

TEXT_LIMIT = 2000
"""Bytes, below WeChat's 2048 with room for what a client adds."""


def _fit(text: str, limit: int) -> int:
    """The most characters of ``text`` whose UTF-8 fits ``limit`` bytes."""
    used = 0
    for n, ch in enumerate(text):
        used += len(ch.encode())
        if used > limit:
            return n
    return len(text)


def split_bytes(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    return split_fitting(text, limit, _fit)


def language_of(text: str) -> str:
    """``zh`` if the text holds Chinese characters, else ``en``: what the user was answered in (a
    WeChat or WeCom message carries no language of its own)."""
    return "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"


def numbered(catalogs: Catalogs, text: str, choices: tuple[Button, ...]) -> str:
    t = catalogs.get(language_of(text))
    lines = [text, "", t.gettext("Reply with the number of your choice:")]
    lines += [f"{n}. {b.label}" for n, b in enumerate(choices, 1)]
    return "\n".join(lines)

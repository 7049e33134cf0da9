"""Texts for WeChat: cut below its size limit, with choices as numbers or as a menu message.

WeChat takes a text message of up to 2048 bytes (UTF-8); a longer one is refused (passive replies:
cut silently). Text is cut at the last line break in the second half of what fits, else the last
space, else at the limit (never inside a character).
"""

from __future__ import annotations

from typing import Any

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
    WeChat message carries no language of its own)."""
    return "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"


def numbered(catalogs: Catalogs, text: str, choices: tuple[Button, ...]) -> str:
    t = catalogs.get(language_of(text))
    lines = [text, "", t.gettext("Reply with the number of your choice:")]
    lines += [f"{n}. {b.label}" for n, b in enumerate(choices, 1)]
    return "\n".join(lines)


def menu_message(openid: str, text: str, choices: tuple[Button, ...], gen: str) -> dict[str, Any]:
    """A customer-service menu message: clicking an option sends its text back with ``bizmsgmenuid``."""
    return {
        "touser": openid,
        "msgtype": "msgmenu",
        "msgmenu": {
            "head_content": text,
            "list": [{"id": f"{gen}-{n}", "content": b.label} for n, b in enumerate(choices, 1)],
            "tail_content": "",
        },
    }


def text_message(openid: str, text: str) -> dict[str, Any]:
    return {"touser": openid, "msgtype": "text", "text": {"content": text}}


def image_message(openid: str, media_id: str) -> dict[str, Any]:
    return {"touser": openid, "msgtype": "image", "image": {"media_id": media_id}}

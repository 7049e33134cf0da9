"""WeChat's messages: texts (cut below 2048 bytes by ``platforms.tencent.text``), choices as numbers
or as a menu message, pictures."""

from __future__ import annotations

from typing import Any

from dialogs.models import Button
from platforms.tencent.text import TEXT_LIMIT, language_of, numbered, split_bytes

__all__ = [
    "TEXT_LIMIT",
    "image_message",
    "language_of",
    "menu_message",
    "numbered",
    "split_bytes",
    "text_message",
]


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

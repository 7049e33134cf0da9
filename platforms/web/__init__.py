"""Yibao's own pages, opened from the chat (issue 15).

The paths are fixed here, so the chat platforms (which link to the pages) and the pages (which serve
them) agree without importing each other. Every path is under ``PREFIX`` on the [http] server, and
``[web] public_url`` is what users reach that server at.
"""

from __future__ import annotations

PREFIX = "/web"
LINK = f"{PREFIX}/l/{{token}}"
"""A single-use link token from ``/web`` in the chat, exchanged at once for a session cookie."""
TELEGRAM_ENTRY = f"{PREFIX}/tg"
"""The Telegram Mini App's entry: the only page with a script (Telegram's), which hands over ``initData``."""
WECHAT_ENTRY = f"{PREFIX}/wx"
"""The WeChat Official Account's menu entry: OAuth2 ``snsapi_base`` (``code`` → ``openid``)."""
WECOM_ENTRY = f"{PREFIX}/wecom"
"""The WeCom app's menu entry: WeCom's OAuth (``code`` → ``userid``)."""
ACCOUNT = f"{PREFIX}/account"
BIND = f"{PREFIX}/bind"
ALERT = f"{PREFIX}/alert"
UNBIND = f"{PREFIX}/unbind"


def url(public_url: str, path: str) -> str:
    """``path`` on the server users reach at ``public_url``."""
    return public_url.rstrip("/") + path


TELEGRAM_SESSION = f"{PREFIX}/tg/session"
"""Where the Mini App's entry posts ``initData``, for a session cookie."""
STATIC = f"{PREFIX}/static"

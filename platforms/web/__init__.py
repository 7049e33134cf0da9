"""Yibao's own pages, opened from the chat (issue 15).

The paths are fixed here, so the chat platforms (which link to the pages) and the pages (which serve
them) agree without importing each other. Every path is under ``PREFIX`` on the [http] server, and
``[web] public_url`` is what users reach that server at.

- ``pages.py``: the routes (Starlette) and their templates (Jinja2, autoescaped), over the same
  ``handle`` as the chats; the security headers, CSRF, the error pages;
- ``telegram.py``: the Mini App's ``initData`` check; ``oauth.py``: the port WeChat's and WeCom's
  OAuth clients implement; ``state.py``: the port of what the pages keep (link tokens, sessions,
  rate limits; in Redis in ``bot.storage.web``); ``links.py``: ``/web``'s links;
- ``charts.py``: ``/chart`` as an inline SVG and a table; ``templates/``, ``static/``.

Like every platform, it imports ``dialogs`` and its own libraries (Starlette, Jinja2), never
``bot``, Redis or ``insurance`` (``[tool.importlinter]``).
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

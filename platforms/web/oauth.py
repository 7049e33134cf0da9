"""Who opened a page from WeChat or WeCom: the port the pages take an identity through.

WeChat (``platforms.wechat.oauth``, ``snsapi_base``) and WeCom (``platforms.wecom.oauth``) both
work the same way, without asking the user anything: the menu entry opens ``authorize_url``, the
platform redirects (302) to ``redirect_uri?code=CODE&state=STATE``, and the page trades the code,
server to server, for the user key their chat uses. A code is good once, for 5 minutes.

The page makes ``state`` (random, tied to the browser, checked when the redirect comes back, so a
code cannot be planted from another site) and never logs or shows the code.
"""

from __future__ import annotations

from typing import Protocol

from dialogs.models import UserKey


class OAuthIdentity(Protocol):
    def authorize_url(self, redirect_uri: str, state: str) -> str:
        """Where to send the browser: the platform's authorize page, which comes back to
        ``redirect_uri`` (an https page on the domain registered with the platform) with
        ``code`` and ``state``."""
        ...

    async def user_for(self, code: str) -> UserKey | None:
        """The user key (the same as their chat's) the code stands for. None: the code was
        refused (unknown, used or expired) or the person is not a user here (a WeCom visitor
        who is not a member of the company). Raises ``platforms.tencent.api.ApiUnavailable``
        when the platform does not answer (the page says "try again")."""
        ...

"""WeChat's web-page authorization (网页授权), ``snsapi_base``: who opened a page from the official
account's menu, as the same ``wx:<openid>`` their chat uses (``platforms.web.oauth.OAuthIdentity``).

1. ``authorize_url``: ``{oauth_base_url}/connect/oauth2/authorize?appid=…&redirect_uri=…&
   response_type=code&scope=snsapi_base&state=…#wechat_redirect`` (the parameters in WeChat's order;
   the redirect's domain must be the account's 网页授权域名). ``snsapi_base`` is silent: no consent
   screen, only the openid, for any WeChat user (following the account or not).
2. WeChat redirects to ``redirect_uri?code=CODE&state=STATE``; ``user_for`` trades the code at
   ``GET {api_base_url}/sns/oauth2/access_token?appid&secret&code&grant_type=authorization_code``
   for the ``openid``. A code is good once, for 5 minutes: ``40029`` (invalid code), ``40163``
   (code been used) and any other refusal give None, with a log line that names the errcode and
   never the code. The page access_token that comes with it is not kept: Yibao needs only who it is.

A "snapshot page" visitor (``is_snapshotuser``: a page opened from Moments before authorizing,
with a virtual openid of no real user) is no one: None.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

from dialogs.models import UserKey
from platforms.tencent.api import errcode
from platforms.wechat.api import WechatApi
from platforms.wechat.core import user_key

log = logging.getLogger(__name__)

OAUTH_BASE_URL = "https://open.weixin.qq.com"
INVALID_CODE = 40029
CODE_USED = 40163
_OPENID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KNOWN = {INVALID_CODE: "invalid code", CODE_USED: "code been used"}


def authorize_url(base_url: str, appid: str, redirect_uri: str, state: str, *, extra: str = "") -> str:
    """WeChat's authorize link (shared with WeCom, which adds ``&agentid=``: ``extra``)."""
    return (
        f"{base_url.rstrip('/')}/connect/oauth2/authorize?appid={quote(appid, safe='')}"
        f"&redirect_uri={quote(redirect_uri, safe='')}&response_type=code&scope=snsapi_base"
        f"&state={quote(state, safe='')}{extra}#wechat_redirect"
    )


class WechatOAuth:
    """``OAuthIdentity`` for the official account of ``api`` (its app id and secret, its HTTP client
    and ``wechat.api_base_url``)."""

    def __init__(self, api: WechatApi, *, oauth_base_url: str = OAUTH_BASE_URL) -> None:
        self.api = api
        self.oauth_base_url = oauth_base_url

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        return authorize_url(self.oauth_base_url, self.api.app_id, redirect_uri, state)

    async def user_for(self, code: str) -> UserKey | None:
        if not code or len(code) > 512:
            log.info("a WeChat page came back without a usable code")
            return None
        data = await self.api.oauth_access_token(code)
        refused = errcode(data)
        if refused:
            log.info("WeChat refused a page's code (%s %s)", refused, _KNOWN.get(refused, "refused"))
            return None
        openid = str(data.get("openid") or "")
        if data.get("is_snapshotuser") == 1:
            log.info("a WeChat snapshot-page visitor (a virtual openid) was not taken as a user")
            return None
        if not _OPENID.fullmatch(openid):
            log.warning("WeChat answered a page's code without an openid")
            return None
        return user_key(openid)

"""WeCom's web-page authorization (网页授权登录, 获取访问用户身份): who opened a page from the app's
menu, as the same ``wecom:<corp id>:<userid>`` their chat uses (``platforms.web.oauth.OAuthIdentity``).

1. ``authorize_url``: ``{oauth_base_url}/connect/oauth2/authorize?appid=CORPID&redirect_uri=…&
   response_type=code&scope=snsapi_base&state=…&agentid=AGENTID#wechat_redirect`` (the redirect's
   domain must be the app's 可信域名, else WeCom answers the exchange with ``50001``).
2. WeCom redirects to ``redirect_uri?code=CODE&state=STATE``; ``user_for`` trades the code at
   ``GET {api_base_url}/cgi-bin/auth/getuserinfo?access_token=…&code=…`` with the app's shared
   access_token (``platforms.tencent.api``: a refused token is replaced and the call made once more).
   A member (in the app's visible range or not) comes back as ``userid``; someone outside the company
   as ``openid`` (and ``external_userid`` for a customer) without one: not a Yibao user here, None.
   A code is good once, for 5 minutes: ``40029`` (invalid code) and any other refusal give None,
   logged by errcode, never with the code.
"""

from __future__ import annotations

import logging
import re

from dialogs.models import UserKey
from platforms.tencent.api import ApiRefusal
from platforms.wechat.oauth import OAUTH_BASE_URL, authorize_url
from platforms.wecom.api import WecomApi
from platforms.wecom.core import user_key

log = logging.getLogger(__name__)

INVALID_CODE = 40029
UNTRUSTED_DOMAIN = 50001
_USERID = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class WecomOAuth:
    """``OAuthIdentity`` for the WeCom app of ``api`` (its corp id, agent id and access_token)."""

    def __init__(self, api: WecomApi, *, oauth_base_url: str = OAUTH_BASE_URL) -> None:
        self.api = api
        self.oauth_base_url = oauth_base_url

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        return authorize_url(
            self.oauth_base_url,
            self.api.corp_id,
            redirect_uri,
            state,
            extra=f"&agentid={self.api.agent_id}",
        )

    async def user_for(self, code: str) -> UserKey | None:
        if not code or len(code) > 512:
            log.info("a WeCom page came back without a usable code")
            return None
        try:
            data = await self.api.call("/cgi-bin/auth/getuserinfo", None, query={"code": code}, method="GET")
        except ApiRefusal as e:
            if e.errcode == UNTRUSTED_DOMAIN:
                log.error("WeCom refused a page's code (50001): is the page's domain the app's 可信域名?")
            else:
                log.info("WeCom refused a page's code (%s)", e.errcode)
            return None
        userid = str(data.get("userid") or data.get("UserId") or "")
        if not userid:
            log.info("a page was opened in WeCom by someone outside the company: not a member")
            return None
        if not _USERID.fullmatch(userid):
            log.warning("WeCom answered a page's code with a userid Yibao does not take")
            return None
        return user_key(self.api.corp_id, userid)

"""The WeChat Official Account API calls Yibao makes (``platforms.tencent.api`` keeps the token and
the call rules common to WeChat and WeCom).

- **access_token** from ``/cgi-bin/stable_token`` (a fetch never voids the token other instances still
  use) or the older ``/cgi-bin/token``; ``40001`` (invalid), ``42001`` (expired) and ``40014`` (not a
  token) mean it is gone early: it is replaced and the call made once more.
- ``OutOfWindow`` for ``45015``/``45047`` (the customer-service window is closed or full),
  ``NotSubscribed`` for ``43101`` (no accepted subscription message); other refusals ``WechatError``.
"""

from __future__ import annotations

from typing import Any

from platforms.tencent.api import (
    BUSY,
    ApiRefusal,
    ApiUnavailable,
    CachedToken,
    TokenApi,
    TokenStore,
    errcode,
)

TOKEN_ERRORS = frozenset({40001, 42001, 40014})
OUT_OF_WINDOW = frozenset({45015, 45047})
NOT_SUBSCRIBED = frozenset({43101})

WechatError = ApiRefusal
WechatUnavailable = ApiUnavailable

__all__ = [
    "CachedToken",
    "NotSubscribed",
    "OutOfWindow",
    "TokenStore",
    "WechatApi",
    "WechatError",
    "WechatUnavailable",
]


class OutOfWindow(ApiRefusal):
    """45015 (more than 48 hours since the user's last message) or 45047 (over the message count)."""


class NotSubscribed(ApiRefusal):
    """43101: the user has not accepted (or has used up) the subscription message."""


class WechatApi(TokenApi):
    platform = "WeChat"
    token_errors = TOKEN_ERRORS

    def __init__(
        self,
        *,
        app_id: str,
        app_secret: str,
        base_url: str,
        tokens: TokenStore,
        stable_token: bool = True,
        **options: Any,
    ) -> None:
        """``options``: ``TokenApi``'s (``send_rate``, ``timeout``, ``busy_retries``, ``clock``)."""
        super().__init__(base_url=base_url, tokens=tokens, **options)
        self.app_id = app_id
        self._secret = app_secret
        self.stable_token = stable_token
        self.metrics_platform = "wx"

    def refusal(self, code: int, message: str) -> ApiRefusal:
        if code in OUT_OF_WINDOW:
            return OutOfWindow(code, message)
        if code in NOT_SUBSCRIBED:
            return NotSubscribed(code, message)
        return ApiRefusal(code, message)

    async def fetch_token(self, *, force: bool = False) -> CachedToken:
        if self.stable_token:
            body = {
                "grant_type": "client_credential",
                "appid": self.app_id,
                "secret": self._secret,
                "force_refresh": force,
            }
            return self._token_from(await self.request("POST", "/cgi-bin/stable_token", json=body))
        params = {"grant_type": "client_credential", "appid": self.app_id, "secret": self._secret}
        return self._token_from(await self.request("GET", "/cgi-bin/token", params=params))

    async def send_custom(self, message: dict[str, Any]) -> None:
        """``message/custom/send``: a text, menu or image message inside the user's window."""
        await self.spacing.wait()
        await self.counted("/cgi-bin/message/custom/send", message)

    async def send_subscription(
        self, openid: str, template_id: str, data: dict[str, str], *, lang: str = "zh_CN"
    ) -> None:
        """``message/subscribe/bizsend``: a subscription message the user accepted."""
        await self.spacing.wait()
        payload = {
            "touser": openid,
            "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()},
            "lang": lang,
        }
        await self.counted("/cgi-bin/message/subscribe/bizsend", payload)

    async def oauth_access_token(self, code: str) -> dict[str, Any]:
        """``sns/oauth2/access_token``: a web-page authorization code traded for its page token and
        ``openid`` (``platforms.wechat.oauth``). The answer as it is, a refusal's ``errcode``
        included (the code's own errors are the caller's to read); ``-1`` raises
        ``ApiUnavailable``. Made once: a code is good for one exchange."""
        params = {
            "appid": self.app_id,
            "secret": self._secret,
            "code": code,
            "grant_type": "authorization_code",
        }
        data = await self.request("GET", "/sns/oauth2/access_token", params=params)
        if not isinstance(data, dict):
            raise ApiUnavailable("not a JSON object")
        if errcode(data) == BUSY:
            raise ApiUnavailable("WeChat busy (-1)")
        return data

    async def create_menu(self, menu: dict[str, Any]) -> None:
        await self.call("/cgi-bin/menu/create", menu)

    async def add_conditional_menu(self, menu: dict[str, Any]) -> str:
        data = await self.call("/cgi-bin/menu/addconditional", menu)
        return str(data.get("menuid", ""))

"""The WeCom API calls Yibao makes, as one self-built app (``agent_id``); ``platforms.tencent.api`` keeps
the token and the call rules common with WeChat.

- **access_token** from ``/cgi-bin/gettoken`` (``corpid``, the app's ``corpsecret``); ``40014`` (not
  a token) and ``42001`` (expired) replace it and the call is made once more.
- ``message/send`` answers ``invaliduser`` for members the app cannot reach (outside its visible
  range, or gone): ``Unreachable`` names them; ``81013`` (no valid receiver at all) likewise.
- ``user/get``: ``60111`` (no such member) raises ``NoSuchMember``.
- ``menu/create``: the app's menu (``yibao wecom menu``); ``auth/getuserinfo``: a page's OAuth code
  traded for the member (``platforms.wecom.oauth``).
"""

from __future__ import annotations

from typing import Any

from platforms.tencent.api import ApiRefusal, ApiUnavailable, CachedToken, TokenApi, TokenStore

TOKEN_ERRORS = frozenset({40014, 42001})
NO_RECEIVER = 81013
NO_SUCH_MEMBER = frozenset({60111, 60123})

__all__ = [
    "ApiRefusal",
    "ApiUnavailable",
    "CachedToken",
    "NoSuchMember",
    "TokenStore",
    "Unreachable",
    "WecomApi",
]


class Unreachable(ApiRefusal):
    """The member is outside the app's visible range, or no longer in the company."""


class NoSuchMember(ApiRefusal):
    """``user/get``: no member with this userid."""


class WecomApi(TokenApi):
    platform = "WeCom"
    token_errors = TOKEN_ERRORS

    def __init__(
        self,
        *,
        corp_id: str,
        agent_id: int,
        secret: str,
        base_url: str,
        tokens: TokenStore,
        **options: Any,
    ) -> None:
        """``options``: ``TokenApi``'s (``send_rate``, ``timeout``, ``busy_retries``, ``clock``)."""
        super().__init__(base_url=base_url, tokens=tokens, **options)
        self.corp_id = corp_id
        self.agent_id = agent_id
        self._secret = secret
        self.metrics_platform = "wecom"

    def refusal(self, code: int, message: str) -> ApiRefusal:
        if code == NO_RECEIVER:
            return Unreachable(code, message)
        if code in NO_SUCH_MEMBER:
            return NoSuchMember(code, message)
        return ApiRefusal(code, message)

    async def fetch_token(self, *, force: bool = False) -> CachedToken:
        params = {"corpid": self.corp_id, "corpsecret": self._secret}
        return self._token_from(await self.request("GET", "/cgi-bin/gettoken", params=params))

    async def send(self, userid: str, message: dict[str, Any]) -> dict[str, Any]:
        """``message/send`` to one member: ``message`` holds ``msgtype`` and its part. Returns the
        answer (``response_code`` for a template card)."""
        await self.spacing.wait()
        data = await self.counted(
            "/cgi-bin/message/send", {"touser": userid, "agentid": self.agent_id, **message}
        )
        invalid = str(data.get("invaliduser") or "")
        if userid in invalid.split("|"):
            raise Unreachable(NO_RECEIVER, "invaliduser")
        return data

    async def update_card(self, userid: str, response_code: str, replace_name: str) -> None:
        """The clicked card's buttons become one that cannot be clicked, showing ``replace_name``."""
        payload = {
            "userids": [userid],
            "agentid": self.agent_id,
            "response_code": response_code,
            "button": {"replace_name": replace_name},
        }
        await self.call("/cgi-bin/message/update_template_card", payload)

    async def create_menu(self, menu: dict[str, Any]) -> None:
        """``menu/create`` for this app (``agentid``): the menu members see in its chat."""
        await self.call("/cgi-bin/menu/create", menu, query={"agentid": str(self.agent_id)})

    async def member_name(self, userid: str) -> str:
        """The member's name in the company directory (``user/get``)."""
        data = await self.call("/cgi-bin/user/get", None, query={"userid": userid}, method="GET")
        return str(data.get("name") or "")

"""The WeChat Official Account API calls Yibao makes, over httpx, with WeChat's rules kept.

- **access_token**: from ``/cgi-bin/stable_token`` (or the older ``/cgi-bin/token``), kept in a
  ``TokenStore`` (Redis, shared by every instance) until ``REFRESH_BEFORE`` seconds before it
  expires. Then one instance (the one holding the store's lock) fetches the next while the others
  go on with the current; an instance that finds no usable token and no lock waits briefly for the
  one fetching. ``40001`` (invalid), ``42001`` (expired) and ``40014`` (not a token) mean the token
  is gone early: it is dropped, a fresh one fetched (``force_refresh`` only if WeChat hands the same
  one back) and the call made once more.
- ``-1`` (system busy) is retried with backoff, up to ``busy_retries`` times.
- Messages are spaced ``1/send_rate`` apart per instance (``wechat.send_rate``); the alert senders
  share a rate across instances on top of this (``alerts.send_rate``).
- A timeout or a network failure raises ``WechatUnavailable``; WeChat's refusals raise
  ``WechatError`` (``OutOfWindow`` for ``45015``/``45047``, ``NotSubscribed`` for ``43101``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

log = logging.getLogger(__name__)

REFRESH_BEFORE = 300.0
TOKEN_ERRORS = frozenset({40001, 42001, 40014})
BUSY = -1
OUT_OF_WINDOW = frozenset({45015, 45047})
NOT_SUBSCRIBED = frozenset({43101})


class WechatError(Exception):
    def __init__(self, errcode: int, errmsg: str = "") -> None:
        super().__init__(f"{errcode} {errmsg}".strip())
        self.errcode = errcode


class OutOfWindow(WechatError):
    """45015 (more than 48 hours since the user's last message) or 45047 (over the message count)."""


class NotSubscribed(WechatError):
    """43101: the user has not accepted (or has used up) the subscription message."""


class WechatUnavailable(Exception):
    """WeChat did not answer (timeout, network, 5xx): the call may be tried again later."""


@dataclass(frozen=True, slots=True)
class CachedToken:
    value: str
    expires_at: float
    """Unix time."""


class TokenStore(Protocol):
    async def get(self) -> CachedToken | None: ...

    async def put(self, token: CachedToken) -> None: ...

    async def drop(self, value: str) -> None:
        """Forget the token, if it is still ``value`` (another instance may have replaced it)."""
        ...

    async def lock(self, seconds: float) -> bool:
        """Take the right to fetch the next token, for ``seconds``; False if another instance has it."""
        ...

    async def unlock(self) -> None: ...


class _Spacing:
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self.clock = clock
        self.next_at = 0.0

    async def wait(self) -> None:
        now = self.clock()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


def _errcode(data: Any) -> int:
    if isinstance(data, dict):
        code = data.get("errcode", 0)
        if isinstance(code, int):
            return code
    return 0


class WechatApi:
    def __init__(
        self,
        *,
        app_id: str,
        app_secret: str,
        base_url: str,
        tokens: TokenStore,
        stable_token: bool = True,
        send_rate: float = 50.0,
        timeout: float = 5.0,
        busy_retries: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app_id = app_id
        self._secret = app_secret
        self.tokens = tokens
        self.stable_token = stable_token
        self.busy_retries = busy_retries
        self.clock = clock
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)
        self._spacing = _Spacing(send_rate)
        self._fetching: asyncio.Lock = asyncio.Lock()
        self.fetches = 0
        """Tokens this instance fetched from WeChat (for the tests and the log)."""

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the token -----------------------------------------------------------------------------

    async def _fetch(self, *, force: bool = False) -> CachedToken:
        if self.stable_token:
            body = {
                "grant_type": "client_credential",
                "appid": self.app_id,
                "secret": self._secret,
                "force_refresh": force,
            }
            data = await self._request("POST", "/cgi-bin/stable_token", json=body)
        else:
            params = {"grant_type": "client_credential", "appid": self.app_id, "secret": self._secret}
            data = await self._request("GET", "/cgi-bin/token", params=params)
        code = _errcode(data)
        if code:
            raise WechatError(code, str(data.get("errmsg", "")))
        token = CachedToken(str(data["access_token"]), self.clock() + float(data.get("expires_in", 7200)))
        self.fetches += 1
        log.info("WeChat access_token fetched; valid for %.0f s", token.expires_at - self.clock())
        return token

    async def access_token(self, *, not_this: str | None = None) -> str:
        """A token to call with: the shared one while it is fresh, else the next one. ``not_this``:
        a token WeChat just refused, which must not be used again."""
        async with self._fetching:  # one fetch at a time in this process
            for _ in range(50):
                cached = await self.tokens.get()
                now = self.clock()
                usable = cached is not None and cached.expires_at > now and cached.value != not_this
                if usable and cached is not None and cached.expires_at - now > REFRESH_BEFORE:
                    return cached.value
                if await self.tokens.lock(10.0):
                    try:
                        fresh = await self._fetch()
                        if fresh.value == not_this:
                            fresh = await self._fetch(force=True)
                        await self.tokens.put(fresh)
                        return fresh.value
                    finally:
                        await self.tokens.unlock()
                if usable and cached is not None:  # another instance fetches the next; this one still works
                    return cached.value
                await asyncio.sleep(0.1)
            raise WechatUnavailable("no access_token: another instance holds the fetch and none arrived")

    # -- calls ---------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise WechatUnavailable(type(e).__name__) from None
        if response.status_code >= 500:
            raise WechatUnavailable(f"HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise WechatUnavailable("not JSON") from None

    async def call(
        self,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        query: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """One API call with the token, WeChat's token and busy rules applied: ``payload`` as JSON, or
        ``kwargs`` for httpx (``files``); ``query`` beside the token."""
        refused: str | None = None
        busy = 0
        while True:
            token = await self.access_token(not_this=refused)
            params = {**(query or {}), "access_token": token}
            if payload is not None:
                kwargs["content"] = _json_bytes(payload)
                kwargs["headers"] = {"Content-Type": "application/json; charset=utf-8"}
            data = await self._request("POST", path, params=params, **kwargs)
            code = _errcode(data)
            if code == 0:
                return data if isinstance(data, dict) else {}
            if code in TOKEN_ERRORS and refused is None:
                log.warning("WeChat refused the access_token (%s); fetching a new one", code)
                await self.tokens.drop(token)
                refused = token
                continue
            if code == BUSY and busy < self.busy_retries:
                busy += 1
                await asyncio.sleep(0.2 * 2**busy)
                continue
            message = str(data.get("errmsg", ""))
            if code in OUT_OF_WINDOW:
                raise OutOfWindow(code, message)
            if code in NOT_SUBSCRIBED:
                raise NotSubscribed(code, message)
            if code == BUSY:
                raise WechatUnavailable("WeChat busy (-1)")
            raise WechatError(code, message)

    async def send_custom(self, message: dict[str, Any]) -> None:
        """``message/custom/send``: a text, menu or image message inside the user's window."""
        await self._spacing.wait()
        await self.call("/cgi-bin/message/custom/send", message)

    async def send_subscription(
        self, openid: str, template_id: str, data: dict[str, str], *, lang: str = "zh_CN"
    ) -> None:
        """``message/subscribe/bizsend``: a subscription message the user accepted."""
        await self._spacing.wait()
        payload = {
            "touser": openid,
            "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()},
            "lang": lang,
        }
        await self.call("/cgi-bin/message/subscribe/bizsend", payload)

    async def upload_image(self, content: bytes, filename: str) -> str:
        """A temporary image (``media/upload``, kept 3 days by WeChat): its ``media_id``."""
        data = await self.call(
            "/cgi-bin/media/upload",
            None,
            query={"type": "image"},
            files={"media": (filename, content, "image/png")},
        )
        return str(data["media_id"])

    async def create_menu(self, menu: dict[str, Any]) -> None:
        await self.call("/cgi-bin/menu/create", menu)

    async def add_conditional_menu(self, menu: dict[str, Any]) -> str:
        data = await self.call("/cgi-bin/menu/addconditional", menu)
        return str(data.get("menuid", ""))


def _json_bytes(payload: dict[str, Any]) -> bytes:
    # ensure_ascii=False: WeChat shows \uXXXX escapes in some message types as they are.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

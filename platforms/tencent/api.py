"""What WeChat's and WeCom's server APIs share: an access_token kept for every instance, and calls made
with it under the same rules (``platforms.wechat.api`` and ``platforms.wecom.api`` say how each gets
its token and what its calls are).

- The token is kept in a ``TokenStore`` (Redis, shared by every instance) until ``REFRESH_BEFORE``
  seconds before it expires. Then one instance (the one holding the store's lock) fetches the next
  while the others go on with the current; an instance that finds no usable token and no lock waits
  briefly for the one fetching.
- A refusal of the token itself (``token_errors``: it was replaced or expired early) drops it, a fresh
  one is fetched (``force`` only if the platform hands the same one back) and the call is made once
  more.
- ``-1`` (system busy) is retried with backoff, up to ``busy_retries`` times.
- Messages are spaced ``1/send_rate`` apart per instance.
- A timeout or a network failure raises ``ApiUnavailable`` (try again later); a refusal raises
  ``ApiRefusal`` (or the subclass ``refusal`` picks for its code).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from dialogs.ports import NO_METRICS, ChatMetrics

log = logging.getLogger(__name__)

REFRESH_BEFORE = 300.0
BUSY = -1


class ApiRefusal(Exception):
    def __init__(self, errcode: int, errmsg: str = "") -> None:
        super().__init__(f"{errcode} {errmsg}".strip())
        self.errcode = errcode


class ApiUnavailable(Exception):
    """The platform did not answer (timeout, network, 5xx): the call may be tried again later."""


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


class Spacing:
    """Calls at least ``1/rate`` seconds apart, in this process."""

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


def errcode(data: Any) -> int:
    if isinstance(data, dict):
        code = data.get("errcode", 0)
        if isinstance(code, int):
            return code
    return 0


def json_body(payload: dict[str, Any]) -> bytes:
    # ensure_ascii=False: both platforms show \\uXXXX escapes in some message types as they are.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class TokenApi(ABC):
    """A client of one app (an official account, a WeCom app) of one platform."""

    platform = "?"
    token_errors: frozenset[int] = frozenset()

    def __init__(
        self,
        *,
        base_url: str,
        tokens: TokenStore,
        send_rate: float = 50.0,
        timeout: float = 5.0,
        busy_retries: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tokens = tokens
        self.busy_retries = busy_retries
        self.clock = clock
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)
        self.spacing = Spacing(send_rate)
        self._fetching = asyncio.Lock()
        self.fetches = 0
        """Tokens this instance fetched (for the tests and the log)."""
        self.metrics: ChatMetrics = NO_METRICS
        self.metrics_platform = "?"
        """Who counts the sends (``bot.metrics.ChatMeter``), and under which platform label."""

    async def aclose(self) -> None:
        await self._http.aclose()

    @abstractmethod
    async def fetch_token(self, *, force: bool = False) -> CachedToken:
        """A new token from the platform (each platform's own endpoint)."""

    def refusal(self, code: int, message: str) -> ApiRefusal:
        """The exception for a refusal with this code (subclasses name the ones callers act on)."""
        return ApiRefusal(code, message)

    def _token_from(self, data: Any) -> CachedToken:
        code = errcode(data)
        if code:
            raise self.refusal(code, str(data.get("errmsg", "")))
        token = CachedToken(str(data["access_token"]), self.clock() + float(data.get("expires_in", 7200)))
        self.fetches += 1
        log.info("%s access_token fetched; valid for %.0f s", self.platform, token.expires_at - self.clock())
        return token

    async def access_token(self, *, not_this: str | None = None) -> str:
        """A token to call with: the shared one while it is fresh, else the next one. ``not_this``:
        a token the platform just refused, which must not be used again."""
        async with self._fetching:  # one fetch at a time in this process
            for _ in range(50):
                cached = await self.tokens.get()
                now = self.clock()
                usable = cached is not None and cached.expires_at > now and cached.value != not_this
                if usable and cached is not None and cached.expires_at - now > REFRESH_BEFORE:
                    return cached.value
                if await self.tokens.lock(10.0):
                    try:
                        fresh = await self.fetch_token()
                        if fresh.value == not_this:
                            fresh = await self.fetch_token(force=True)
                        await self.tokens.put(fresh)
                        return fresh.value
                    finally:
                        await self.tokens.unlock()
                if usable and cached is not None:  # another instance fetches the next; this one still works
                    return cached.value
                await asyncio.sleep(0.1)
            raise ApiUnavailable("no access_token: another instance holds the fetch and none arrived")

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise ApiUnavailable(type(e).__name__) from None
        if response.status_code >= 500:
            raise ApiUnavailable(f"HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise ApiUnavailable("not JSON") from None

    async def call(
        self,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        query: dict[str, str] | None = None,
        method: str = "POST",
        **kwargs: Any,
    ) -> dict[str, Any]:
        """One API call with the token, the token and busy rules applied: ``payload`` as JSON, or
        ``kwargs`` for httpx (``files``); ``query`` beside the token."""
        refused: str | None = None
        busy = 0
        while True:
            token = await self.access_token(not_this=refused)
            params = {**(query or {}), "access_token": token}
            if payload is not None:
                kwargs["content"] = json_body(payload)
                kwargs["headers"] = {"Content-Type": "application/json; charset=utf-8"}
            data = await self.request(method, path, params=params, **kwargs)
            code = errcode(data)
            if code == 0:
                return data if isinstance(data, dict) else {}
            if code in self.token_errors and refused is None:
                log.warning("%s refused the access_token (%s); fetching a new one", self.platform, code)
                await self.tokens.drop(token)
                refused = token
                continue
            if code == BUSY and busy < self.busy_retries:
                busy += 1
                await asyncio.sleep(0.2 * 2**busy)
                continue
            if code == BUSY:
                raise ApiUnavailable(f"{self.platform} busy (-1)")
            raise self.refusal(code, str(data.get("errmsg", "")))

    async def counted(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A message send, counted for the metrics: ``ok``, ``refused`` (with the errcode) or
        ``unavailable``."""
        try:
            data = await self.call(path, payload)
        except ApiRefusal as e:
            self.metrics.refused(self.metrics_platform, e.errcode)
            self.metrics.sent(self.metrics_platform, "refused")
            raise
        except ApiUnavailable:
            self.metrics.sent(self.metrics_platform, "unavailable")
            raise
        self.metrics.sent(self.metrics_platform, "ok")
        return data

    async def upload_image(self, content: bytes, filename: str) -> str:
        """A temporary image (``media/upload``, kept 3 days; the same call on both platforms): its
        ``media_id``."""
        files = {"media": (filename, content, "image/png")}
        data = await self.call("/cgi-bin/media/upload", None, query={"type": "image"}, files=files)
        return str(data["media_id"])

"""WeChat's side of an Official Account, for tests: real HTTP on 127.0.0.1, WeChat's wire formats.

Written from WeChat's developer documentation (接入概述, 消息加解密说明, 被动回复用户消息, 客服消息,
订阅通知, 自定义菜单, 获取稳定版接口调用凭据, 网页授权, 全局返回码), not from Yibao's code: its crypto is its own.

Two halves:

- **The callback client** (WeChat calling the account's server): ``user.says("/balance")`` POSTs a
  text message to ``callback_url``, signed (``signature`` = SHA-1 of the sorted token, timestamp and
  nonce) and, with an EncodingAESKey, encrypted (安全模式: ``msg_signature``, AES-256-CBC, the app id
  inside), waits up to 5 s for the answer and, like WeChat, **sends it again** (a new nonce) when
  none came in time, at most 3 times in all. A passive reply is opened (decrypted and its signature
  checked in safe mode) and put in the user's inbox.
- **The API** (``url``, the account's ``wechat.api_base_url``): ``stable_token`` and ``token``
  (tokens that expire, ``expire_tokens``/``void_tokens`` to end them early: 42001/40001),
  ``message/custom/send`` with the customer-service window (5 messages within 48 hours of the
  user's last message, 3 within a minute of a menu click or a follow; 45015 outside it, 45047 over the
  count, 43004 to a user who does not follow), ``message/subscribe/bizsend`` only to users who
  accepted the template (43101 otherwise; one message an acceptance unless long-term), ``media/upload``,
  ``menu/create`` and ``menu/addconditional`` (at most 3 buttons, 5 under each: 40016/40017; ``click``
  buttons with a key, ``view`` buttons with an http(s) url of at most 1024 bytes), and scripted
  failures (``fail_next``: ``-1`` system busy, or any code).
- **Web-page authorization** (网页授权, on ``oauth_base_url``, the same server): ``GET
  /connect/oauth2/authorize`` redirects (302) the browser to ``redirect_uri?code=CODE&state=STATE``
  for the user a test put ``in_browser`` (or who tapped the menu's page entry, ``user.opens_page``;
  ``snsapi_base``: silently; outside WeChat, nobody in the
  browser, a page saying to open it in WeChat; a ``redirect_uri`` off the account's 网页授权域名
  ``oauth_domain``, when set, the 10003 page). ``GET /sns/oauth2/access_token`` trades a code (from
  there, or ``oauth_code(user)``) for the page token and ``openid``: a code is good once (40163
  after), for 5 minutes (42003 after), 40029 for one never issued.

``advance(seconds)`` moves the emulator's clock (the window's), not the bot's.

Blocking calls (``says``, ``wait_for``) must not run on the event loop of a bot in the same process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import struct
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from botapi_emulator import LoopbackServer, Upload, _parse_multipart
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

JSON = dict[str, Any]
WINDOW_SECONDS = 48 * 3600
WINDOW_MESSAGES = 5
EVENT_SECONDS = 60
EVENT_MESSAGES = 3
TEXT_MAX_BYTES = 2048


def _sha1(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


class _Aes:
    """消息加解密: key = base64(EncodingAESKey + "="), IV = key[:16], PKCS#7 to 32-byte blocks,
    plaintext = 16 random bytes + length (network order) + message + app id."""

    def __init__(self, encoding_aes_key: str, app_id: str) -> None:
        self.key = base64.b64decode(encoding_aes_key + "=")
        self.app_id = app_id.encode()

    def encrypt(self, message: bytes) -> str:
        body = os.urandom(16) + struct.pack(">I", len(message)) + message + self.app_id
        pad = 32 - len(body) % 32
        body += bytes([pad]) * pad
        enc = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).encryptor()
        return base64.b64encode(enc.update(body) + enc.finalize()).decode()

    def decrypt(self, text: str) -> bytes:
        dec = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).decryptor()
        body = dec.update(base64.b64decode(text)) + dec.finalize()
        body = body[: -body[-1]]
        (length,) = struct.unpack(">I", body[16:20])
        assert body[20 + length :] == self.app_id, "a reply encrypted for another app id"
        return body[20 : 20 + length]


def _xml(fields: dict[str, str | int]) -> bytes:
    parts = ["<xml>"]
    for k, v in fields.items():
        parts.append(f"<{k}>{v}</{k}>" if isinstance(v, int) else f"<{k}><![CDATA[{v}]]></{k}>")
    parts.append("</xml>")
    return "".join(parts).encode()


def _fields(body: bytes) -> dict[str, str]:
    root = ET.fromstring(body)
    return {child.tag: child.text or "" for child in root}


@dataclass
class Message:
    """What the user saw: ``via`` passive, custom or subscription; ``kind`` text, msgmenu, image,
    subscription."""

    via: str
    kind: str
    text: str = ""
    options: list[tuple[str, str]] = field(default_factory=list)
    """A menu message's (id, content)."""
    data: JSON = field(default_factory=dict)
    at: float = 0.0

    def shows(self, needle: str) -> bool:
        return (
            needle in self.text
            or any(needle in c for _, c in self.options)
            or needle in json.dumps(self.data, ensure_ascii=False)
        )


class ApiError(Exception):
    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(errmsg)
        self.errcode = errcode
        self.errmsg = errmsg


@dataclass
class Callback:
    """One delivery of a callback: its tries (WeChat's retries included) and the HTTP statuses."""

    statuses: list[int] = field(default_factory=list)
    passive: Message | None = None


class WxUser:
    def __init__(self, emulator: WechatEmulator, openid: str) -> None:
        self.emulator = emulator
        self.openid = openid
        self.inbox: list[Message] = []
        self.following = False
        self.last_message_at: float | None = None
        self.window_used = 0
        self.last_event_at: float | None = None
        self.event_used = 0
        self.subscriptions: dict[str, int] = {}
        """Accepted subscription messages left, by template (-1: long-term)."""
        self._msg_id = int.from_bytes(os.urandom(4), "big") * 1000

    # -- what the user does ------------------------------------------------------------------------

    def _base(self, msg_type: str) -> dict[str, str | int]:
        return {
            "ToUserName": self.emulator.account,
            "FromUserName": self.openid,
            "CreateTime": int(self.emulator.now()),
            "MsgType": msg_type,
        }

    def says(self, text: str, *, menu_id: str | None = None) -> Callback:
        self.last_message_at, self.window_used = self.emulator.now(), 0
        self._msg_id += 1
        fields = {**self._base("text"), "Content": text, "MsgId": self._msg_id}
        if menu_id is not None:
            fields["bizmsgmenuid"] = menu_id
        return self.emulator.deliver(self, fields)

    def chooses(self, content: str) -> Callback:
        """Clicks the option showing ``content`` in the latest menu message."""
        for m in reversed(self.inbox):
            for option_id, option in m.options:
                if content in option:
                    return self.says(option, menu_id=option_id)
        raise AssertionError(f"no menu option {content!r} in {self.describe()}")

    def sends_image(self) -> Callback:
        self.last_message_at, self.window_used = self.emulator.now(), 0
        self._msg_id += 1
        fields = {
            **self._base("image"),
            "PicUrl": "http://127.0.0.1/x.jpg",
            "MediaId": "m1",
            "MsgId": self._msg_id,
        }
        return self.emulator.deliver(self, fields)

    def sends_location(self, latitude: float, longitude: float, label: str = "") -> Callback:
        """A location message as WeChat documents it: Location_X latitude, Location_Y longitude."""
        self.last_message_at, self.window_used = self.emulator.now(), 0
        self._msg_id += 1
        fields = {
            **self._base("location"),
            "Location_X": f"{latitude:.6f}",
            "Location_Y": f"{longitude:.6f}",
            "Scale": 15,
            "Label": label,
            "MsgId": self._msg_id,
        }
        return self.emulator.deliver(self, fields)

    def event(self, event: str, **extra: str | int) -> Callback:
        return self.emulator.deliver(self, {**self._base("event"), "Event": event, **extra})

    def follows(self) -> Callback:
        self.following = True
        self.last_event_at, self.event_used = self.emulator.now(), 0
        return self.event("subscribe", EventKey="")

    def unfollows(self) -> Callback:
        self.following = False
        return self.event("unsubscribe", EventKey="")

    def clicks_menu(self, key: str) -> Callback:
        self.last_event_at, self.event_used = self.emulator.now(), 0
        return self.event("CLICK", EventKey=key)

    def opens_page(self, name: str) -> str:
        """Taps the menu's ``view`` button named ``name`` (in the menu ``menu/create`` set last):
        WeChat's browser opens its URL with this user in it (``in_browser``), and the account hears
        of it (a ``VIEW`` event, when ``callback_url`` is set). Returns the URL, for a real browser
        to open."""
        menu = self.emulator.menus[-1] if self.emulator.menus else {"button": []}
        buttons = [sub for b in menu["button"] for sub in b.get("sub_button", [b])]
        for b in buttons:
            if b.get("name") == name and b.get("type") == "view":
                url = str(b["url"])
                self.emulator.in_browser = self
                if self.emulator.callback_url:
                    self.event("VIEW", EventKey=url)
                return url
        raise AssertionError(f"no view button {name!r} in the account's menu")

    def accepts(self, template_id: str, *, long_term: bool = False) -> Callback:
        """Taps "allow" on the subscription pop-up for ``template_id``."""
        left = self.subscriptions.get(template_id, 0)
        self.subscriptions[template_id] = -1 if long_term or left < 0 else left + 1
        raw = (
            "<xml>"
            f"<ToUserName><![CDATA[{self.emulator.account}]]></ToUserName>"
            f"<FromUserName><![CDATA[{self.openid}]]></FromUserName>"
            f"<CreateTime>{int(self.emulator.now())}</CreateTime>"
            "<MsgType><![CDATA[event]]></MsgType>"
            "<Event><![CDATA[subscribe_msg_popup_event]]></Event>"
            "<SubscribeMsgPopupEvent><List>"
            f"<TemplateId><![CDATA[{template_id}]]></TemplateId>"
            "<SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString>"
            "<PopupScene>2</PopupScene>"
            "</List></SubscribeMsgPopupEvent>"
            "</xml>"
        ).encode()
        return self.emulator.deliver_raw(raw)

    # -- what the user sees ------------------------------------------------------------------------

    def describe(self) -> str:
        return "\n".join(f"  [{m.via}/{m.kind}] {m.text[:80]!r} {m.options or ''}" for m in self.inbox)

    def wait_for(self, needle: str, *, after: int = 0, timeout: float = 10.0) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.emulator.lock:
                for m in self.inbox[after:]:
                    if m.shows(needle):
                        return m
            time.sleep(0.02)
        raise AssertionError(f"{self.openid} never saw {needle!r}; inbox:\n{self.describe()}")

    def converse(self, text: str, expect: str, timeout: float = 10.0) -> Message:
        before = len(self.inbox)
        self.says(text)
        return self.wait_for(expect, after=before, timeout=timeout)


@dataclass
class _Token:
    value: str
    expires_at: float


CODE_SECONDS = 300
"""A web-page authorization code is good for 5 minutes, once."""


@dataclass
class _Code:
    openid: str
    expires_at: float
    used: bool = False
    snapshot: bool = False


class WechatEmulator:
    def __init__(
        self,
        *,
        app_id: str = "wx0123456789abcdef",
        app_secret: str = "s3cr3t" * 5,
        token: str = "yibaoToken2026",
        encoding_aes_key: str | None = None,
        account: str = "gh_0123456789ab",
        token_ttl: int = 7200,
        templates: dict[str, list[str]] | None = None,
    ) -> None:
        self.app_id = app_id
        self.app_secret = app_secret
        self.token = token
        self.encoding_aes_key = encoding_aes_key
        self.aes = _Aes(encoding_aes_key, app_id) if encoding_aes_key else None
        self.account = account
        self.token_ttl = token_ttl
        self.templates = templates or {"TPL_low_balance": ["amount1", "amount2", "time3", "thing4"]}
        self.callback_url = ""
        self.lock = threading.RLock()
        self.users: dict[str, WxUser] = {}
        self.tokens: dict[str, _Token] = {}
        self.stable: _Token | None = None
        self.token_fetches = 0
        self.calls: list[tuple[str, JSON]] = []
        self.menus: list[JSON] = []
        self.conditional_menus: list[JSON] = []
        self.media: dict[str, bytes] = {}
        self.failures: list[tuple[str, int, str]] = []
        self.callbacks: list[Callback] = []
        self.offset = 0.0
        self.timeout = 5.0
        self.in_browser: WxUser | None = None
        """Who has the page open in WeChat's browser: the user ``authorize`` redirects with a code for."""
        self.oauth_domain: str | None = None
        """The account's 网页授权域名 (a host[:port]); None: any redirect is taken."""
        self.oauth_codes: dict[str, _Code] = {}
        app = Starlette(
            routes=[
                Route("/cgi-bin/{path:path}", self._endpoint, methods=["GET", "POST"]),
                Route("/sns/oauth2/access_token", self._sns_access_token, methods=["GET"]),
                Route("/connect/oauth2/authorize", self._authorize, methods=["GET"]),
            ]
        )
        self.server = LoopbackServer(app, name="wechat-emulator")

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> WechatEmulator:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Moves the emulator's clock (token expiry, the window), not anyone else's."""
        self.offset += seconds

    def user(self, openid: str | None = None) -> WxUser:
        openid = openid or "o" + secrets.token_urlsafe(20).replace("-", "A").replace("_", "B")[:27]
        with self.lock:
            return self.users.setdefault(openid, WxUser(self, openid))

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (42001 from then on)."""
        with self.lock:
            for t in self.tokens.values():
                t.expires_at = self.now() - 1
            self.stable = None

    def void_tokens(self) -> None:
        """Every token issued so far is no longer known (40001)."""
        with self.lock:
            self.tokens.clear()
            self.stable = None

    def fail_next(self, path: str, errcode: int = -1, times: int = 1, errmsg: str = "system error") -> None:
        with self.lock:
            self.failures += [(path, errcode, errmsg)] * times

    def calls_to(self, path: str) -> list[JSON]:
        with self.lock:
            return [body for p, body in self.calls if p == path]

    # -- web-page authorization --------------------------------------------------------------------

    @property
    def oauth_base_url(self) -> str:
        """Yibao's ``wechat.oauth_base_url``: the authorize page is on this emulator too."""
        return self.server.url

    def oauth_code(self, user: WxUser, *, snapshot: bool = False) -> str:
        """A code for ``user``, as the authorize page would put in the redirect (good once, 5 min).
        ``snapshot``: for a snapshot-page visitor (a virtual openid: ``is_snapshotuser``)."""
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.oauth_codes[code] = _Code(user.openid, self.now() + CODE_SECONDS, snapshot=snapshot)
        return code

    async def _authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("appid") != self.app_id:
            return PlainTextResponse("Oops! Something went wrong:( 参数错误 appid", status_code=400)
        if q.get("response_type") != "code" or q.get("scope") not in ("snsapi_base", "snsapi_userinfo"):
            return PlainTextResponse("Oops! Something went wrong:( 10005 scope 参数错误", status_code=400)
        redirect = urlsplit(q.get("redirect_uri", ""))
        if redirect.scheme not in ("http", "https") or not redirect.netloc:
            return PlainTextResponse("redirect_uri 参数错误", status_code=400)
        if self.oauth_domain is not None and redirect.netloc != self.oauth_domain:
            return PlainTextResponse("10003 redirect_uri 域名与后台配置不一致", status_code=400)
        user = self.in_browser
        if user is None:
            return PlainTextResponse("请在微信客户端打开链接", status_code=200)
        code = self.oauth_code(user)
        query = urlencode({"code": code, "state": q.get("state", "")})
        sep = "&" if redirect.query else ""
        target = urlunsplit(redirect._replace(query=f"{redirect.query}{sep}{query}", fragment=""))
        return RedirectResponse(target, status_code=302)

    async def _sns_access_token(self, request: Request) -> JSONResponse:
        q = dict(request.query_params)
        with self.lock:
            self.calls.append(("/sns/oauth2/access_token", {k: v for k, v in q.items() if k != "secret"}))
            try:
                for i, (fpath, code, msg) in enumerate(self.failures):
                    if fpath == "/sns/oauth2/access_token":
                        del self.failures[i]
                        raise ApiError(code, msg)
                self._credentials(q.get("appid"), q.get("secret"))
                if q.get("grant_type") != "authorization_code":
                    raise ApiError(40002, "invalid grant_type")
                found = self.oauth_codes.get(q.get("code", ""))
                if found is None:
                    raise ApiError(40029, "invalid code")
                if found.used:
                    raise ApiError(40163, "code been used")
                if found.expires_at <= self.now():
                    raise ApiError(42003, "code expired")
                found.used = True
            except ApiError as e:
                return JSONResponse({"errcode": e.errcode, "errmsg": e.errmsg})
        answer: JSON = {
            "access_token": "PAGE_" + secrets.token_urlsafe(32),
            "expires_in": 7200,
            "refresh_token": "REFRESH_" + secrets.token_urlsafe(32),
            "openid": found.openid,
            "scope": "snsapi_base",
        }
        if found.snapshot:
            answer["is_snapshotuser"] = 1
        return JSONResponse(answer)

    # -- the callback client -----------------------------------------------------------------------

    def deliver(self, user: WxUser, fields: dict[str, str | int]) -> Callback:
        return self.deliver_raw(_xml(fields), user=user)

    def deliver_raw(
        self,
        inner: bytes,
        *,
        user: WxUser | None = None,
        nonce: str | None = None,
        timestamp: str | None = None,
        signature: str | None = None,
    ) -> Callback:
        """POST one callback as WeChat does, retried (with a new nonce) when no answer came in 5 s."""
        assert self.callback_url, "set emulator.callback_url to the bot's callback"
        record = Callback()
        for _attempt in range(3):
            stamp = timestamp or str(int(time.time()))
            once = nonce or str(secrets.randbelow(10**10))
            query = {
                "timestamp": stamp,
                "nonce": once,
                "signature": signature or _sha1(self.token, stamp, once),
            }
            body = inner
            if self.aes is not None:
                encrypted = self.aes.encrypt(inner)
                query.update(
                    encrypt_type="aes", msg_signature=signature or _sha1(self.token, stamp, once, encrypted)
                )
                body = _xml({"ToUserName": self.account, "Encrypt": encrypted})
            if user is not None:
                query["openid"] = user.openid
            try:
                response = httpx.post(self.callback_url, params=query, content=body, timeout=self.timeout)
            except httpx.TimeoutException:
                record.statuses.append(0)
                continue
            record.statuses.append(response.status_code)
            if response.status_code == 200 and response.content not in (b"", b"success"):
                record.passive = self._open_passive(response.content, user)
            break
        with self.lock:
            self.callbacks.append(record)
        return record

    def _open_passive(self, body: bytes, user: WxUser | None) -> Message:
        fields = _fields(body)
        if self.aes is not None:
            expected = _sha1(self.token, fields["TimeStamp"], fields["Nonce"], fields["Encrypt"])
            assert fields["MsgSignature"] == expected, "a passive reply with a wrong MsgSignature"
            fields = _fields(self.aes.decrypt(fields["Encrypt"]))
        assert fields["MsgType"] == "text", fields
        assert len(fields["Content"].encode()) <= TEXT_MAX_BYTES, "a passive reply over 2048 bytes"
        message = Message("passive", "text", fields["Content"], at=time.monotonic())
        target = self.users.get(fields["ToUserName"]) if user is None else user
        assert target is not None
        assert fields["ToUserName"] == target.openid
        assert fields["FromUserName"] == self.account
        with self.lock:
            target.inbox.append(message)
        return message

    # -- the API -----------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> JSONResponse:
        path = "/cgi-bin/" + request.path_params["path"]
        try:
            result = await self._call(path, request)
        except ApiError as e:
            return JSONResponse({"errcode": e.errcode, "errmsg": e.errmsg})
        return JSONResponse({"errcode": 0, "errmsg": "ok", **result})

    async def _call(self, path: str, request: Request) -> JSON:
        if path == "/cgi-bin/media/upload":
            parts = _parse_multipart(await request.body(), request.headers.get("content-type", ""))
            upload = parts.get("media")
            body: JSON = {"type": request.query_params.get("type")}
            content = upload.content if isinstance(upload, Upload) else b""
        else:
            raw = await request.body()
            body = json.loads(raw) if raw else {}
            content = b""
        with self.lock:
            self.calls.append((path, body))
            for i, (fpath, code, msg) in enumerate(self.failures):
                if fpath == path:
                    del self.failures[i]
                    raise ApiError(code, msg)
            if path == "/cgi-bin/stable_token":
                return self._stable_token(body)
            if path == "/cgi-bin/token":
                return self._plain_token(dict(request.query_params))
            self._check_token(request.query_params.get("access_token"))
            if path == "/cgi-bin/message/custom/send":
                return self._custom_send(body)
            if path == "/cgi-bin/message/subscribe/bizsend":
                return self._bizsend(body)
            if path == "/cgi-bin/media/upload":
                if body["type"] != "image" or not content.startswith(b"\x89PNG"):
                    raise ApiError(40004, "invalid media type")
                media_id = secrets.token_hex(16)
                self.media[media_id] = content
                return {"type": "image", "media_id": media_id, "created_at": int(self.now())}
            if path == "/cgi-bin/menu/create":
                self._check_menu(body)
                self.menus.append(body)
                return {}
            if path == "/cgi-bin/menu/addconditional":
                self._check_menu(body)
                self.conditional_menus.append(body)
                return {"menuid": str(len(self.conditional_menus))}
        raise ApiError(48001, "api unauthorized")

    def _credentials(self, appid: object, secret: object) -> None:
        if appid != self.app_id:
            raise ApiError(40013, "invalid appid")
        if secret != self.app_secret:
            raise ApiError(40125, "invalid appsecret")

    def _issue(self) -> _Token:
        token = _Token("ACCESS_" + secrets.token_urlsafe(48), self.now() + self.token_ttl)
        self.tokens[token.value] = token
        self.token_fetches += 1
        return token

    def _stable_token(self, body: JSON) -> JSON:
        self._credentials(body.get("appid"), body.get("secret"))
        if body.get("grant_type") != "client_credential":
            raise ApiError(40002, "invalid grant_type")
        if self.stable is None or self.stable.expires_at <= self.now() or body.get("force_refresh"):
            self.stable = self._issue()
        else:
            self.token_fetches += 1
        return {"access_token": self.stable.value, "expires_in": int(self.stable.expires_at - self.now())}

    def _plain_token(self, query: dict[str, str]) -> JSON:
        self._credentials(query.get("appid"), query.get("secret"))
        token = self._issue()
        return {"access_token": token.value, "expires_in": self.token_ttl}

    def _check_token(self, value: str | None) -> None:
        if not value:
            raise ApiError(41001, "access_token missing")
        token = self.tokens.get(value)
        if token is None:
            raise ApiError(40001, "invalid credential, access_token is invalid or not latest")
        if token.expires_at <= self.now():
            raise ApiError(42001, "access_token expired")

    def _target(self, body: JSON) -> WxUser:
        user = self.users.get(str(body.get("touser")))
        if user is None:
            raise ApiError(40003, "invalid openid")
        if not user.following:
            raise ApiError(43004, "require subscribe")
        return user

    def _custom_send(self, body: JSON) -> JSON:
        user = self._target(body)
        now = self.now()
        in_event = user.last_event_at is not None and now - user.last_event_at < EVENT_SECONDS
        in_window = user.last_message_at is not None and now - user.last_message_at < WINDOW_SECONDS
        if in_event and user.event_used < EVENT_MESSAGES:
            grant = "event"
        elif in_window and user.window_used < WINDOW_MESSAGES:
            grant = "window"
        elif in_window or in_event:
            raise ApiError(45047, "out of response count limit")
        else:
            raise ApiError(45015, "response out of time limit or subscription is canceled")
        kind = body.get("msgtype")
        if kind == "text":
            text = str(body["text"]["content"])
            if len(text.encode()) > TEXT_MAX_BYTES:
                raise ApiError(45002, "content size out of limit")
            message = Message("custom", "text", text)
        elif kind == "msgmenu":
            menu = body["msgmenu"]
            options = [(str(o["id"]), str(o["content"])) for o in menu["list"]]
            if not 1 <= len(options) <= 10 or len({i for i, _ in options}) != len(options):
                raise ApiError(40008, "invalid message type")
            message = Message("custom", "msgmenu", str(menu.get("head_content", "")), options)
        elif kind == "image":
            if body["image"]["media_id"] not in self.media:
                raise ApiError(40007, "invalid media_id")
            message = Message("custom", "image", data={"media_id": body["image"]["media_id"]})
        else:
            raise ApiError(40008, "invalid message type")
        if grant == "event":
            user.event_used += 1
        else:
            user.window_used += 1
        message.at = time.monotonic()
        user.inbox.append(message)
        return {}

    def _bizsend(self, body: JSON) -> JSON:
        user = self.users.get(str(body.get("touser")))
        if user is None:
            raise ApiError(40003, "invalid openid")
        template = str(body.get("template_id"))
        keys = self.templates.get(template)
        if keys is None:
            raise ApiError(40037, "invalid template_id")
        left = user.subscriptions.get(template, 0)
        if left == 0:
            raise ApiError(43101, "user refuse to accept the msg")
        data = body.get("data") or {}
        if set(data) != set(keys):
            raise ApiError(47003, f"argument invalid! data keys {sorted(data)} vs {keys}")
        for key, item in data.items():
            value = str(item.get("value", ""))
            if key.startswith("thing") and len(value) > 20:
                raise ApiError(47003, f"argument invalid! {key} over 20 characters")
            if not value:
                raise ApiError(47003, f"argument invalid! {key} empty")
        if left > 0:
            user.subscriptions[template] = left - 1
        values = {k: v["value"] for k, v in data.items()}
        user.inbox.append(Message("subscription", "subscription", data=values, at=time.monotonic()))
        return {}

    @staticmethod
    def _check_menu(body: JSON) -> None:
        buttons = body.get("button") or []
        if not 1 <= len(buttons) <= 3:
            raise ApiError(40016, "invalid button size")
        for b in buttons:
            if len(str(b.get("name", "")).encode()) > 16:
                raise ApiError(40018, "invalid button name size")
            subs = b.get("sub_button")
            if subs is not None:
                if not 1 <= len(subs) <= 5:
                    raise ApiError(40017, "invalid sub button size")
                for sub in subs:
                    if len(str(sub.get("name", "")).encode()) > 60:
                        raise ApiError(40027, "invalid sub button name size")
                    _check_action(sub, 40027)
            else:
                _check_action(b, 40019)


def _check_action(button: JSON, errcode: int) -> None:
    """A ``click`` needs a key (at most 128 bytes); a ``view`` an http(s) url (at most 1024 bytes)."""
    kind = button.get("type")
    if kind == "click":
        if not button.get("key") or len(str(button["key"]).encode()) > 128:
            raise ApiError(errcode, "invalid button key size")
    elif kind == "view":
        url = str(button.get("url") or "")
        parts = urlsplit(url)
        if not url or len(url.encode()) > 1024 or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ApiError(40055 if errcode == 40019 else 40054, "invalid button url domain")
    else:
        raise ApiError(40017, "invalid button type")

"""WeCom's side of a self-built app (自建应用), for tests: real HTTP on 127.0.0.1, WeCom's wire formats.

Written from WeCom's developer documentation (回调配置, 加解密方案说明, 接收消息与事件, 发送应用消息,
模板卡片消息, 更新模版卡片消息, 读取成员, 通讯录回调通知, 自定义菜单, 网页授权登录, 获取访问用户身份,
全局错误码), not from Yibao's code; the
crypto is the WeChat emulator's (the same published scheme, with the corp id inside).

- **The callback client**: always encrypted (``msg_signature`` over the ciphertext, AES-256-CBC, the
  corp id inside); a member's text, a click on a template card (``template_card_event`` with the
  card's ``TaskId``, the button's key and a fresh ``ResponseCode``), and the directory's
  ``change_contact`` events (``delete_user``); sent again, with a new nonce, when no answer came in
  5 s, three tries in all. ``verify_url`` is the admin console's URL check (an encrypted
  ``echostr`` that must come back decrypted).
- **The API** (``url``): ``gettoken`` (tokens that expire: 42001; ``void_tokens``: 40014),
  ``message/send`` (text up to 2048 bytes, ``template_card`` of type ``button_interaction`` with
  1-6 buttons and a ``task_id`` unique in the app, images; members outside the app's visible range
  or not in the directory come back as ``invaliduser``, 81013 when no one is left), WeCom's
  per-member limits (**30 a minute, 1,000 an hour: what passes them is dropped silently**, counted
  in ``dropped``), ``message/update_template_card`` (a ``response_code`` works once: the card's
  buttons become one that cannot be clicked), ``user/get`` (60111 for no such member), ``media/upload``,
  ``menu/create?agentid=`` (the app's menu: at most 3 buttons, 5 under each, ``click`` and ``view``).
- **Web-page authorization** (on ``oauth_base_url``, the same server): ``GET /connect/oauth2/authorize``
  (``appid`` the corp id, ``agentid`` the app's) redirects (302) to ``redirect_uri?code=CODE&state=STATE``
  for whoever a test put ``in_browser`` (a ``Member``, or a ``Visitor`` from outside the company;
  ``member.opens_page`` puts the member there, as a tap on the menu's page entry does);
  ``GET /cgi-bin/auth/getuserinfo`` trades the code, with the app's access_token, for ``userid`` (a
  member, in the app's visible range or not) or ``openid`` (and ``external_userid`` for a customer)
  for a visitor. A code is good once, for 5 minutes: 40029 ("invalid code") otherwise; a code whose
  redirect was off the app's 可信域名 (``trusted_domain``, when set) is 50001.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from botapi_emulator import LoopbackServer, Upload, _parse_multipart
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from wechat_emulator import ApiError, Callback, Message, _Aes, _check_action, _fields, _sha1, _xml

JSON = dict[str, Any]
TEXT_MAX_BYTES = 2048
PER_MINUTE = 30
PER_HOUR = 1000
CODE_SECONDS = 300


@dataclass(frozen=True)
class Visitor:
    """Someone outside the company opening the app's page (a WeChat user): no userid."""

    openid: str
    external_userid: str | None = None
    """Set for a customer of the company (客户) whose contact is in the app's visible range."""


@dataclass
class _OAuthCode:
    who: Member | Visitor
    expires_at: float
    domain: str
    used: bool = False


@dataclass
class Card:
    """A template card as the member sees it: clickable until updated."""

    task_id: str
    title: str
    text: str
    buttons: list[tuple[str, str]]
    """(key, text)."""
    response_code: str
    replaced: str | None = None
    """The text of the one button left once the card was updated (then nothing can be clicked)."""


class Member:
    def __init__(self, emulator: WecomEmulator, userid: str, name: str) -> None:
        self.emulator = emulator
        self.userid = userid
        self.name = name
        self.visible = True
        self.inbox: list[Message] = []
        self.cards: list[Card] = []
        self.sent_at: list[float] = []
        self._msg_id = secrets.randbelow(10**9) * 1000

    def _base(self, msg_type: str) -> dict[str, str | int]:
        return {
            "ToUserName": self.emulator.corp_id,
            "FromUserName": self.userid,
            "CreateTime": int(time.time()),
            "MsgType": msg_type,
            "AgentID": self.emulator.agent_id,
        }

    def says(self, text: str) -> Callback:
        self._msg_id += 1
        return self.emulator.deliver({**self._base("text"), "Content": text, "MsgId": self._msg_id})

    def sends_location(self, latitude: float, longitude: float, label: str = "") -> Callback:
        """A location message as WeCom documents it: Location_X latitude, Location_Y longitude."""
        self._msg_id += 1
        fields = {
            **self._base("location"),
            "Location_X": f"{latitude:.6f}",
            "Location_Y": f"{longitude:.6f}",
            "Scale": 15,
            "Label": label,
            "MsgId": self._msg_id,
        }
        return self.emulator.deliver(fields)

    def clicks_menu(self, name: str) -> Callback:
        """Taps the app menu's ``click`` button named ``name`` (in the menu ``menu/create`` set last):
        a ``click`` event with its key."""
        menu = self.emulator.menus[-1] if self.emulator.menus else {"button": []}
        buttons = [s for b in menu["button"] for s in b.get("sub_button", [b])]
        for b in buttons:
            if b.get("name") == name and b.get("type") == "click":
                fields = {**self._base("event"), "Event": "click", "EventKey": str(b["key"])}
                return self.emulator.deliver(fields)
        raise AssertionError(f"no click button {name!r} in the app's menu")

    def opens_page(self, name: str) -> str:
        """Taps the app menu's ``view`` button named ``name``: WeCom's browser opens its URL with
        this member in it (``in_browser``), and the app hears of it (a ``view`` event, when
        ``callback_url`` is set). Returns the URL, for a real browser to open."""
        menu = self.emulator.menus[-1] if self.emulator.menus else {"button": []}
        buttons = [s for b in menu["button"] for s in b.get("sub_button", [b])]
        for b in buttons:
            if b.get("name") == name and b.get("type") == "view":
                url = str(b["url"])
                self.emulator.in_browser = self
                if self.emulator.callback_url:
                    self.emulator.deliver({**self._base("event"), "Event": "view", "EventKey": url})
                return url
        raise AssertionError(f"no view button {name!r} in the app's menu")

    def clicks(self, button: str, *, card: Card | None = None, force: bool = False) -> Callback:
        """Clicks the button showing ``button`` on ``card`` (else the newest card that has one). A
        card already updated has nothing to click, unless ``force`` (a double tap racing the update)."""
        cards = [card] if card is not None else list(reversed(self.cards))
        for c in cards:
            for key, text in c.buttons:
                if button in text:
                    if c.replaced is not None and not force:
                        raise AssertionError(f"the card {c.task_id} was answered already: {c.replaced}")
                    code = secrets.token_hex(8)
                    self.emulator.codes[code] = (c, False)
                    fields = {
                        **self._base("event"),
                        "Event": "template_card_event",
                        "EventKey": key,
                        "TaskId": c.task_id,
                        "CardType": "button_interaction",
                        "ResponseCode": code,
                    }
                    return self.emulator.deliver(fields)
        raise AssertionError(f"no button {button!r} in {self.describe()}")

    def describe(self) -> str:
        lines = [f"  [{m.kind}] {m.text[:80]!r} {m.options or ''}" for m in self.inbox]
        return "\n".join(lines) or "  (nothing)"

    def wait_for(self, needle: str, *, after: int = 0, timeout: float = 10.0) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.emulator.lock:
                for m in self.inbox[after:]:
                    if m.shows(needle):
                        return m
            time.sleep(0.02)
        raise AssertionError(f"{self.userid} never saw {needle!r}; inbox:\n{self.describe()}")

    def converse(self, text: str, expect: str, timeout: float = 10.0) -> Message:
        before = len(self.inbox)
        self.says(text)
        return self.wait_for(expect, after=before, timeout=timeout)


@dataclass
class _Token:
    value: str
    expires_at: float


@dataclass
class WecomEmulator:
    corp_id: str = "ww0123456789abcdef"
    agent_id: int = 1000002
    secret: str = "app-secret-" + "x" * 32
    token: str = "yibaoWecom2026"
    encoding_aes_key: str = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlk0"
    token_ttl: int = 7200
    callback_url: str = ""
    timeout: float = 5.0
    members: dict[str, Member] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)
    token_fetches: int = 0
    codes: dict[str, tuple[Card, bool]] = field(default_factory=dict)
    """Response codes: the card they update, and whether they were used."""
    task_ids: set[str] = field(default_factory=set)
    media: dict[str, bytes] = field(default_factory=dict)
    dropped: int = 0
    """Messages WeCom dropped, silently, for passing a member's limits."""
    calls: list[tuple[str, JSON]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    menus: list[JSON] = field(default_factory=list)
    """What ``menu/create`` set, in order."""
    in_browser: Member | Visitor | None = None
    """Who has the page open in WeCom's (or WeChat's) browser: ``authorize`` redirects with their code."""
    trusted_domain: str | None = None
    """The app's 可信域名 (host[:port]); None: any."""
    oauth_codes: dict[str, _OAuthCode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.aes = _Aes(self.encoding_aes_key, self.corp_id)
        app = Starlette(
            routes=[
                Route("/cgi-bin/{path:path}", self._endpoint, methods=["GET", "POST"]),
                Route("/connect/oauth2/authorize", self._authorize, methods=["GET"]),
            ]
        )
        self.server = LoopbackServer(app, name="wecom-emulator")

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> WecomEmulator:
        self.server.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.stop()

    def member(self, userid: str, name: str = "张伟") -> Member:
        with self.lock:
            return self.members.setdefault(userid, Member(self, userid, name))

    def expire_tokens(self) -> None:
        with self.lock:
            for t in self.tokens.values():
                t.expires_at = time.time() - 1

    def void_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def calls_to(self, path: str) -> list[JSON]:
        with self.lock:
            return [body for p, body in self.calls if p == path]

    # -- web-page authorization --------------------------------------------------------------------

    @property
    def oauth_base_url(self) -> str:
        """Yibao's ``wecom.oauth_base_url``: the authorize page is on this emulator too."""
        return self.server.url

    def oauth_code(self, who: Member | Visitor, *, domain: str = "") -> str:
        """A code for ``who``, as the authorize page puts it in the redirect (good once, 5 min);
        ``domain``: the redirect's host, checked against ``trusted_domain`` at the exchange."""
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.oauth_codes[code] = _OAuthCode(who, time.time() + CODE_SECONDS, domain)
        return code

    async def _authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("appid") != self.corp_id:
            return PlainTextResponse("参数错误: appid", status_code=400)
        if q.get("agentid") not in (None, str(self.agent_id)):
            return PlainTextResponse("参数错误: agentid", status_code=400)
        if q.get("response_type") != "code" or q.get("scope") not in (
            "snsapi_base",
            "snsapi_privateinfo",
        ):
            return PlainTextResponse("参数错误: scope", status_code=400)
        redirect = urlsplit(q.get("redirect_uri", ""))
        if redirect.scheme not in ("http", "https") or not redirect.netloc:
            return PlainTextResponse("参数错误: redirect_uri", status_code=400)
        who = self.in_browser
        if who is None:
            return PlainTextResponse("请在企业微信客户端打开链接", status_code=200)
        code = self.oauth_code(who, domain=redirect.netloc)
        query = urlencode({"code": code, "state": q.get("state", "")})
        sep = "&" if redirect.query else ""
        target = urlunsplit(redirect._replace(query=f"{redirect.query}{sep}{query}", fragment=""))
        return RedirectResponse(target, status_code=302)

    def _getuserinfo(self, query: dict[str, str]) -> JSON:
        found = self.oauth_codes.get(query.get("code", ""))
        if found is None or found.used or found.expires_at <= time.time():
            raise ApiError(40029, "invalid code")
        found.used = True
        if self.trusted_domain is not None and found.domain and found.domain != self.trusted_domain:
            raise ApiError(50001, "redirect_url not authorized")
        if isinstance(found.who, Member):
            return {"userid": found.who.userid}
        answer: JSON = {"openid": found.who.openid}
        if found.who.external_userid is not None:
            answer["external_userid"] = found.who.external_userid
        return answer

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
                    raise ApiError(40023, "invalid sub button size")
                for sub in subs:
                    if len(str(sub.get("name", "")).encode()) > 40:
                        raise ApiError(40025, "invalid sub button name size")
                    _check_action(sub, 40027)
            else:
                _check_action(b, 40019)

    # -- the callback client -----------------------------------------------------------------------

    def verify_url(self, *, tamper: bool = False) -> httpx.Response:
        echo = secrets.token_hex(8)
        encrypted = self.aes.encrypt(echo.encode())
        stamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
        signature = "0" * 40 if tamper else _sha1(self.token, stamp, nonce, encrypted)
        query = {"msg_signature": signature, "timestamp": stamp, "nonce": nonce, "echostr": encrypted}
        response = httpx.get(self.callback_url, params=query, timeout=5)
        if response.status_code == 200:
            assert response.text == echo, "the URL check must answer the decrypted echostr"
        return response

    def deliver(self, fields: dict[str, str | int]) -> Callback:
        assert self.callback_url, "set emulator.callback_url to the bot's callback"
        inner = _xml(fields)
        record = Callback()
        for _attempt in range(3):
            stamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
            encrypted = self.aes.encrypt(inner)
            query = {
                "msg_signature": _sha1(self.token, stamp, nonce, encrypted),
                "timestamp": stamp,
                "nonce": nonce,
            }
            body = _xml({"ToUserName": self.corp_id, "AgentID": self.agent_id, "Encrypt": encrypted})
            try:
                response = httpx.post(self.callback_url, params=query, content=body, timeout=self.timeout)
            except httpx.TimeoutException:
                record.statuses.append(0)
                continue
            record.statuses.append(response.status_code)
            if response.status_code == 200 and response.content.strip():
                reply = _fields(response.content)
                assert reply["MsgSignature"] == _sha1(
                    self.token, reply["TimeStamp"], reply["Nonce"], reply["Encrypt"]
                )
            break
        return record

    def delete_member(self, userid: str) -> Callback:
        """The member leaves the company: gone from the directory, and the app hears of it."""
        with self.lock:
            self.members.pop(userid, None)
        fields: dict[str, str | int] = {
            "ToUserName": self.corp_id,
            "FromUserName": "sys",
            "CreateTime": int(time.time()),
            "MsgType": "event",
            "Event": "change_contact",
            "ChangeType": "delete_user",
            "UserID": userid,
        }
        return self.deliver(fields)

    # -- the API -----------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> JSONResponse:
        path = "/cgi-bin/" + request.path_params["path"]
        try:
            result = await self._call(path, request)
        except ApiError as e:
            return JSONResponse({"errcode": e.errcode, "errmsg": e.errmsg, **getattr(e, "extra", {})})
        return JSONResponse({"errcode": 0, "errmsg": "ok", **result})

    async def _call(self, path: str, request: Request) -> JSON:
        raw = await request.body()
        query = dict(request.query_params)
        if path == "/cgi-bin/media/upload":
            parts = _parse_multipart(raw, request.headers.get("content-type", ""))
            upload = parts.get("media")
            body: JSON = {
                "type": query.get("type"),
                "size": len(upload.content) if isinstance(upload, Upload) else 0,
            }
        else:
            body = json.loads(raw) if raw and request.method == "POST" else {}
        with self.lock:
            self.calls.append((path, body))
            if path == "/cgi-bin/gettoken":
                if query.get("corpid") != self.corp_id:
                    raise ApiError(40013, "invalid corpid")
                if query.get("corpsecret") != self.secret:
                    raise ApiError(40001, "invalid secret")
                token = _Token("WC_" + secrets.token_urlsafe(40), time.time() + self.token_ttl)
                self.tokens[token.value] = token
                self.token_fetches += 1
                return {"access_token": token.value, "expires_in": self.token_ttl}
            self._check_token(query.get("access_token"))
            if path == "/cgi-bin/message/send":
                return self._send(body)
            if path == "/cgi-bin/message/update_template_card":
                return self._update_card(body)
            if path == "/cgi-bin/auth/getuserinfo":
                return self._getuserinfo(query)
            if path == "/cgi-bin/menu/create":
                if query.get("agentid") != str(self.agent_id):
                    raise ApiError(40056, "invalid agentid")
                self._check_menu(body)
                self.menus.append(body)
                return {}
            if path == "/cgi-bin/user/get":
                member = self.members.get(query.get("userid", ""))
                if member is None:
                    raise ApiError(60111, "invalid userid")
                return {"userid": member.userid, "name": member.name, "status": 1}
            if path == "/cgi-bin/media/upload":
                if (
                    body["type"] != "image"
                    or not isinstance(upload, Upload)
                    or not upload.content.startswith(b"\x89PNG")
                ):
                    raise ApiError(40004, "invalid media type")
                media_id = secrets.token_hex(16)
                self.media[media_id] = upload.content
                return {"type": "image", "media_id": media_id, "created_at": str(int(time.time()))}
        raise ApiError(48002, "api forbidden")

    def _check_token(self, value: str | None) -> None:
        if not value:
            raise ApiError(41001, "access_token missing")
        token = self.tokens.get(value)
        if token is None:
            raise ApiError(40014, "invalid access_token")
        if token.expires_at <= time.time():
            raise ApiError(42001, "access_token expired")

    def _send(self, body: JSON) -> JSON:
        if body.get("agentid") != self.agent_id:
            raise ApiError(40056, "invalid agentid")
        userids = str(body.get("touser", "")).split("|")
        targets = [self.members[u] for u in userids if u in self.members and self.members[u].visible]
        invalid = "|".join(u for u in userids if u not in {m.userid for m in targets})
        if not targets:
            error = ApiError(81013, "user & party & tag all invalid")
            error.extra = {"invaliduser": invalid}  # type: ignore[attr-defined]
            raise error
        kind = body.get("msgtype")
        response: JSON = {"invaliduser": invalid, "msgid": secrets.token_hex(8)}
        card: Card | None = None
        if kind == "text":
            text = str(body["text"]["content"])
            if len(text.encode()) > TEXT_MAX_BYTES:
                raise ApiError(45002, "content size out of limit")
            message = Message("app", "text", text)
        elif kind == "template_card":
            tc = body["template_card"]
            if tc.get("card_type") != "button_interaction":
                raise ApiError(40008, "invalid message type")
            buttons = [(str(b["key"]), str(b["text"])) for b in tc.get("button_list", [])]
            task_id = str(tc.get("task_id", ""))
            if not 1 <= len(buttons) <= 6 or not task_id or len(task_id) > 128:
                raise ApiError(40058, "invalid template card parameter")
            if task_id in self.task_ids:
                raise ApiError(40058, "task_id duplicated")
            if not tc.get("main_title", {}).get("title"):
                raise ApiError(40058, "main_title.title missing")
            self.task_ids.add(task_id)
            code = secrets.token_hex(8)
            title = str(tc["main_title"]["title"])
            card = Card(task_id, title, str(tc.get("sub_title_text", "")), buttons, code)
            self.codes[code] = (card, False)
            response["response_code"] = code
            message = Message("app", "card", f"{title}\n{card.text}", [(k, t) for k, t in buttons])
        elif kind == "image":
            if body["image"]["media_id"] not in self.media:
                raise ApiError(40007, "invalid media_id")
            message = Message("app", "image", data={"media_id": body["image"]["media_id"]})
        else:
            raise ApiError(40008, "invalid message type")
        now = time.time()
        for member in targets:
            recent = [t for t in member.sent_at if now - t < 3600]
            if sum(1 for t in recent if now - t < 60) >= PER_MINUTE or len(recent) >= PER_HOUR:
                self.dropped += 1  # WeCom's answer is ok all the same
                continue
            member.sent_at = [*recent, now]
            message.at = time.monotonic()
            member.inbox.append(message)
            if card is not None:
                member.cards.append(card)
        return response

    def _update_card(self, body: JSON) -> JSON:
        code = str(body.get("response_code", ""))
        found = self.codes.get(code)
        if found is None or found[1]:
            raise ApiError(40098, "response_code invalid or used")
        card, _ = found
        self.codes[code] = (card, True)
        name = str((body.get("button") or {}).get("replace_name", ""))
        if not name:
            raise ApiError(40058, "button.replace_name missing")
        card.replaced = name
        return {"invaliduser": ""}

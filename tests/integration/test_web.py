"""Yibao's own pages over real HTTP on loopback, on the test run's Redis: the ways in (a /web link,
Telegram's initData signed by this test's own signer, an OAuth identity), the cookie, CSRF, the
headers, and the pages driving the same conversation as the chat (bind with the SMS code from the
file gateway, the account's figures against /balance's, the alert, the unbind), the chat told."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from conftest import Harness, HarnessFactory, person
from pydantic import ValidationError

from bot.config import WebSettings
from bot.http.server import HttpServer
from bot.storage.embedded_redis import EmbeddedRedis
from dialogs.models import Inbound, Reply, UserKey
from platforms import web

RedisFactory = Callable[..., EmbeddedRedis]  # the redis_factory fixture in tests/conftest.py
BOT_TOKEN = "123456:AAwebTestTokenAbcdefghijklmnopqrstuvw"
ALICE = UserKey("console:alice")


class ChatOutlet:
    """Stands in for the user's chat: what the pages told it."""

    def __init__(self) -> None:
        self.told: list[tuple[UserKey, tuple[Reply, ...]]] = []

    async def deliver(self, user: UserKey, replies: tuple[Reply, ...]) -> None:
        self.told.append((user, replies))

    def texts(self) -> str:
        return "\n".join(r.text for _, replies in self.told for r in replies)


class FakeIdentity:
    """An OAuth identity provider as the WeChat and WeCom clients are (``OAuthIdentity``)."""

    def __init__(self) -> None:
        self.codes = {"good-code": UserKey("wx:openid-1")}

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        return "https://open.example.test/authorize?" + urlencode(
            {"redirect_uri": redirect_uri, "state": state}
        )

    async def user_for(self, code: str) -> UserKey | None:
        return self.codes.pop(code, None)


@dataclass
class Pages:
    harness: Harness
    http: httpx.AsyncClient
    chat: ChatOutlet
    cookie: str = ""
    csrf: str = ""
    last: httpx.Response | None = field(default=None)

    async def get(self, path: str, **kw: object) -> httpx.Response:
        headers = {"cookie": f"yb_session={self.cookie}"} if self.cookie else {}
        self.last = r = await self.http.get(path, headers=headers | dict(kw.pop("headers", {})), **kw)  # type: ignore[arg-type]
        self._csrf(r)
        return r

    async def post(
        self, path: str, data: dict[str, str], *, csrf: bool = True, **headers: str
    ) -> httpx.Response:
        if csrf:
            data = {"csrf": self.csrf, **data}
        h = {"cookie": f"yb_session={self.cookie}", **headers} if self.cookie else dict(headers)
        self.last = r = await self.http.post(path, data=data, headers=h)
        self._csrf(r)
        return r

    def _csrf(self, r: httpx.Response) -> None:
        m = re.search(r'name="csrf" value="([^"]+)"', r.text)
        if m:
            self.csrf = m.group(1)

    async def open_link(self, user: str = ALICE) -> httpx.Response:
        """/web in the chat, then the link opened: the session cookie kept."""
        replies = await self.harness.runtime.handle(_inbound(user, "/web"))
        link = replies[0].web_link
        assert link is not None
        r = await self.http.get(urlsplit(link).path)
        assert r.status_code == 303, r.text
        self.cookie = session_cookie(r)
        return r


def session_cookie(r: httpx.Response) -> str:
    for header in r.headers.get_list("set-cookie"):
        if header.startswith("yb_session="):
            return header.split(";", 1)[0].split("=", 1)[1]
    raise AssertionError(f"no session cookie in {r.headers}")


def sign(fields: dict[str, str], token: str = BOT_TOKEN) -> str:
    """initData as Telegram signs it (core.telegram.org/bots/webapps), written here from the spec."""
    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    secret = hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()
    digest = hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()
    return urlencode({**fields, "hash": digest})


def tg_fields(user_id: int = 4242, auth_date: float | None = None) -> dict[str, str]:
    return {
        "auth_date": str(int(auth_date if auth_date is not None else time.time())),
        "query_id": "AAHdF6IQAAAAAN0XohDhrOrc",
        "user": json.dumps({"id": user_id, "first_name": "Test", "language_code": "en"}),
    }


@asynccontextmanager
async def serving(harness: Harness) -> AsyncIterator[Pages]:
    """The harness's pages on a loopback port, and an httpx client for them (English pages)."""
    chat = ChatOutlet()
    runtime = harness.runtime
    runtime.followups.outlets["console"] = chat
    runtime.followups.outlets["tg"] = chat
    server = HttpServer(host="127.0.0.1", port=0)
    server.mount(runtime.web_pages(identities={"wx": FakeIdentity()}).routes())
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30, headers={"accept-language": "en"}) as http:
            yield Pages(harness, http, chat)
    finally:
        await server.stop()


WEB = {"enabled": True, "public_url": "https://yibao.example.test"}


@pytest.fixture
async def pages(make_harness: HarnessFactory) -> AsyncIterator[Pages]:
    harness = await make_harness(web=WEB, telegram={"token": BOT_TOKEN})
    async with serving(harness) as served:
        yield served


def _inbound(user: str, text: str) -> Inbound:
    return Inbound(user=UserKey(user), text=text, locale="en")


async def test_a_link_opens_once_into_a_safe_cookie(pages: Pages) -> None:
    replies = await pages.harness.runtime.handle(_inbound(ALICE, "/web"))
    link = replies[0].web_link
    assert link is not None
    assert link.startswith("https://yibao.example.test/web/l/")
    assert "10 minutes" in replies[0].text
    path = urlsplit(link).path
    first = await pages.http.get(path)
    assert first.status_code == 303
    assert first.headers["location"] == web.ACCOUNT  # the token is not carried on
    cookie = next(h for h in first.headers.get_list("set-cookie") if h.startswith("yb_session="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=lax", "path=/web"} <= flags
    again = await pages.http.get(path)
    assert again.status_code == 403
    assert "used already or has expired" in again.text
    # The token is kept only as its hash.
    dump = await pages.harness.dump()
    assert not any(path.rsplit("/", 1)[1] in key + value for key, value in dump.items())


async def test_an_expired_link_is_refused(pages: Pages) -> None:
    replies = await pages.harness.runtime.handle(_inbound(ALICE, "/web"))
    link = replies[0].web_link
    assert link is not None
    keys = [k async for k in pages.harness.redis.scan_iter(match="yibao:web:l:*")]
    assert len(keys) == 1
    assert 590 <= await pages.harness.redis.ttl(keys[0]) <= 600
    await pages.harness.redis.pexpire(keys[0], 1)  # ten minutes on
    await asyncio.sleep(0.01)
    r = await pages.http.get(urlsplit(link).path)
    assert r.status_code == 403


async def test_every_page_has_the_strict_headers(pages: Pages) -> None:
    await pages.open_link()
    for path in (web.BIND, web.PREFIX + "/nowhere", web.LINK.format(token="x" * 43)):
        r = await pages.get(path)
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "form-action 'self'" in csp
        assert "base-uri 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "script-src" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cache-control"] == "no-store"
    assert (await pages.get(web.PREFIX + "/nowhere")).status_code == 404
    r = await pages.http.delete(web.BIND)
    assert r.status_code == 405
    assert "cannot be used that way" in r.text


async def test_a_post_without_the_csrf_token_is_refused(pages: Pages) -> None:
    await pages.open_link()
    assert (await pages.get(web.BIND)).status_code == 200
    r = await pages.post(web.BIND, {"say": "/bind"}, csrf=False)
    assert r.status_code == 403
    assert "<html" in r.text
    r = await pages.post(web.BIND, {"say": "/bind", "csrf": "x" * 43}, csrf=False)
    assert r.status_code == 403
    await pages.harness.say("/lang zh")  # a refusal speaks the user's chosen language
    r = await pages.post(web.BIND, {"say": "/bind"}, csrf=False)
    assert r.status_code == 403
    assert "请在聊天中发送 /web" in r.text
    r = await pages.post(web.BIND, {"say": "/bind"}, origin="https://evil.example")
    assert r.status_code == 403
    r = await pages.post(web.BIND, {"say": "/bind"}, **{"sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    state = await pages.harness.runtime.store.peek(ALICE)
    assert state.session.state.value == "idle"  # none of them reached the conversation


async def test_bind_on_the_page_with_the_sms_code(pages: Pages) -> None:
    who = person("normal")
    await pages.open_link()
    r = await pages.get(web.ACCOUNT)
    assert r.status_code == 303
    assert r.headers["location"] == web.BIND
    assert "Start binding" in (await pages.get(web.BIND)).text
    r = await pages.post(web.BIND, {"say": "/bind"})
    assert "By continuing you agree" in r.text
    assert 'autocomplete="off"' in r.text
    assert 'inputmode="numeric"' in r.text
    assert "delete that message yourself" not in r.text
    r = await pages.post(web.BIND, {"name": who.name, "id_number": who.id_number})
    assert "Step 3 of 3" in r.text, r.text
    assert who.id_number not in r.text
    r = await pages.post(web.BIND, {"code": pages.harness.last_code()})
    assert "Your account is bound" in r.text
    state = await pages.harness.runtime.store.peek(ALICE)
    assert state.profile.binding is not None
    told = pages.chat.texts()
    assert "On your Yibao page" in told
    assert "Your account is bound" in told
    assert who.id_number not in told
    dump = json.dumps(await pages.harness.dump(), ensure_ascii=False)
    assert who.id_number not in dump
    assert who.name not in dump
    assert ALICE not in dump.replace("{console:alice}", "")


async def test_the_account_page_shows_balance_s_figures(pages: Pages) -> None:
    who = person("normal")
    await pages.harness.bind(who)
    balance = await pages.harness.say("/balance")
    await pages.open_link()
    r = await pages.get(web.ACCOUNT)
    assert r.status_code == 200
    personal = re.search(r'id="personal">([^<]+)<', r.text)
    used = re.search(r'id="pooled-used">([^<]+)<', r.text)
    remaining = re.search(r'id="pooled-remaining">([^<]+)<', r.text)
    assert personal
    assert used
    assert remaining
    for figure in (personal, used, remaining):
        assert figure.group(1) in balance
    assert "<svg" in r.text
    assert "<polyline" in r.text
    assert "<table" in r.text
    assert "Latest payments" in r.text
    if 'value="/history more"' in r.text:
        more = await pages.post(web.ACCOUNT, {"say": "/history more"})
        assert more.status_code == 200
        assert "More transactions" in more.text


async def test_an_alert_set_on_the_page_is_told_in_the_chat(pages: Pages) -> None:
    await pages.harness.bind(person("normal"))
    await pages.open_link()
    assert "No alert is set" in (await pages.get(web.ALERT)).text
    r = await pages.post(web.ALERT, {"amount": "100"})
    assert "¥100.00" in r.text
    state = await pages.harness.runtime.store.peek(ALICE)
    assert str(state.profile.threshold) == "100.00"
    assert "¥100.00" in pages.chat.texts()
    assert "On your Yibao page" in pages.chat.texts()
    r = await pages.post(web.ALERT, {"amount": "abc"})
    assert "not an amount I understand" in r.text or "abc" in r.text
    told = len(pages.chat.told)
    assert len(pages.chat.told) == told  # nothing changed, nothing said
    r = await pages.post(web.ALERT, {"say": "/alert off"})
    assert (await pages.harness.runtime.store.peek(ALICE)).profile.threshold is None
    assert len(pages.chat.told) == told + 1


async def test_unbind_on_the_page_erases_and_ends_the_session(pages: Pages) -> None:
    who = person("normal")
    await pages.harness.bind(who)
    await pages.open_link()
    r = await pages.get(web.UNBIND)
    assert "110" in r.text
    assert who.id_number not in r.text
    r = await pages.post(web.UNBIND, {"say": "/unbind yes"})
    assert "everything I kept about you are erased" in r.text
    state = await pages.harness.runtime.store.peek(ALICE)
    assert state.profile.binding is None
    assert any(reply.erased for _, replies in pages.chat.told for reply in replies)
    assert (await pages.get(web.ACCOUNT)).status_code == 403  # the session went with the rest
    dump = await pages.harness.dump()
    assert not [k for k in dump if "{console:alice}" in k]


async def test_unbind_in_the_chat_ends_the_page_sessions(pages: Pages) -> None:
    await pages.harness.bind(person("normal"))
    await pages.open_link()
    assert "sessions open on Yibao's page: 1 (deleted in 30 minutes)" in await pages.harness.say("/mydata")
    assert (await pages.get(web.ALERT)).status_code == 200
    await pages.harness.say("/unbind")
    await pages.harness.say("/unbind yes")
    assert (await pages.get(web.ALERT)).status_code == 403


async def test_telegram_init_data(pages: Pages) -> None:
    entry = await pages.http.get(web.TELEGRAM_ENTRY)
    csp = entry.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce
    assert f'nonce="{nonce.group(1)}"' in entry.text
    assert "script-src 'nonce-" in csp
    assert "https://telegram.org/js/telegram-web-app.js" in csp
    assert re.findall(r"<script[^>]*src=\"([^\"]+)\"", entry.text) == [
        "https://telegram.org/js/telegram-web-app.js"
    ]

    async def post(init_data: str) -> httpx.Response:
        return await pages.http.post(web.TELEGRAM_SESSION, data={"init_data": init_data})

    good = sign(tg_fields())
    tampered = good.replace("4242", "4243")
    assert (await post(tampered)).status_code == 403
    assert (
        await post(sign(tg_fields(), token="654321:AAanotherBotTokenAbcdefghijklmnopqrs"))
    ).status_code == 403
    assert (await post(sign(tg_fields(auth_date=time.time() - 3700)))).status_code == 403  # max_age 3600
    assert (await post(sign({"auth_date": str(int(time.time()))}))).status_code == 403  # no user
    assert (await post("")).status_code == 403
    r = await post(good)
    assert r.status_code == 200
    assert r.json() == {"next": web.ACCOUNT}
    pages.cookie = session_cookie(r)
    r = await pages.get(web.BIND)
    assert r.status_code == 200
    await pages.post(web.BIND, {"say": "/bind"})
    state = await pages.harness.runtime.store.peek(UserKey("tg:4242"))  # the chat's own key
    assert state.session.state.value == "bind_name"


async def test_oauth_entry_checks_its_state(pages: Pages) -> None:
    r = await pages.http.get(web.WECHAT_ENTRY)
    assert r.status_code == 302
    to = urlsplit(r.headers["location"])
    query = parse_qs(to.query)
    assert query["redirect_uri"] == ["https://yibao.example.test/web/wx"]
    state = query["state"][0]
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("yb_oauth="))
    assert "httponly" in cookie.lower()
    assert "path=/web/wx" in cookie.lower()
    jar = {"cookie": f"yb_oauth={state}"}
    wrong = await pages.http.get(
        web.WECHAT_ENTRY, params={"code": "good-code", "state": "x" * 32}, headers=jar
    )
    assert wrong.status_code == 403
    r = await pages.http.get(web.WECHAT_ENTRY, params={"code": "good-code", "state": state}, headers=jar)
    assert r.status_code == 303
    assert r.headers["location"] == web.ACCOUNT
    pages.cookie = session_cookie(r)
    assert (await pages.get(web.ACCOUNT)).headers["location"] == web.BIND  # wx:openid-1, not bound
    used = await pages.http.get(web.WECHAT_ENTRY, params={"code": "good-code", "state": state}, headers=jar)
    assert used.status_code == 403
    assert (await pages.http.get(web.WECOM_ENTRY)).status_code == 404  # no WeCom identity here


async def test_errors_are_pages_in_the_user_s_language(pages: Pages) -> None:
    r = await pages.http.get(web.PREFIX + "/nowhere", headers={"accept-language": "zh-CN,zh;q=0.9"})
    assert r.status_code == 404
    assert "没有这个页面" in r.text
    r = await pages.http.get(web.ACCOUNT, headers={"accept-language": "en-US"})
    assert r.status_code == 403
    assert "Send /web in the chat" in r.text
    for _ in range(30):
        await pages.http.get(web.LINK.format(token="y" * 43))
    r = await pages.http.get(web.LINK.format(token="y" * 43))
    assert r.status_code == 429
    assert r.headers["retry-after"] == "60"


async def test_a_redis_outage_is_a_503_page(
    make_harness: HarnessFactory, redis_factory: RedisFactory
) -> None:
    server = redis_factory(tcp=True)
    harness = await make_harness(web=WEB, redis={"url": server.url, "connect_wait_seconds": 0})
    async with serving(harness) as pages:
        await pages.open_link()
        server.stop()
        r = await pages.get(web.ACCOUNT)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "5"
        assert "try again in a moment" in r.text
        assert "default-src 'none'" in r.headers["content-security-policy"]


async def test_the_platform_choice_is_buttons_on_the_page(make_harness: HarnessFactory) -> None:
    two = {
        "platforms": [
            {"name": "beijing", "label": "北京医保", "regions": ["11"]},
            {"name": "shanghai", "label": "上海医保", "regions": ["31"]},
        ]
    }
    harness = await make_harness(web=WEB, insurance=two)
    who = person("low_balance")  # a Shanghai ID number
    async with serving(harness) as pages:
        await pages.open_link()
        await pages.get(web.BIND)
        await pages.post(web.BIND, {"say": "/bind"})
        r = await pages.post(web.BIND, {"name": who.name, "id_number": who.id_number})
        assert "Step 3 of 4" in r.text
        assert re.findall(r'name="say" value="(/platform [a-z]+)"', r.text) == [
            "/platform shanghai",
            "/platform beijing",
        ]
        again = await pages.get(web.BIND)  # the choices are restated on a reload
        assert 'value="/platform shanghai"' in again.text
        r = await pages.post(web.BIND, {"say": "/platform shanghai"})
        assert "Step 4 of 4" in r.text
        r = await pages.post(web.BIND, {"code": harness.last_code()})
        assert "Your account is bound" in r.text


async def test_help_lists_web_only_when_the_pages_are_on(make_harness: HarnessFactory) -> None:
    off = await make_harness()
    assert "/web" not in await off.say("/help")
    assert "I don't know the command /web" in await off.say("/web")
    on = await make_harness(web=WEB)
    assert "/web — Yibao's page" in await on.say("/help")


async def test_the_page_logs_no_id_number(pages: Pages, caplog: pytest.LogCaptureFixture) -> None:
    who = person("normal")
    caplog.set_level(logging.DEBUG)
    await pages.open_link()
    await pages.get(web.BIND)
    await pages.post(web.BIND, {"say": "/bind"})
    await pages.post(web.BIND, {"name": who.name, "id_number": who.id_number})
    code = pages.harness.last_code()
    await pages.post(web.BIND, {"code": code})
    assert "Your account is bound" in (pages.last.text if pages.last else "")
    ours = [
        r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    ]  # not the test's client
    logged = "\n".join(r.getMessage() for r in ours)
    assert who.id_number not in logged
    assert code not in logged
    assert pages.cookie not in logged


async def test_the_face_check_is_a_link_then_a_button_on_the_page(make_harness: HarnessFactory) -> None:
    face = {"platforms": [{"name": "sandbox", "label": "Sandbox", "sandbox_profile": "face_check"}]}
    harness = await make_harness(web=WEB, insurance=face)
    who = person("normal")
    async with serving(harness) as pages:
        await pages.open_link()
        await pages.get(web.BIND)
        await pages.post(web.BIND, {"say": "/bind"})
        r = await pages.post(web.BIND, {"name": who.name, "id_number": who.id_number})
        assert re.search(
            r'<a href="https://sandbox\.yibao\.invalid/face-check/[^"]+" rel="noopener noreferrer">', r.text
        )
        assert r.text.count('value="/facecheck"') == 1
        harness.runtime.sandboxes["sandbox"].finish_face_check(who.member_id, True)
        r = await pages.post(web.BIND, {"say": "/facecheck"})
        assert 'id="code"' in r.text
        r = await pages.post(web.BIND, {"code": harness.last_code()})
        assert "Your account is bound" in r.text


async def test_a_platform_in_maintenance_is_a_503_account_page(pages: Pages) -> None:
    who = person("normal")
    await pages.harness.bind(who)
    await pages.open_link()
    pages.harness.runtime.sandboxes["sandbox"].set_maintenance(who.id_number[:6], True)
    pages.harness.clock.advance(120)  # past the balance cache
    r = await pages.get(web.ACCOUNT)
    assert r.status_code == 503
    assert 'id="personal"' not in r.text  # no figure it is not sure of
    assert "maintenance" in r.text
    assert "<nav>" in r.text  # bound: the pages' menu
    home = await pages.get(web.PREFIX + "/")
    assert home.status_code == 303


async def test_the_domain_check_files_are_served_at_the_root(make_harness: HarnessFactory) -> None:
    """WeChat's and WeCom's consoles fetch a file from the domain's root before OAuth may come back
    to it: served as configured, plain text, and nothing else at the root."""
    files = {"MP_verify_AbC123xyz.txt": "AbC123xyz", "WW_verify_q9Z.txt": "q9Zcontent"}
    harness = await make_harness(web={**WEB, "verification_files": files}, telegram={"token": BOT_TOKEN})
    async with serving(harness) as served:
        for name, content in files.items():
            r = await served.http.get(f"/{name}")
            assert r.status_code == 200
            assert r.text == content
            assert r.headers["content-type"].startswith("text/plain")
        assert (await served.http.get("/MP_verify_other.txt")).status_code == 404
        assert (await served.http.post("/MP_verify_AbC123xyz.txt")).status_code == 405


@pytest.mark.parametrize(
    "files",
    [{"../etc/passwd": "x"}, {"MP_verify_a.txt": "<script>"}, {"verify.txt": "a"}, {"MP_verify_a.html": "a"}],
)
def test_a_domain_check_file_must_look_like_one(files: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        WebSettings(verification_files=files)


async def test_behind_a_trusted_proxy_the_limit_counts_each_client(make_harness: HarnessFactory) -> None:
    """The pages sit behind the operator's TLS proxy: a request from it (``http.trusted_proxies``,
    here loopback) is counted by the client its X-Forwarded-For names, so one busy user does not use
    up everybody's hand-shakes; from a peer that is not trusted, the header is ignored."""
    harness = await make_harness(web=WEB, telegram={"token": BOT_TOKEN})
    async with serving(harness) as pages:
        link = web.LINK.format(token="z" * 43)
        for _ in range(30):
            await pages.http.get(link, headers={"x-forwarded-for": "203.0.113.7"})
        blocked = await pages.http.get(link, headers={"x-forwarded-for": "203.0.113.7"})
        assert blocked.status_code == 429
        other = await pages.http.get(link, headers={"x-forwarded-for": "198.51.100.9"})
        assert other.status_code != 429

    untrusting = HttpServer(host="127.0.0.1", port=0, trusted_proxies=["192.0.2.1"])
    untrusting.mount(harness.runtime.web_pages().routes())
    await untrusting.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{untrusting.port}", timeout=30) as http:
            # Loopback is now just a client: whatever address it claims, it is 127.0.0.1, which has
            # had no hand-shake yet, until it has had 30.
            for n in range(30):
                claimed = {"x-forwarded-for": f"198.51.100.{n}"}
                assert (await http.get(link, headers=claimed)).status_code != 429
            assert (await http.get(link, headers={"x-forwarded-for": "198.51.100.200"})).status_code == 429
    finally:
        await untrusting.stop()

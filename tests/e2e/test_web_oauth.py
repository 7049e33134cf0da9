"""Who opened a page from WeChat or WeCom (``platforms.wechat.oauth``, ``platforms.wecom.oauth``):
the clients against the WeChat and WeCom emulators over real HTTP on loopback, their tokens in the
test run's Redis. The browser's side of the dance (authorize → 302 with the code) is followed with
httpx, as a browser would, without following the redirect to the page itself."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
from botapi_emulator import LoopbackServer
from browser import browser  # noqa: F401 - the fixture
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from wechat_emulator import WechatEmulator
from wecom_emulator import Visitor, WecomEmulator

from bot.storage.keys import Keys
from bot.storage.wechat import RedisTokenStore
from platforms.tencent.api import ApiUnavailable
from platforms.web.oauth import OAuthIdentity
from platforms.wechat.api import WechatApi
from platforms.wechat.oauth import WechatOAuth
from platforms.wecom.api import WecomApi
from platforms.wecom.oauth import WecomOAuth

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

PAGE = "https://yibao.example.com/web/wx?from=menu"


@pytest.fixture(scope="module")
def wx() -> Iterator[WechatEmulator]:
    with WechatEmulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def wc() -> Iterator[WecomEmulator]:
    with WecomEmulator() as emu:
        yield emu


@pytest.fixture
def keys() -> Keys:
    return Keys(f"oauth-{secrets.token_hex(4)}")


@pytest.fixture
async def wechat(wx: WechatEmulator, redis: aioredis.Redis, keys: Keys) -> AsyncIterator[WechatOAuth]:
    tokens = RedisTokenStore(redis, keys.wechat_token(wx.app_id), keys.wechat_token_lock(wx.app_id))
    api = WechatApi(app_id=wx.app_id, app_secret=wx.app_secret, base_url=wx.url, tokens=tokens)
    yield WechatOAuth(api, oauth_base_url=wx.oauth_base_url)
    await api.aclose()


@pytest.fixture
async def wecom(wc: WecomEmulator, redis: aioredis.Redis, keys: Keys) -> AsyncIterator[WecomOAuth]:
    tokens = RedisTokenStore(
        redis, keys.wecom_token(wc.corp_id, wc.agent_id), keys.wecom_token_lock(wc.corp_id, wc.agent_id)
    )
    api = WecomApi(corp_id=wc.corp_id, agent_id=wc.agent_id, secret=wc.secret, base_url=wc.url, tokens=tokens)
    yield WecomOAuth(api, oauth_base_url=wc.oauth_base_url)
    await api.aclose()


def _our_log(caplog: pytest.LogCaptureFixture) -> str:
    """Yibao's own log lines (httpx's request lines are silenced by ``bot.logs`` in a real run)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("platforms"))


async def _browser_code(identity: OAuthIdentity, redirect_uri: str, state: str) -> str:
    """What the browser does: open the authorize link, land on the redirect with the code."""
    async with httpx.AsyncClient() as http:
        answer = await http.get(identity.authorize_url(redirect_uri, state), follow_redirects=False)
    assert answer.status_code == 302, answer.text
    target = urlsplit(answer.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == redirect_uri.split("?")[0]
    query = parse_qs(target.query)
    assert query["state"] == [state]
    assert query["from"] == ["menu"]  # the page's own query is kept
    return query["code"][0]


# -- WeChat -------------------------------------------------------------------------------------------


def test_the_wechat_authorize_link_is_wechats_shape(wechat: WechatOAuth) -> None:
    url = wechat.authorize_url(PAGE, "st4te")
    assert url == (
        f"{wechat.oauth_base_url}/connect/oauth2/authorize?appid={wechat.api.app_id}"
        "&redirect_uri=https%3A%2F%2Fyibao.example.com%2Fweb%2Fwx%3Ffrom%3Dmenu"
        "&response_type=code&scope=snsapi_base&state=st4te#wechat_redirect"
    )


async def test_a_wechat_code_gives_the_chats_user_once(
    wechat: WechatOAuth, wx: WechatEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    user = wx.user()
    wx.in_browser = user
    code = await _browser_code(wechat, PAGE, "s1")
    assert await wechat.user_for(code) == f"wx:{user.openid}"  # the chat's own key
    caplog.set_level(logging.INFO)
    assert await wechat.user_for(code) is None  # 40163: a code is good once
    assert await wechat.user_for("never-issued") is None  # 40029
    ours = _our_log(caplog)
    assert "40163" in ours
    assert "40029" in ours
    assert code not in ours


async def test_an_expired_or_snapshot_wechat_code_is_no_one(wechat: WechatOAuth, wx: WechatEmulator) -> None:
    user = wx.user()
    old = wx.oauth_code(user)
    wx.advance(301)
    try:
        assert await wechat.user_for(old) is None  # 5 minutes
    finally:
        wx.advance(-301)
    assert await wechat.user_for(wx.oauth_code(user, snapshot=True)) is None
    assert await wechat.user_for("") is None


async def test_wechat_busy_is_try_again_later_and_keeps_the_code(
    wechat: WechatOAuth, wx: WechatEmulator
) -> None:
    user = wx.user()
    code = wx.oauth_code(user)
    wx.fail_next("/sns/oauth2/access_token", -1)
    with pytest.raises(ApiUnavailable):  # the page says "try again", not "who are you?"
        await wechat.user_for(code)
    assert await wechat.user_for(code) == f"wx:{user.openid}"


async def test_the_wechat_authorize_page_outside_wechat_and_off_domain(
    wechat: WechatOAuth, wx: WechatEmulator
) -> None:
    wx.in_browser = None
    async with httpx.AsyncClient() as http:
        outside = await http.get(wechat.authorize_url(PAGE, "s"), follow_redirects=False)
        assert outside.status_code == 200
        assert "微信客户端" in outside.text
        wx.in_browser, wx.oauth_domain = wx.user(), "other.example.com"
        try:
            off = await http.get(wechat.authorize_url(PAGE, "s"), follow_redirects=False)
        finally:
            wx.oauth_domain = None
    assert off.status_code == 400
    assert "10003" in off.text


# -- WeCom --------------------------------------------------------------------------------------------


def test_the_wecom_authorize_link_names_the_corp_and_the_app(wecom: WecomOAuth) -> None:
    url = wecom.authorize_url("https://yibao.example.com/web/wecom", "st")
    assert url.startswith(f"{wecom.oauth_base_url}/connect/oauth2/authorize?appid={wecom.api.corp_id}&")
    assert url.endswith(f"&state=st&agentid={wecom.api.agent_id}#wechat_redirect")
    assert "&scope=snsapi_base&" in url


async def test_a_wecom_code_gives_the_members_user_once(
    wecom: WecomOAuth, wc: WecomEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    member = wc.member("zhang.wei")
    wc.in_browser = member
    code = await _browser_code(wecom, "https://yibao.example.com/web/wecom?from=menu", "s2")
    wc.void_tokens()  # a token refused on the way (40014) is replaced, and the code still works
    assert await wecom.user_for(code) == f"wecom:{wc.corp_id}:zhang.wei"
    caplog.set_level(logging.INFO)
    assert await wecom.user_for(code) is None  # used
    assert await wecom.user_for("never-issued") is None
    ours = _our_log(caplog)
    assert "40029" in ours
    assert code not in ours


async def test_someone_outside_the_company_is_not_a_wecom_user(wecom: WecomOAuth, wc: WecomEmulator) -> None:
    assert await wecom.user_for(wc.oauth_code(Visitor("oWx123"))) is None
    assert await wecom.user_for(wc.oauth_code(Visitor("oWx456", external_userid="wmEXT"))) is None


async def test_a_page_off_the_apps_trusted_domain_gets_no_member(
    wecom: WecomOAuth, wc: WecomEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    wc.trusted_domain = "yibao.example.com"
    try:
        code = wc.oauth_code(wc.member("li.na"), domain="evil.example.com")
        assert await wecom.user_for(code) is None
        good = wc.oauth_code(wc.member("li.na"), domain="yibao.example.com")
        assert await wecom.user_for(good) == f"wecom:{wc.corp_id}:li.na"
    finally:
        wc.trusted_domain = None
    assert "50001" in caplog.text


# -- the whole dance in a real browser ------------------------------------------------------------------


def test_a_browser_follows_the_wechat_dance_to_a_page_that_knows_the_user(
    browser: WebDriver,  # noqa: F811
    wx: WechatEmulator,
    redis_url: str,
) -> None:
    """A stand-in for the pages' WeChat entry: without a code it sends the browser to WeChat's
    authorize page; with one (and its state) it asks WechatOAuth who that is."""
    states: set[str] = set()

    async def entry(request: Request) -> Response:
        here = str(request.url.replace(query=""))
        client = aioredis.from_url(redis_url)
        keys = Keys(f"oauth-page-{secrets.token_hex(4)}")
        tokens = RedisTokenStore(client, keys.wechat_token(wx.app_id), keys.wechat_token_lock(wx.app_id))
        api = WechatApi(app_id=wx.app_id, app_secret=wx.app_secret, base_url=wx.url, tokens=tokens)
        oauth = WechatOAuth(api, oauth_base_url=wx.oauth_base_url)
        try:
            code, state = request.query_params.get("code"), request.query_params.get("state", "")
            if code is None:
                state = secrets.token_urlsafe(8)
                states.add(state)
                return RedirectResponse(oauth.authorize_url(here, state), status_code=302)
            if state not in states:
                return HTMLResponse("<p>bad state</p>", status_code=400)
            user = await oauth.user_for(code)
            return HTMLResponse(f'<p id="who">{user}</p>')
        finally:
            await api.aclose()
            await client.aclose()

    pages = LoopbackServer(Starlette(routes=[Route("/web/wx", entry)]), name="pages")
    pages.start()
    try:
        user = wx.user()
        wx.in_browser = user
        browser.get(f"{pages.url}/web/wx")
        assert browser.find_element("id", "who").text == f"wx:{user.openid}"
        assert "code=" in browser.current_url  # the pages will trade it for a cookie and redirect
        browser.refresh()  # the same code again: WeChat says 40163
        assert browser.find_element("id", "who").text == "None"
    finally:
        pages.stop()

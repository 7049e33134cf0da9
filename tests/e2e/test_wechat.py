"""Yibao on a WeChat Official Account as its users and operators meet it: ``yibao run`` as a real
process, its callback called by the WeChat emulator over real HTTP on loopback (signed, and in safe
mode encrypted, with WeChat's retries), its API calls answered by the emulator with WeChat's rules
(tokens that expire, the 48-hour window, subscription messages)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from botapi_emulator import BotApiEmulator
from chat_process import BotProcess, clean_env, demo, free_port, start_run, yibao_command
from wechat_emulator import WechatEmulator, WxUser
from wecom_emulator import WecomEmulator

from bot.crypto.pii import new_key_text

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
TEMPLATE = "TPL_low_balance"
PUBLIC = "https://yibao.example.com"
TWO_PLATFORMS = json.dumps(
    [
        {"name": "sandbox", "label": "Sandbox 沙箱"},
        {"name": "beijing", "label": "北京医保", "regions": ["11"]},
    ]
)


@dataclass
class Bot(BotProcess):
    port: int


BotFactory = Callable[..., Bot]


@pytest.fixture(params=["plaintext", "safe"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def emulator(mode: str) -> Iterator[WechatEmulator]:
    with WechatEmulator(encoding_aes_key=AES_KEY if mode == "safe" else None) as emu:
        yield emu


@pytest.fixture
def start_bot(tmp_path: Path, redis_url: str, emulator: WechatEmulator, mode: str) -> Iterator[BotFactory]:
    bots: list[Bot] = []
    key = new_key_text()
    prefix = f"wxe2e-{mode}"

    def start(name: str = "a", **env: str) -> Bot:
        log = tmp_path / f"bot-{name}.log"
        sms = tmp_path / "sms.jsonl"
        port = int(env.get("YIBAO_HTTP__LISTEN_PORT") or free_port())
        settings = {
            "YIBAO_WECHAT__APP_ID": emulator.app_id,
            "YIBAO_WECHAT__APP_SECRET": emulator.app_secret,
            "YIBAO_WECHAT__TOKEN": emulator.token,
            "YIBAO_WECHAT__API_BASE_URL": emulator.url,
            "YIBAO_WECHAT__ALERT_TEMPLATE_ID": TEMPLATE,
            "YIBAO_HTTP__LISTEN_PORT": str(port),
            "YIBAO_REDIS__URL": redis_url,
            "YIBAO_REDIS__PREFIX": prefix,
            "YIBAO_SECURITY__PII_KEY": key,
            "YIBAO_SMS__GATEWAY": "file",
            "YIBAO_SMS__FILE_PATH": str(sms),
            "YIBAO_GENERAL__DATA_DIR": str(tmp_path / f"data-{name}"),
            "YIBAO_LOGGING__FILE": str(log),
            "YIBAO_LOGGING__LEVEL": "DEBUG",
            "YIBAO_INSURANCE__BALANCE_CACHE_SECONDS": "0",
            "YIBAO_ALERTS__QUIET_HOURS": "",
            "YIBAO_ALERTS__POLL_SECONDS": "0.2",
            **({"YIBAO_WECHAT__ENCODING_AES_KEY": AES_KEY} if mode == "safe" else {}),
            **env,
        }
        process = start_run(tmp_path, settings, log, r"serving .*WeChat on ")
        bot = Bot(process, log, sms, port)
        bots.append(bot)
        emulator.callback_url = f"http://127.0.0.1:{port}/wechat"
        return bot

    yield start
    for bot in bots:
        bot.stop()


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


def bind(user: WxUser, bot: Bot, scenario: str, *, zh: bool) -> None:
    """The whole bind, the platform chosen by a click on a menu message."""
    who = demo(scenario)
    consent = user.converse("/bind", "第 1 步" if zh else "Step 1 of")
    assert ("聊天记录" if zh else "stays in this chat's history") in consent.text  # WeChat cannot delete it
    user.converse(who.name, "第 2 步" if zh else "Step 2 of")
    before = len(user.inbox)
    user.says(who.id_number)
    choice = user.wait_for("北京医保", after=before)
    assert choice.kind == "msgmenu"  # clickable choices, through the customer-service API
    sent = bot.sms_count()
    before = len(user.inbox)
    user.chooses("Sandbox")
    user.wait_for("短信" if zh else "SMS", after=before)
    before = len(user.inbox)
    user.says(bot.code_for(who.phone, after=sent))
    user.wait_for("已绑定" if zh else "Your account is bound", after=before)


def test_the_whole_conversation_in_chinese_and_english(
    emulator: WechatEmulator, start_bot: BotFactory, sync_redis: redis.Redis
) -> None:
    bot = start_bot(YIBAO_INSURANCE__PLATFORMS=TWO_PLATFORMS)

    zh = emulator.user()
    welcome = zh.follows().passive
    assert welcome is not None
    assert "医保" in welcome.text
    bind(zh, bot, "normal", zh=True)
    assert "个人账户：¥" in zh.converse("/balance", "个人账户").text
    assert "个人账户：¥" in zh.converse("我的医保还剩多少?", "个人账户").text
    before = len(zh.inbox)
    zh.says("/chart")  # the caption passively, the picture uploaded and sent as an image message
    picture = zh.wait_for("", after=before + 1, timeout=30)
    assert picture.kind == "image"
    assert emulator.media[picture.data["media_id"]].startswith(b"\x89PNG")
    assert "近 12 个月" in zh.inbox[before].text
    before = len(zh.inbox)
    zh.clicks_menu("YIBAO_HISTORY")  # the account's menu: 消费记录
    zh.wait_for("¥", after=before)
    assert "¥100.00" in zh.converse("/alert 100", "¥100.00").text
    before = len(zh.inbox)
    zh.says("/unbind")
    question = zh.wait_for("确定吗", after=before)
    assert question.kind == "msgmenu"
    before = len(zh.inbox)
    zh.chooses("确认解绑")
    zh.wait_for("已删除", after=before)

    en = emulator.user()
    en.follows()
    en.converse("/lang en", "English")
    bind(en, bot, "low_balance", zh=False)
    assert "Personal account (个人账户): ¥32.63" in en.converse("how much is left?", "Personal account").text
    # The numbered answer works as well as a click, in a passive reply when the window is full.
    before = len(en.inbox)
    en.says("/unbind")
    en.wait_for("Are you sure", after=before)
    before = len(en.inbox)
    en.says("1")
    en.wait_for("erased", after=before)

    assert sync_redis.keys(f"*wx:{zh.openid}*") == []
    assert sync_redis.keys(f"*wx:{en.openid}*") == []
    scrape = httpx.get(f"http://127.0.0.1:{bot.port}/metrics", timeout=5).text
    assert 'yibao_binds_completed_total{insurer="sandbox",platform="wx"} 2.0' in scrape
    assert re.search(r'yibao_updates_total\{kind="balance",platform="wx"\} [1-9]', scrape)
    assert re.search(r'yibao_chat_sends_total\{platform="wx",result="ok"\} [1-9]', scrape)
    ready = httpx.get(f"http://127.0.0.1:{bot.port}/readyz", timeout=5)
    assert ready.status_code == 200
    assert "wechat" in ready.text
    assert bot.stop() == 0
    log = bot.log.read_text(encoding="utf-8")
    for who in (demo("normal"), demo("low_balance")):
        assert who.id_number not in log
        assert who.phone not in log
        assert who.name not in log
    for line in bot.sms.read_text(encoding="utf-8").splitlines():
        code = re.search(r"\b(\d{6})\b", json.loads(line)["text"])[1]  # type: ignore[index]
        assert code not in log
    assert "我的医保还剩多少" not in log
    assert zh.openid not in log  # openids are written as keyed hashes
    assert en.openid not in log
    assert "wx:#" in log


def test_a_wrong_signature_and_a_replayed_nonce_are_refused(
    emulator: WechatEmulator, start_bot: BotFactory, mode: str
) -> None:
    start_bot()
    user = emulator.user()
    user.following = True
    inner = (
        f"<xml><ToUserName><![CDATA[{emulator.account}]]></ToUserName>"
        f"<FromUserName><![CDATA[{user.openid}]]></FromUserName><CreateTime>{int(time.time())}</CreateTime>"
        "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[/help]]></Content><MsgId>77</MsgId></xml>"
    ).encode()
    forged = emulator.deliver_raw(inner, signature="0" * 40)
    assert forged.statuses == [403]
    stamp, nonce = str(int(time.time())), "1234567"
    first = emulator.deliver_raw(inner, nonce=nonce, timestamp=stamp)
    assert first.statuses == [200]
    again = emulator.deliver_raw(inner.replace(b"<MsgId>77", b"<MsgId>78"), nonce=nonce, timestamp=stamp)
    assert again.statuses == [403]  # the same nonce again: a replay, whatever it carries
    old = emulator.deliver_raw(
        inner.replace(b"<MsgId>77", b"<MsgId>79"), timestamp=str(int(time.time()) - 400)
    )
    assert old.statuses == [403]
    assert len(user.inbox) == 1  # only the one genuine message was answered
    # The URL check of the admin console: echostr only for a good signature.
    url = emulator.callback_url
    stamp = str(int(time.time()))
    from wechat_emulator import _sha1

    good = httpx.get(
        url,
        params={
            "signature": _sha1(emulator.token, stamp, "42"),
            "timestamp": stamp,
            "nonce": "42",
            "echostr": "e1",
        },
    )
    assert (good.status_code, good.text) == (200, "e1")
    bad = httpx.get(url, params={"signature": "x" * 40, "timestamp": stamp, "nonce": "43", "echostr": "e2"})
    assert bad.status_code == 403
    assert "e2" not in bad.text
    del mode


def test_a_retried_callback_is_handled_once(
    emulator: WechatEmulator, start_bot: BotFactory, sync_redis: redis.Redis
) -> None:
    """WeChat gives up on an answer after 5 s and sends the message again: the bot answers the first
    when it is ready (as a customer-service message) and does not handle the repeats."""
    bot = start_bot(YIBAO_WECHAT__REPLY_WITHIN_SECONDS="0.5")
    user = emulator.user()
    user.follows()
    emulator.timeout = 1.0  # WeChat's 5 s and the bot's 4 s, shortened
    before = bot.sms_count()
    sync_redis.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # the bot cannot answer in time
    first = user.says("/bind")
    assert first.statuses == [0, 200]  # no answer in time: sent again, and the repeat answered at once
    emulator.timeout = 5.0
    user.wait_for("第 1 步")
    time.sleep(1.0)
    shown = [m for m in user.inbox if "第 1 步" in m.text]
    assert len(shown) == 1, user.describe()
    assert bot.sms_count() == before


def test_an_expired_token_is_refreshed_and_two_instances_share_one(
    emulator: WechatEmulator, start_bot: BotFactory, sync_redis: redis.Redis
) -> None:
    a = start_bot("a")
    start_bot("b")
    fetched = emulator.token_fetches
    assert fetched == 1  # the second instance took the token the first one keeps in Redis
    user = emulator.user()
    user.follows()
    emulator.callback_url = f"http://127.0.0.1:{a.port}/wechat"
    emulator.expire_tokens()
    # The code step's "send a new code" is a menu message: it needs the API, and the token expired.
    bind_one(user, a)
    assert emulator.token_fetches == fetched + 1
    emulator.void_tokens()
    emulator.fail_next("/cgi-bin/message/custom/send", -1)  # and WeChat is busy once: retried
    before = len(user.inbox)
    user.says("/history")  # ten payments and "More ▸": a menu message
    more = user.wait_for("更多", after=before)
    assert more.kind == "msgmenu"
    assert emulator.token_fetches == fetched + 2


def test_an_xml_bomb_and_junk_are_answered_success_and_nothing_breaks(
    emulator: WechatEmulator, start_bot: BotFactory
) -> None:
    bot = start_bot()
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><xml><Content>&lol3;</Content></xml>'
    )
    for body in (bomb, b"<xml><unclosed>", b"\x00\xff not xml", b"<other/>"):
        record = emulator.deliver_raw(body)
        assert record.statuses == [200]
    user = emulator.user()
    user.follows()
    reply = user.sends_image().passive
    assert reply is not None
    assert "文字" in reply.text
    assert user.converse("/help", "/balance").via == "passive"
    log = bot.log.read_text(encoding="utf-8")
    assert "forbidden" in log
    assert "malformed" in log


def test_a_location_message_gets_the_nearest_designated_institutions(
    emulator: WechatEmulator, start_bot: BotFactory
) -> None:
    start_bot()
    user = emulator.user()
    user.follows()
    before = len(user.inbox)
    user.sends_location(31.2304, 121.4846, label="上海市黄浦区")
    nearest = user.wait_for("离你最近的定点医药机构", after=before)
    assert "黄浦区" in nearest.text


def test_alerts_inside_and_outside_the_window_and_deferred(
    emulator: WechatEmulator, start_bot: BotFactory, sync_redis: redis.Redis
) -> None:
    bot = start_bot()
    inside, outside, nothing = emulator.user(), emulator.user(), emulator.user()
    for user in (inside, outside, nothing):
        user.follows()
        bind_one(user, bot)
    outside.accepts(TEMPLATE)

    # Inside the window: a menu message with the alert and its two options.
    before = len(inside.inbox)
    inside.says("/alert 50")
    alert = inside.wait_for("🔔", after=before, timeout=20)
    assert alert.kind == "msgmenu"
    assert [c for _, c in alert.options] == ["查余额", "关闭提醒"]

    # Outside the window (the user last wrote 49 hours ago): the subscription message they accepted.
    # Their alerts may be checked and sent before the clock below has moved on: WeChat's answer to
    # those two sends is then scripted as the one it gives 49 hours on (45015, out of the window).
    emulator.fail_next("/cgi-bin/message/custom/send", 45015, times=2, errmsg="response out of time limit")
    outside.says("/alert 50")
    nothing.says("/alert 50")
    emulator.advance(49 * 3600)
    before = len(outside.inbox)
    note = outside.wait_for("¥32.63", after=before, timeout=20)
    assert note.via == "subscription"
    assert note.data["amount2"] == "¥50.00"
    # Accepted nothing: held, recorded as deferred, and given with their next answer.
    deadline = time.monotonic() + 20
    dropped: list[dict[bytes, bytes]] = []
    while time.monotonic() < deadline:
        dropped = [f for _, f in sync_redis.xrange("wxe2e-plaintext:{outbox}:dropped")]
        dropped += [f for _, f in sync_redis.xrange("wxe2e-safe:{outbox}:dropped")]
        if any(f[b"reason"] == b"deferred" for f in dropped):
            break
        time.sleep(0.1)
    assert [f[b"user"].decode() for f in dropped if f[b"reason"] == b"deferred"] == [f"wx:{nothing.openid}"]
    assert not any("🔔" in m.text for m in nothing.inbox[-1:])
    later = nothing.converse("/balance", "🔔")
    assert later.via == "passive"
    assert "您不在时" in later.text
    assert "个人账户" in later.text

    # Unfollowing is Telegram's 403: the user is unreachable until they write again.
    inside.unfollows()
    deadline = time.monotonic() + 10
    while not sync_redis.keys(f"*{{wx:{inside.openid}}}:unreachable") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sync_redis.keys(f"*{{wx:{inside.openid}}}:unreachable")


def bind_one(user: WxUser, bot: Bot) -> None:
    """The low-balance person bound on the one sandbox platform (no choice to make)."""
    who = demo("low_balance")
    user.converse("/bind", "第 1 步")
    user.converse(who.name, "第 2 步")
    sent = bot.sms_count()
    user.converse(who.id_number, "短信")
    before = len(user.inbox)
    user.says(bot.code_for(who.phone, after=sent))
    user.wait_for("已绑定", after=before)


def test_yibao_wechat_menu_sets_the_account_menu(
    emulator: WechatEmulator, tmp_path: Path, redis_url: str
) -> None:
    env = clean_env(
        YIBAO_WECHAT__APP_ID=emulator.app_id,
        YIBAO_WECHAT__APP_SECRET=emulator.app_secret,
        YIBAO_WECHAT__TOKEN=emulator.token,
        YIBAO_WECHAT__API_BASE_URL=emulator.url,
        YIBAO_REDIS__URL=redis_url,
        YIBAO_REDIS__PREFIX="wxmenu",
        YIBAO_SECURITY__PII_KEY=new_key_text(),
        YIBAO_GENERAL__DATA_DIR=str(tmp_path / "data"),
    )
    done = subprocess.run(
        [*yibao_command(), "wechat", "menu"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [b["name"] for b in emulator.menus[-1]["button"]] == ["查余额", "消费记录", "更多"]
    english = emulator.conditional_menus[-1]
    assert english["matchrule"] == {"language": "en"}
    assert [b["name"] for b in english["button"]] == ["Balance", "Payments", "More"]
    assert "menu" in done.stdout


def test_with_the_pages_on_the_menu_opens_them(tmp_path: Path, redis_url: str) -> None:
    with WechatEmulator() as emulator:
        env = clean_env(
            YIBAO_WECHAT__APP_ID=emulator.app_id,
            YIBAO_WECHAT__APP_SECRET=emulator.app_secret,
            YIBAO_WECHAT__TOKEN=emulator.token,
            YIBAO_WECHAT__API_BASE_URL=emulator.url,
            YIBAO_WEB__ENABLED="true",
            YIBAO_WEB__PUBLIC_URL="https://yibao.example.com",
            YIBAO_REDIS__URL=redis_url,
            YIBAO_REDIS__PREFIX="wxmenu-web",
            YIBAO_SECURITY__PII_KEY=new_key_text(),
            YIBAO_GENERAL__DATA_DIR=str(tmp_path / "data"),
        )
        done = subprocess.run(
            [*yibao_command(), "wechat", "menu"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    entry = {"type": "view", "name": "打开网页", "url": "https://yibao.example.com/web/wx"}
    assert emulator.menus[-1]["button"][2]["sub_button"] == [
        entry,
        {"type": "click", "name": "余额提醒", "key": "YIBAO_ALERT"},
        {"type": "click", "name": "帮助", "key": "YIBAO_HELP"},
    ]
    english = emulator.conditional_menus[-1]["button"][2]["sub_button"][0]
    assert english == {**entry, "name": "Open the page"}
    user = emulator.user()
    assert user.opens_page("打开网页") == "https://yibao.example.com/web/wx"
    assert emulator.in_browser is user


def test_telegram_wechat_and_wecom_in_one_process_on_one_port(
    emulator: WechatEmulator, start_bot: BotFactory
) -> None:
    port = free_port()
    with BotApiEmulator() as telegram, WecomEmulator() as wecom:
        bot = start_bot(
            YIBAO_WECOM__CORP_ID=wecom.corp_id,
            YIBAO_WECOM__AGENT_ID=str(wecom.agent_id),
            YIBAO_WECOM__SECRET=wecom.secret,
            YIBAO_WECOM__TOKEN=wecom.token,
            YIBAO_WECOM__ENCODING_AES_KEY=wecom.encoding_aes_key,
            YIBAO_WECOM__API_BASE_URL=wecom.url,
            YIBAO_HTTP__LISTEN_PORT=str(port),
            YIBAO_TELEGRAM__TOKEN=telegram.token,
            YIBAO_TELEGRAM__API_BASE_URL=telegram.url,
            YIBAO_TELEGRAM__MODE="webhook",
            YIBAO_TELEGRAM__WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram",
            YIBAO_TELEGRAM__WEBHOOK_SECRET="one-port",
            YIBAO_WEB__ENABLED="true",
            YIBAO_WEB__PUBLIC_URL=PUBLIC,
        )
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json() == {"status": "ok"}
        # Telegram's menu button opens the Mini App (https only), set at start-up.
        assert telegram.menu_button()["web_app"]["url"] == f"{PUBLIC}/web/tg"
        entry = httpx.get(f"http://127.0.0.1:{port}/web/tg", timeout=5)  # the pages on the same port
        assert entry.status_code == 200
        assert "script-src 'nonce-" in entry.headers["content-security-policy"]
        wx = emulator.user()
        wx.follows()
        assert "/balance" in wx.converse("/help", "/balance").text
        tg = telegram.user(6101, language_code="en")
        before = len(tg.inbox)
        tg.says("/help")
        tg.wait_for("/web", after=before)  # offered, the pages being on
        wecom.callback_url = f"http://127.0.0.1:{port}/wecom"
        member = wecom.member("hr.test")
        assert "/balance" in member.converse("/help", "/balance").text

        # /web on each platform: a link that opens the pages as that chat's user (once).
        before = len(tg.inbox)
        tg.says("/web")
        answer = tg.wait_for("Yibao page", after=before)
        [(_, tg_link)] = answer.buttons
        assert answer.reply_markup is not None
        assert answer.reply_markup["inline_keyboard"][0][0]["web_app"]["url"] == tg_link  # a Mini App
        wx_link = re.search(rf"{PUBLIC}/web/l/\S+", wx.converse("/web", "/web/l/").text)
        wc_link = re.search(rf"{PUBLIC}/web/l/\S+", member.converse("/web", "/web/l/").text)
        assert wx_link
        assert wc_link
        for link in (tg_link, wx_link[0], wc_link[0]):
            local = link.replace(PUBLIC, f"http://127.0.0.1:{port}")
            opened = httpx.get(local, timeout=5)
            assert opened.status_code == 303, opened.text
            cookie = opened.headers["set-cookie"].split(";")[0]
            assert "/web/l/" not in opened.headers["location"]
            page = httpx.get(f"http://127.0.0.1:{port}/web/bind", headers={"cookie": cookie}, timeout=5)
            assert page.status_code == 200
            assert httpx.get(local, timeout=5).status_code != 303  # used once
        assert bot.stop() == 0
        log = bot.log.read_text(encoding="utf-8")
        assert "serving Telegram by webhook" in log
        assert "WeChat on /wechat" in log
        assert "WeCom on /wecom" in log
        assert "the pages on /web" in log


def test_the_menu_s_page_entry_opens_the_pages_as_the_chat_s_user(
    emulator: WechatEmulator, start_bot: BotFactory, sync_redis: redis.Redis
) -> None:
    """WeChat's OAuth (snsapi_base) through the pages: the entry sends the browser to the authorize
    page with a state, WeChat comes back with a code, and the page's session is the chat's user."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start_bot(
        YIBAO_HTTP__LISTEN_PORT=str(port),
        YIBAO_WEB__ENABLED="true",
        YIBAO_WEB__PUBLIC_URL=base,
        YIBAO_WECHAT__OAUTH_BASE_URL=emulator.oauth_base_url,
    )
    user = emulator.user()
    user.follows()
    emulator.in_browser = user
    with httpx.Client(timeout=10) as browser:
        entry = browser.get(f"{base}/web/wx")
        assert entry.status_code == 302
        state_cookie = (
            entry.cookies.get("yb_oauth") or entry.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        )
        back = browser.get(entry.headers["location"])  # WeChat's authorize page
        assert back.status_code == 302
        assert back.headers["location"].startswith(f"{base}/web/wx?code=")
        opened = browser.get(back.headers["location"], headers={"cookie": f"yb_oauth={state_cookie}"})
        assert opened.status_code == 303, opened.text
        session = opened.headers["set-cookie"].split(";")[0]
        page = browser.get(f"{base}/web/bind", headers={"cookie": session})
        assert page.status_code == 200
        assert "/bind" in page.text

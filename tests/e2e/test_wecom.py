"""Yibao as a WeCom self-built app, as employees and the HR operator meet it: ``yibao run`` as a real
process, its callback called by the WeCom emulator over real HTTP on loopback (always encrypted, with
WeCom's retries), its API calls answered by the emulator with WeCom's rules (template cards that can
be clicked once, per-member limits that drop silently, the directory)."""

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
from chat_process import BotProcess, clean_env, demo, free_port, start_run, yibao_command
from wecom_emulator import Member, Visitor, WecomEmulator

from bot.crypto.pii import new_key_text

PREFIX = "wce2e"
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


@pytest.fixture
def emulator() -> Iterator[WecomEmulator]:
    with WecomEmulator() as emu:
        yield emu


@pytest.fixture
def start_bot(tmp_path: Path, redis_url: str, emulator: WecomEmulator) -> Iterator[BotFactory]:
    bots: list[Bot] = []
    key = new_key_text()

    def start(name: str = "a", **env: str) -> Bot:
        log = tmp_path / f"bot-{name}.log"
        sms = tmp_path / "sms.jsonl"
        port = int(env.get("YIBAO_HTTP__LISTEN_PORT") or free_port())
        settings = {
            "YIBAO_WECOM__CORP_ID": emulator.corp_id,
            "YIBAO_WECOM__AGENT_ID": str(emulator.agent_id),
            "YIBAO_WECOM__SECRET": emulator.secret,
            "YIBAO_WECOM__TOKEN": emulator.token,
            "YIBAO_WECOM__ENCODING_AES_KEY": emulator.encoding_aes_key,
            "YIBAO_WECOM__API_BASE_URL": emulator.url,
            "YIBAO_HTTP__LISTEN_PORT": str(port),
            "YIBAO_REDIS__URL": redis_url,
            "YIBAO_REDIS__PREFIX": PREFIX,
            "YIBAO_SECURITY__PII_KEY": key,
            "YIBAO_SMS__GATEWAY": "file",
            "YIBAO_SMS__FILE_PATH": str(sms),
            "YIBAO_GENERAL__DATA_DIR": str(tmp_path / f"data-{name}"),
            "YIBAO_LOGGING__FILE": str(log),
            "YIBAO_LOGGING__LEVEL": "DEBUG",
            "YIBAO_INSURANCE__BALANCE_CACHE_SECONDS": "0",
            "YIBAO_ALERTS__QUIET_HOURS": "",
            "YIBAO_ALERTS__POLL_SECONDS": "0.2",
            **env,
        }
        process = start_run(tmp_path, settings, log, r"serving .*WeCom on ")
        bot = Bot(process, log, sms, port)
        bots.append(bot)
        emulator.callback_url = f"http://127.0.0.1:{port}/wecom"
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


def bind(member: Member, bot: Bot, scenario: str, *, zh: bool, choose: bool = True) -> None:
    who = demo(scenario)
    consent = member.converse("/bind", "第 1 步" if zh else "Step 1 of")
    assert ("聊天记录" if zh else "stays in this chat's history") in consent.text  # WeCom cannot delete it
    member.converse(who.name, "第 2 步" if zh else "Step 2 of")
    sent = bot.sms_count()
    before = len(member.inbox)
    member.says(who.id_number)
    if choose:
        card = member.wait_for("北京医保", after=before)
        assert card.kind == "card"
        platforms = member.cards[-1]
        before = len(member.inbox)
        member.clicks("Sandbox")
        member.wait_for("短信" if zh else "SMS", after=before)
        assert platforms.replaced is not None  # the platform card can no longer be clicked
        assert "Sandbox" in platforms.replaced
    else:
        member.wait_for("短信" if zh else "SMS", after=before)
    before = len(member.inbox)
    member.says(bot.code_for(who.phone, after=sent))
    member.wait_for("已绑定" if zh else "Your account is bound", after=before)


def test_the_url_check_answers_the_decrypted_echostr_only_when_signed(
    emulator: WecomEmulator, start_bot: BotFactory
) -> None:
    start_bot()
    assert emulator.verify_url().status_code == 200
    assert emulator.verify_url(tamper=True).status_code == 403


def test_the_whole_conversation_with_template_cards_in_chinese_and_english(
    emulator: WecomEmulator, start_bot: BotFactory, sync_redis: redis.Redis
) -> None:
    bot = start_bot(YIBAO_INSURANCE__PLATFORMS=TWO_PLATFORMS)
    zh = emulator.member("zhang.wei")
    assert "医保" in zh.converse("/start", "医保").text
    bind(zh, bot, "normal", zh=True)
    assert "个人账户：¥" in zh.converse("/balance", "个人账户").text
    assert "个人账户：¥" in zh.converse("我的医保还剩多少?", "个人账户").text
    more = zh.converse("/history", "更多")
    assert more.kind == "card"
    before = len(zh.inbox)
    zh.clicks("更多")
    zh.wait_for("¥", after=before)
    assert "¥100.00" in zh.converse("/alert 100", "¥100.00").text
    question = zh.converse("/unbind", "确定吗")
    before = len(zh.inbox)
    zh.clicks("确认解绑")
    zh.wait_for("已删除", after=before)

    en = emulator.member("li.na", name="李娜")
    en.converse("/lang en", "English")
    bind(en, bot, "low_balance", zh=False)
    assert "Personal account (个人账户): ¥32.63" in en.converse("how much is left?", "Personal account").text
    en.converse("/unbind", "Are you sure")
    before = len(en.inbox)
    en.says("1")  # a number answers the card's first button, too
    en.wait_for("erased", after=before)

    for member in (zh, en):
        assert sync_redis.keys(f"*wecom:{emulator.corp_id}:{member.userid}*") == []
    assert emulator.dropped == 0
    scrape = httpx.get(f"http://127.0.0.1:{bot.port}/metrics", timeout=5).text
    assert re.search(r'yibao_chat_sends_total\{platform="wecom",result="ok"\} [1-9]', scrape)
    assert 'yibao_binds_completed_total{insurer="sandbox",platform="wecom"} 2.0' in scrape
    assert bot.stop() == 0
    log = bot.log.read_text(encoding="utf-8")
    for who in (demo("normal"), demo("low_balance")):
        assert who.id_number not in log
        assert who.phone not in log
    assert "zhang.wei" not in log  # userids are keyed hashes in the log
    del question


def test_a_location_message_gets_the_nearest_designated_institutions(
    emulator: WecomEmulator, start_bot: BotFactory
) -> None:
    start_bot()
    member = emulator.member("li.lei")
    before = len(member.inbox)
    member.sends_location(22.5329, 113.9305, label="深圳市南山区")
    nearest = member.wait_for("离你最近的定点医药机构", after=before)
    assert "南山区" in nearest.text


def test_a_click_on_a_card_answered_already_changes_nothing(
    emulator: WecomEmulator, start_bot: BotFactory, sync_redis: redis.Redis
) -> None:
    bot = start_bot()
    member = emulator.member("wang.fang")
    bind(member, bot, "normal", zh=True, choose=False)
    member.converse("/unbind", "确定吗")
    card = member.cards[-1]
    before = len(member.inbox)
    member.clicks("不，保留", card=card)
    member.wait_for("已取消", after=before)
    assert card.replaced is not None
    before = len(member.inbox)
    member.clicks("确认解绑", card=card, force=True)  # a double tap that raced the card's update
    member.wait_for("已经", after=before)
    time.sleep(0.5)
    assert not any("已删除" in m.text for m in member.inbox[before:])
    assert sync_redis.keys(f"*wecom:{emulator.corp_id}:wang.fang*:profile")  # still bound


def test_the_directory_name_is_proposed_and_still_checked(
    emulator: WecomEmulator, start_bot: BotFactory, sync_redis: redis.Redis
) -> None:
    bot = start_bot(YIBAO_WECOM__PREFILL_NAME="true")
    who = demo("normal")
    member = emulator.member("chen.jing", name=who.name)
    proposal = member.converse("/bind", "身份证上的姓名是")
    assert proposal.kind == "card", member.describe()
    before = len(member.inbox)
    member.clicks("是")
    member.wait_for("第 2 步", after=before)
    sent = bot.sms_count()
    member.converse(who.id_number, "短信")
    before = len(member.inbox)
    member.says(bot.code_for(who.phone, after=sent))
    member.wait_for("已绑定", after=before)
    assert emulator.calls_to("/cgi-bin/user/get")


@pytest.mark.slow
def test_31_messages_in_a_minute_to_one_member_none_lost(
    emulator: WecomEmulator, start_bot: BotFactory
) -> None:
    """WeCom drops, silently, the 31st message to a member within a minute: Yibao's sender holds it
    until the minute allows it."""
    start_bot()
    member = emulator.member("zhao.lei")
    started = time.monotonic()
    for n in range(31):
        member.says(f"/lang {'zh' if n % 2 else 'en'}")
    deadline = time.monotonic() + 90
    while len(member.inbox) < 31 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(member.inbox) == 31, member.describe()
    assert emulator.dropped == 0
    assert member.inbox[-1].at - started > 55  # the 31st waited for the first one's minute to pass


def test_an_alert_is_delivered_once_and_a_member_who_left_is_erased(
    emulator: WecomEmulator, start_bot: BotFactory, sync_redis: redis.Redis
) -> None:
    bot = start_bot()
    member = emulator.member("sun.li")
    bind(member, bot, "low_balance", zh=True, choose=False)
    before = len(member.inbox)
    member.says("/alert 50")
    member.wait_for("🔔", after=before, timeout=20)
    deadline = time.monotonic() + 10
    while not [m for m in member.inbox[before:] if m.kind == "card"] and time.monotonic() < deadline:
        time.sleep(0.05)
    cards = [m for m in member.inbox[before:] if m.kind == "card"]  # the alert's card, or one right after it
    assert [text for _, text in cards[-1].options] == ["查余额", "关闭提醒"]
    time.sleep(2.0)
    assert sum("🔔" in m.text for m in member.inbox) == 1

    emulator.delete_member("sun.li")
    deadline = time.monotonic() + 10
    while sync_redis.keys(f"*wecom:{emulator.corp_id}:sun.li*") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sync_redis.keys(f"*wecom:{emulator.corp_id}:sun.li*") == []
    assert "left the company" in bot.log.read_text(encoding="utf-8")


def test_yibao_wecom_menu_sets_the_apps_menu_with_the_pages_entry(
    emulator: WecomEmulator, start_bot: BotFactory, tmp_path: Path, redis_url: str
) -> None:
    env = clean_env(
        YIBAO_WECOM__CORP_ID=emulator.corp_id,
        YIBAO_WECOM__AGENT_ID=str(emulator.agent_id),
        YIBAO_WECOM__SECRET=emulator.secret,
        YIBAO_WECOM__TOKEN=emulator.token,
        YIBAO_WECOM__ENCODING_AES_KEY=emulator.encoding_aes_key,
        YIBAO_WECOM__API_BASE_URL=emulator.url,
        YIBAO_WEB__ENABLED="true",
        YIBAO_WEB__PUBLIC_URL="https://yibao.example.com/",
        YIBAO_REDIS__URL=redis_url,
        YIBAO_REDIS__PREFIX="wcmenu",
        YIBAO_SECURITY__PII_KEY=new_key_text(),
        YIBAO_GENERAL__DATA_DIR=str(tmp_path / "menu-data"),
    )
    done = subprocess.run(
        [*yibao_command(), "wecom", "menu"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "https://yibao.example.com/web/wecom" in done.stdout
    menu = emulator.menus[-1]
    assert [b["name"] for b in menu["button"]] == ["查余额", "消费记录", "更多"]
    assert menu["button"][2]["sub_button"][0] == {
        "type": "view",
        "name": "打开网页",
        "url": "https://yibao.example.com/web/wecom",
    }
    # The menu's click keys are what the app answers; its page entry is only a visit.
    start_bot()
    member = emulator.member("menu.user")
    before = len(member.inbox)
    member.clicks_menu("帮助")
    assert "/balance" in member.wait_for("/balance", after=before).text
    assert member.opens_page("打开网页") == "https://yibao.example.com/web/wecom"
    assert emulator.in_browser is member


def test_the_apps_page_entry_opens_the_pages_as_the_member_and_not_for_an_outsider(
    emulator: WecomEmulator, start_bot: BotFactory
) -> None:
    """WeCom's OAuth through the pages: the entry sends WeCom's browser to the authorize page with a
    state, WeCom comes back with a code, and the page's session is the member's chat user; a visitor
    from outside the company (no userid) gets the refusal page and no session."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start_bot(
        YIBAO_HTTP__LISTEN_PORT=str(port),
        YIBAO_WEB__ENABLED="true",
        YIBAO_WEB__PUBLIC_URL=base,
        YIBAO_WECOM__OAUTH_BASE_URL=emulator.oauth_base_url,
    )

    def dance() -> httpx.Response:
        with httpx.Client(timeout=10) as browser:
            entry = browser.get(f"{base}/web/wecom")
            assert entry.status_code == 302
            assert "agentid=" in entry.headers["location"]
            state = entry.headers["set-cookie"].split(";")[0]
            back = browser.get(entry.headers["location"])  # WeCom's authorize page
            assert back.status_code == 302
            assert back.headers["location"].startswith(f"{base}/web/wecom?code=")
            return browser.get(back.headers["location"], headers={"cookie": state})

    member = emulator.member("page.user")
    emulator.in_browser = member
    opened = dance()
    assert opened.status_code == 303, opened.text
    session = next(c for c in opened.headers.get_list("set-cookie") if not c.startswith("yb_oauth"))
    page = httpx.get(f"{base}/web/bind", headers={"cookie": session.split(";")[0]}, timeout=5)
    assert page.status_code == 200
    # The session is the member's chat user: /mydata in the chat lists the page's session.
    assert "医保助手网页上已打开的会话" in member.converse("/mydata", "网页").text

    emulator.in_browser = Visitor(openid="o-outsider")
    refused = dance()
    assert refused.status_code == 403
    assert not any(not c.startswith("yb_oauth") for c in refused.headers.get_list("set-cookie"))

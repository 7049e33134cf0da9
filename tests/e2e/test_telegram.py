"""Yibao on Telegram as its users and operators see it: ``yibao run`` as a real process, talking real
HTTP to a Bot API emulator on loopback, with scripted users pressing real buttons."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from botapi_emulator import BotApiEmulator, FakeUser
from chat_process import BotProcess, clean_env, demo, free_port, start_run, yibao_command
from topologies import redis_env, sync_client, sync_keys

from bot.crypto.pii import new_key_text


@dataclass
class Bot(BotProcess):
    prefix: str


BotFactory = Callable[..., Bot]


@pytest.fixture
def emulator() -> Iterator[BotApiEmulator]:
    with BotApiEmulator() as emu:
        yield emu


@pytest.fixture(params=["aiogram", "ptb"])
def engine(request: pytest.FixtureRequest) -> str:
    """Every test here runs on both Telegram engines (``telegram.engine``)."""
    return str(request.param)


@pytest.fixture
def start_bot(
    tmp_path: Path, redis_settings: dict[str, object], emulator: BotApiEmulator, engine: str
) -> Iterator[BotFactory]:
    bots: list[Bot] = []
    key = new_key_text()
    prefix = f"tge2e-{engine}"  # each engine's run of a test leaves its keys apart from the other's

    def start(name: str = "a", **env: str) -> Bot:
        log = tmp_path / f"bot-{name}.log"
        sms = tmp_path / "sms.jsonl"
        settings = {
            "YIBAO_TELEGRAM__TOKEN": emulator.token,
            "YIBAO_TELEGRAM__API_BASE_URL": emulator.url,
            "YIBAO_TELEGRAM__ENGINE": engine,
            **redis_env(redis_settings),
            "YIBAO_REDIS__PREFIX": prefix,
            "YIBAO_SECURITY__PII_KEY": key,
            "YIBAO_SMS__GATEWAY": "file",
            "YIBAO_SMS__FILE_PATH": str(sms),
            "YIBAO_GENERAL__DATA_DIR": str(tmp_path / f"data-{name}"),
            "YIBAO_LOGGING__FILE": str(log),
            "YIBAO_LOGGING__LEVEL": "DEBUG",
            "YIBAO_INSURANCE__BALANCE_CACHE_SECONDS": "0",
            **env,
        }
        process = start_run(tmp_path, settings, log, r"serving Telegram")
        bot = Bot(process, log, sms, prefix)
        bots.append(bot)
        return bot

    yield start
    for bot in bots:
        bot.stop()


@pytest.fixture
def sync_redis(redis_settings: dict[str, object]) -> Iterator[redis.Redis]:
    client = sync_client(redis_settings)
    client.flushall()
    yield client
    client.close()


def converse(user: FakeUser, text: str, expect: str, timeout: float = 10.0) -> str:
    before = len(user.inbox)
    user.says(text)
    return user.wait_for(expect, timeout=timeout, after=before).text


def bind(user: FakeUser, bot: Bot, scenario: str, *, zh: bool) -> None:
    who = demo(scenario)
    converse(user, "/bind", "第 1 步" if zh else "Step 1 of 3")
    converse(user, who.name, "第 2 步" if zh else "Step 2 of 3")
    before = len(user.inbox)
    id_message = user.says(who.id_number)
    sent = user.wait_for("第 3 步" if zh else "Step 3 of 3", after=before)
    assert id_message in user.deleted  # the ID number does not stay in the chat
    assert "🔒" in sent.text  # and the user is told why it vanished
    code_message = user.says(bot.code_for(who.phone))
    user.wait_for("已绑定" if zh else "Your account is bound", after=before)
    assert code_message in user.deleted


def test_the_whole_conversation_in_chinese_and_english(
    emulator: BotApiEmulator, start_bot: BotFactory, sync_redis: redis.Redis
) -> None:
    whole_conversation(emulator, start_bot, sync_redis)


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["sentinel", "cluster"], indirect=True)
@pytest.mark.parametrize("engine", ["aiogram"])
def test_the_whole_conversation_on_sentinel_and_on_a_cluster(
    emulator: BotApiEmulator, start_bot: BotFactory, sync_redis: redis.Redis, topology: str
) -> None:
    whole_conversation(emulator, start_bot, sync_redis)


def whole_conversation(emulator: BotApiEmulator, start_bot: BotFactory, sync_redis: redis.Redis) -> None:
    bot = start_bot()
    assert {c["command"] for c in emulator.commands("zh")} >= {"balance", "alert", "bind", "unbind"}
    assert emulator.commands("en")[0]["description"] != emulator.commands("zh")[0]["description"]

    zh = emulator.user(1001, language_code="zh-hans")
    assert "医保助手" in converse(zh, "/start", "医保助手")
    bind(zh, bot, "normal", zh=True)
    assert "个人账户：¥" in converse(zh, "/balance", "个人账户")
    assert "个人账户：¥" in converse(zh, "我的医保还剩多少?", "个人账户")
    before = len(zh.inbox)
    zh.says("/chart")
    chart = zh.wait_for(lambda sent: sent.photo is not None, after=before, timeout=20)
    assert chart.photo is not None
    assert chart.photo.startswith(b"\x89PNG")
    assert "近 12 个月" in (chart.caption or "")
    assert "¥100.00" in converse(zh, "/alert 100", "¥100.00")
    before = len(zh.inbox)
    zh.says("/unbind")
    question = zh.wait_for("确定吗", after=before)
    assert question.reply_markup is not None
    payloads = [b["callback_data"] for row in question.reply_markup["inline_keyboard"] for b in row]
    assert payloads == ["/unbind yes", "/cancel"]
    before = len(zh.inbox)
    zh.presses("/unbind yes", question.message_id)
    zh.wait_for("已删除", after=before)
    assert zh.answered_callbacks

    en = emulator.user(1002, language_code="en-US")
    bind(en, bot, "low_balance", zh=False)
    assert "Personal account (个人账户): ¥32.63" in converse(en, "how much is left?", "Personal account")
    assert "¥50.00" in converse(en, "alert me below 50", "¥50.00")
    before = len(en.inbox)
    en.says("/unbind")
    question = en.wait_for("Are you sure", after=before)
    en.presses("/unbind yes", question.message_id)
    en.wait_for("erased", after=before)

    assert sync_keys(sync_redis, "*tg:1001*") == []
    assert sync_keys(sync_redis, "*tg:1002*") == []
    assert bot.stop() == 0
    log = bot.log.read_text(encoding="utf-8")
    assert "stopped" in log
    for who in (demo("normal"), demo("low_balance")):
        assert who.id_number not in log
        assert who.phone not in log
    for line in bot.sms.read_text(encoding="utf-8").splitlines():
        code = re.search(r"\b(\d{6})\b", json.loads(line)["text"])[1]  # type: ignore[index]
        assert code not in log


def test_a_shared_location_gets_the_nearest_designated_institutions(
    emulator: BotApiEmulator, start_bot: BotFactory
) -> None:
    start_bot()
    user = emulator.user(1501, language_code="zh-hans")
    before = len(user.inbox)
    user.shares_location(39.9288, 116.4160)  # 北京市东城区
    nearest = user.wait_for("离你最近的定点医药机构", after=before).text
    assert "东城区" in nearest
    assert "公里" in nearest or "米" in nearest


def test_a_429_is_waited_out_and_the_reply_still_arrives(
    emulator: BotApiEmulator, start_bot: BotFactory
) -> None:
    start_bot()
    user = emulator.user(2001, language_code="en")
    emulator.fail_next("sendMessage", status=429, retry_after=1, chat_id=2001)
    converse(user, "/help", "Commands:")
    tries = [c for c in emulator.calls_to("sendMessage") if c.params.get("chat_id") in (2001, "2001")]
    assert [c.status for c in tries] == [429, 200]
    assert tries[1].at - tries[0].at >= 1.0


def test_a_403_marks_the_user_unreachable_until_they_write_again(
    emulator: BotApiEmulator, start_bot: BotFactory, sync_redis: redis.Redis
) -> None:
    bot = start_bot()
    user = emulator.user(3001, language_code="en")
    emulator.fail_next("sendMessage", status=403, chat_id=3001)
    user.says("/help")
    key = f"{bot.prefix}:{{tg:3001}}:unreachable"
    deadline = time.monotonic() + 10
    while not sync_redis.exists(key):
        assert time.monotonic() < deadline, "the 403 did not mark the user"
        time.sleep(0.05)
    converse(user, "/help", "Commands:")
    assert not sync_redis.exists(key)


def webhook_env(port: int, secret: str, *, listen_key: str = "YIBAO_HTTP__LISTEN_PORT") -> dict[str, str]:
    return {
        "YIBAO_TELEGRAM__MODE": "webhook",
        "YIBAO_TELEGRAM__WEBHOOK_URL": f"http://127.0.0.1:{port}/telegram",
        "YIBAO_TELEGRAM__WEBHOOK_SECRET": secret,
        listen_key: str(port),
    }


def test_the_deprecated_telegram_listen_keys_still_serve_with_a_warning(
    emulator: BotApiEmulator, start_bot: BotFactory
) -> None:
    port = free_port()
    bot = start_bot(**webhook_env(port, "old-keys", listen_key="YIBAO_TELEGRAM__LISTEN_PORT"))
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json() == {"status": "ok"}
    user = emulator.user(4101, language_code="en")
    converse(user, "/help", "Commands:")
    assert bot.stop() == 0
    assert bot.process.stderr is not None
    assert "telegram.listen_port is deprecated: write it as http.listen_port" in bot.process.stderr.read()


def test_webhook_mode_stops_on_sigterm_and_frees_its_port(
    emulator: BotApiEmulator, start_bot: BotFactory
) -> None:
    port = free_port()
    bot = start_bot(**webhook_env(port, "stop-secret"))
    user = emulator.user(4201, language_code="en")
    converse(user, "/help", "Commands:")
    os.kill(bot.process.pid, signal.SIGTERM)
    assert bot.process.wait(timeout=20) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_a_taken_port_is_one_clear_line_and_exit_1(
    tmp_path: Path, redis_url: str, emulator: BotApiEmulator, engine: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(
            YIBAO_TELEGRAM__TOKEN=emulator.token,
            YIBAO_TELEGRAM__API_BASE_URL=emulator.url,
            YIBAO_TELEGRAM__ENGINE=engine,
            YIBAO_REDIS__URL=redis_url,
            YIBAO_SECURITY__PII_KEY=new_key_text(),
            YIBAO_SMS__GATEWAY="file",
            YIBAO_SMS__FILE_PATH=str(tmp_path / "sms.jsonl"),
            YIBAO_GENERAL__DATA_DIR=str(tmp_path / "data"),
            **webhook_env(port, "taken-port"),
        )
        done = subprocess.run(
            [*yibao_command(), "run"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert f"yibao: cannot start: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_webhook_secret_is_checked(emulator: BotApiEmulator, start_bot: BotFactory) -> None:
    port = free_port()
    start_bot(**webhook_env(port, "s3cr3t-token"))
    assert emulator.webhook is not None
    assert emulator.webhook.secret_token == "s3cr3t-token"
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    user = emulator.user(4001, language_code="en")
    update = {
        "update_id": 999_001,
        "message": {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": 4001, "type": "private"},
            "from": {"id": 4001, "is_bot": False, "first_name": "x", "language_code": "en"},
            "text": "/help",
        },
    }
    assert emulator.post_update(update, secret="wrong") == 403
    assert emulator.post_update(update, secret=None) == 403
    time.sleep(0.5)
    assert user.inbox == []  # nothing was processed
    converse(user, "/help", "Commands:")  # the emulator posts with the registered secret
    # A malformed update is skipped (200, so Telegram does not resend it) and breaks nothing.
    assert emulator.post_update({"update_id": 999_002, "message": {"chat": "garbage"}}) == 200
    converse(user, "/help", "Commands:")
    url = f"http://127.0.0.1:{port}/telegram"
    headers = {"X-Telegram-Bot-Api-Secret-Token": "s3cr3t-token", "Content-Type": "application/json"}
    too_deep = "[" * 100_000 + "]" * 100_000  # a parser's recursion limit, not an update
    assert httpx.post(url, content=too_deep, headers=headers, timeout=10).status_code == 400
    assert httpx.post(url, content=b"not json", headers=headers, timeout=10).status_code == 400

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        for _ in range(3 * 1024):
            yield b" " * 1024

    assert httpx.post(url, content=chunks(), headers=headers, timeout=10).status_code == 413
    converse(user, "/help", "Commands:")  # and the bot is still there


def test_two_instances_behind_one_address_keep_one_session(
    emulator: BotApiEmulator, start_bot: BotFactory
) -> None:
    ports = [free_port(), free_port()]
    bots = [
        start_bot(name, **webhook_env(port, "shared-secret")) for name, port in zip("ab", ports, strict=True)
    ]
    user = emulator.user(5001, language_code="en")
    user.started = True  # updates are posted raw below, not through user.says
    who = demo("normal")
    turn = 0

    def say(text: str) -> int:
        nonlocal turn
        port = ports[turn % 2]  # a load balancer alternating between the instances
        turn += 1
        update_id = 700_000 + turn
        message_id = 90_000 + turn
        update = {
            "update_id": update_id,
            "message": {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": 5001, "type": "private"},
                "from": {"id": 5001, "is_bot": False, "first_name": "x", "language_code": "en"},
                "text": text,
            },
        }
        assert emulator.post_update(update, url=f"http://127.0.0.1:{port}/telegram") == 200
        return message_id

    say("/bind")
    say(who.name)
    say(who.id_number)
    user.wait_for("Step 3 of 3")
    say(bots[0].code_for(who.phone))
    user.wait_for("Your account is bound")
    say("/balance")
    user.wait_for("Personal account")
    say("/alert 100")
    user.wait_for("¥100.00")
    say("/alert")
    assert "below ¥100.00" in user.wait_for("I'll alert you when").text


def test_sigterm_stops_cleanly(emulator: BotApiEmulator, start_bot: BotFactory) -> None:
    bot = start_bot()
    user = emulator.user(6001, language_code="en")
    converse(user, "/help", "Commands:")
    os.kill(bot.process.pid, signal.SIGTERM)
    assert bot.process.wait(timeout=20) == 0
    assert "stopped" in bot.log.read_text(encoding="utf-8")


def test_fast_typists_keep_their_order(
    emulator: BotApiEmulator, start_bot: BotFactory, sync_redis: redis.Redis
) -> None:
    """/bind, the name and the ID number sent back to back, without waiting for an answer, by 50
    people one after another: all 50 end at the SMS-code step with exactly one code sent each. Then
    20 quick /alert N come back confirmed in the order they were sent."""
    bot = start_bot(YIBAO_OTP__MAX_PER_HOUR_PER_PHONE="100", YIBAO_OTP__MAX_PER_HOUR_PER_USER="100")
    who = demo("normal")
    masked_phone = f"{who.phone[:3]}****{who.phone[-4:]}"
    users = [emulator.user(20_000 + i, language_code="en") for i in range(50)]
    for user in users:
        user.says("/bind")
        user.says(who.name)
        user.says(who.id_number)
    for user in users:
        at_code = user.wait_for(masked_phone, timeout=60)
        assert "Step 3" in at_code.text
        later = user.inbox[user.inbox.index(at_code) + 1 :]
        assert later == []  # nothing after the code step: no answer out of turn
    codes = [json.loads(line) for line in bot.sms.read_text(encoding="utf-8").splitlines()]
    assert len(codes) == 50  # one code a person, none twice
    assert all(code["to"] == who.phone for code in codes)

    typist = emulator.user(30_000, language_code="en")
    bind(typist, bot, "normal", zh=False)
    before = len(typist.inbox)
    amounts = [str(100 + i) for i in range(20)]
    for amount in amounts:
        typist.says(f"/alert {amount}")
    confirmations = typist.wait_count(before + 20, timeout=60)[before:]
    shown = [re.search(r"¥(\d+)\.00", sent.text)[1] for sent in confirmations]  # type: ignore[index]
    assert shown == amounts


@pytest.mark.parametrize("engine", ["ptb"])  # the call itself is tested on both: test_telegram_web.py
def test_with_the_pages_on_the_menu_button_opens_the_mini_app(
    emulator: BotApiEmulator, start_bot: BotFactory
) -> None:
    assert emulator.menu_button() == {"type": "default"}
    start_bot(YIBAO_WEB__ENABLED="true", YIBAO_WEB__PUBLIC_URL="https://yibao.example.com")
    assert emulator.menu_button() == {
        "type": "web_app",
        "text": "打开网页",
        "web_app": {"url": "https://yibao.example.com/web/tg"},
    }

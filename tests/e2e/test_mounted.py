"""Yibao mounted into an operator's own bot (``examples/aiogram_host.py``, ``examples/ptb_host.py``):
each example runs as a real process against the Bot API emulator; the host's /ping and free text
still reach the host, and a whole bind and /balance reach Yibao; with ``[web]`` on, the menu button
and ``/web``'s Mini App button open the pages the host's process serves."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from botapi_emulator import BotApiEmulator, FakeUser
from chat_process import clean_env, demo, free_port

from bot.crypto.pii import new_key_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PUBLIC = "https://host.example.com"


@pytest.fixture
def emulator() -> Iterator[BotApiEmulator]:
    with BotApiEmulator() as emu:
        yield emu


def code_for(sms: Path, phone: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sms.exists():
            lines = [json.loads(line) for line in sms.read_text(encoding="utf-8").splitlines()]
            mine = [line for line in lines if line["to"] == phone]
            if mine:
                return re.search(r"\b(\d{6})\b", mine[-1]["text"])[1]  # type: ignore[index]
        time.sleep(0.05)
    raise AssertionError("no SMS code")


def converse(user: FakeUser, text: str, expect: str) -> str:
    before = len(user.inbox)
    user.says(text)
    return user.wait_for(expect, timeout=15, after=before).text


@pytest.mark.parametrize("example", ["aiogram_host.py", "ptb_host.py"])
def test_the_host_keeps_its_handlers_and_yibao_answers_its_own(
    example: str, emulator: BotApiEmulator, tmp_path: Path, redis_url: str
) -> None:
    sms = tmp_path / "sms.jsonl"
    log = tmp_path / "host.log"
    port = free_port()
    env = clean_env(
        BOT_TOKEN=emulator.token,
        BOT_API_BASE_URL=emulator.url,
        YIBAO_REDIS__URL=redis_url,
        YIBAO_REDIS__PREFIX=f"mounted-{example.split('_')[0]}",
        YIBAO_SECURITY__PII_KEY=new_key_text(),
        YIBAO_SMS__GATEWAY="file",
        YIBAO_SMS__FILE_PATH=str(sms),
        YIBAO_GENERAL__DATA_DIR=str(tmp_path / "data"),
        YIBAO_INSURANCE__BALANCE_CACHE_SECONDS="0",
        YIBAO_WEB__ENABLED="true",
        YIBAO_WEB__PUBLIC_URL=PUBLIC,
        YIBAO_HTTP__LISTEN_PORT=str(port),
    )
    with log.open("w") as out:
        host = subprocess.Popen(
            [sys.executable, str(EXAMPLES / example)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "host bot with Yibao: polling" not in log.read_text():
            assert host.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the host bot did not start"
            time.sleep(0.05)
        user = emulator.user(7001, language_code="en")
        assert converse(user, "/ping", "pong") == "pong"  # the host's command
        assert converse(user, "hello", "host heard") == "host heard: hello"  # the host's free text
        who = demo("normal")
        converse(user, "/bind", "Step 1")  # Yibao's command
        converse(user, who.name, "Step 2")  # in Yibao's flow: the name is Yibao's, not echoed
        id_message = user.says(who.id_number)
        user.wait_for("Step 3", timeout=15)
        assert id_message in user.deleted  # through the host's bot, the ID number still goes
        converse(user, code_for(sms, who.phone), "Your account is bound")
        assert "Personal account" in converse(user, "/balance", "Personal account")
        assert converse(user, "/ping", "pong") == "pong"  # out of the flow: the host's again
        assert converse(user, "thanks", "host heard") == "host heard: thanks"
        # Yibao's pages through the host: the menu button opens the Mini App, /web gives a Mini App
        # button whose link opens the pages (served by the host's process) as this chat's user.
        assert emulator.menu_button()["web_app"]["url"] == f"{PUBLIC}/web/tg"
        before = len(user.inbox)
        user.says("/web")
        [(_, link)] = user.wait_for("page", timeout=15, after=before).buttons
        opened = httpx.get(link.replace(PUBLIC, f"http://127.0.0.1:{port}"), timeout=10)
        assert opened.status_code == 303
        cookie = opened.headers["set-cookie"].split(";")[0]
        account = httpx.get(f"http://127.0.0.1:{port}/web/account", headers={"cookie": cookie}, timeout=10)
        assert account.status_code == 200
        assert "¥" in account.text  # bound in the chat: the page shows the account
        assert not any("host heard" in sent.text and who.name in sent.text for sent in user.inbox)
        host.send_signal(signal.SIGTERM)
        assert host.wait(timeout=30) == 0
        assert who.id_number not in log.read_text()
    finally:
        if host.poll() is None:
            host.kill()

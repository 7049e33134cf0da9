"""``yibao chat`` as a person (or a script) uses it: the real process, driven over stdin/stdout.

The first test is the issue's scripted session, against the test run's Redis so the keys can be
inspected afterwards; the second runs the embedded default with no redis-server on PATH at all.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bot.pii import new_key_text
from insurance.sandbox import DemoPerson, SandboxPlatform

SMS = re.compile(r"📱 SMS → (?P<to>\S+): .*?(?P<code>\b\d{6}\b)")


def demo(scenario: str) -> DemoPerson:
    return next(p for p in SandboxPlatform.from_file().people() if p.scenario.value == scenario)


def yibao_command() -> list[str]:
    script = Path(sys.executable).with_name("yibao")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot"]


class Chat:
    """A running ``yibao chat``: ``say`` sends one line and returns the answer block it printed."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*yibao_command(), "chat", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.transcript: list[str] = []

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def say(self, text: str, timeout: float = 15.0) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        block: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"chat ended after {text!r}: {self.stderr()}")
            if line == "\n":
                break
            block.append(line)
        answer = "".join(block)
        self.transcript += [f"> {text}", answer]
        return answer

    def code(self, answer: str) -> str:
        m = SMS.search(answer)
        assert m, answer
        return m["code"]

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=20)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read() if self.proc.poll() is not None else ""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIBAO_")}
    env.update(extra)
    return env


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


def every_value(client: redis.Redis) -> str:
    out = []
    for key in client.keys("*"):
        kind = client.type(key).decode()
        value = {
            "string": client.get,
            "hash": client.hgetall,
            "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
        }[kind](key)
        out.append(f"{key!r}={value!r}")
    return "\n".join(out)


def test_scripted_session(tmp_path: Path, redis_url: str, sync_redis: redis.Redis) -> None:
    who = demo("normal")
    data = tmp_path / "data"
    env = clean_env(
        YIBAO_REDIS__URL=redis_url,
        YIBAO_SECURITY__PII_KEY=new_key_text(),
        YIBAO_GENERAL__DATA_DIR=str(data),
        YIBAO_OTP__RESEND_INTERVAL_SECONDS="2",
        YIBAO_LOGGING__LEVEL="DEBUG",
        LANG="C.UTF-8",
    )
    chat = Chat(env, tmp_path)
    try:
        assert "Yibao" in chat.say("/start")
        assert "真实姓名" in chat.say("/bind")
        assert "身份证号" in chat.say(who.name)
        sent = chat.say(who.id_number)
        masked = f"{who.phone[:3]}****{who.phone[-4:]}"
        assert f"SMS → {masked}" in sent
        assert masked in sent.splitlines()[-1]  # the bot says where the code went, masked
        code = chat.code(sent)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        for left in (4, 3, 2, 1):
            assert f"还可以再试 {left} 次" in chat.say(wrong)
        assert "已失效" in chat.say(wrong)
        early = chat.say("/resend")
        assert "请稍候" in early
        assert "秒" in early
        time.sleep(2.1)
        resent = chat.say("/resend")
        new_code = chat.code(resent)
        bound = chat.say(new_code)
        assert "已绑定" in bound
        assert who.id_number[-4:] in bound

        stored = every_value(sync_redis)
        assert who.id_number not in stored
        assert who.phone not in stored

        balance = chat.say("/balance")
        assert "个人账户：¥" in balance
        assert "统筹基金" in balance
        assert re.search(r"数据截至 \d{4}-\d{2}-\d{2} \d{2}:\d{2}", balance)
        assert chat.say("还剩多少钱") == balance

        assert "¥100.00" in chat.say("/alert 100")
        assert "¥100.00" in chat.say("/alert")
        assert "/alert 100" in chat.say("/alert -5")
        assert "/alert 100" in chat.say("/alert abc")
        assert "/alert 100" in chat.say("/alert 1e309")
        assert "¥100.00" in chat.say("/alert")

        question = chat.say("/unbind")
        assert "[1] 确认解绑并删除" in question
        assert "已删除" in chat.say("1")  # the button, by number
        assert chat.close() == 0
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()

    assert sync_redis.keys("*console:local*") == []
    stored = every_value(sync_redis)
    log = (data / "yibao.log").read_text(encoding="utf-8")
    assert "sent a bind code" in log  # the log is really written
    for secret in (who.id_number, who.phone, code, new_code):
        assert secret not in stored
        assert secret not in log


def test_embedded_default_needs_no_redis_on_path_and_keeps_data(tmp_path: Path) -> None:
    who = demo("normal")
    env = clean_env(PATH="/nonexistent", LANG="en_US.UTF-8")
    chat = Chat(env, tmp_path, "--lang", "en")
    try:
        chat.say("/bind")
        chat.say(who.name)
        code = chat.code(chat.say(who.id_number))
        assert "Your account is bound" in chat.say(code)
        assert "Personal account" in chat.say("how much is left?")
        assert chat.close() == 0
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()

    data = tmp_path / ".yibao"
    log = (data / "yibao.log").read_text(encoding="utf-8")
    pid = int(re.search(r"embedded redis-server \S+ started \(pid (\d+)\)", log)[1])  # type: ignore[index]
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the embedded redis-server outlived yibao chat"
        time.sleep(0.05)
    on_disk = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    assert b"{console:local}:profile" in on_disk  # the AOF holds the binding...
    for secret in (who.id_number, who.phone, code):
        assert secret.encode() not in on_disk  # ...but no ID number, phone or code in clear

    again = Chat(env, tmp_path, "--lang", "en")  # a restart finds the binding again
    try:
        assert "Personal account" in again.say("/balance")
        assert again.close() == 0
    finally:
        if again.proc.poll() is None:
            again.proc.kill()

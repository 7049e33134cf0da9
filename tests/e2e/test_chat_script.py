"""``yibao chat`` as a person (or a script) uses it: the real process, driven over stdin/stdout.

The first test is the issue's scripted session, against the test run's Redis so the keys can be
inspected afterwards; the second runs the embedded default with no redis-server on PATH at all.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from chat_process import Chat, clean_env, demo, yibao_command

from bot.crypto.pii import new_key_text


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
            "stream": client.xrange,
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
        step = next(line for line in sent.splitlines() if "第 3 步" in line)
        assert masked in step  # the bot says where the code went, masked
        assert sent.splitlines()[-1] == "[1] 重新发送验证码"
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


STEP = re.compile(r"第 \d 步（共 \d 步）|Step \d of \d")


def test_a_new_user_meets_issue_12_in_zh_and_en(
    tmp_path: Path, redis_url: str, sync_redis: redis.Redis
) -> None:
    """The issue's inputs through ``yibao chat`` on a pipe: every answer inside the bind flow names its
    step; a member without a personal account is never promised an alert; the breakdown adds up; a
    "1" after a malformed code presses the resend button; charts never overwrite each other; and
    ``--lang en`` wins over a language stored earlier."""
    resident = demo("resident")  # 王秀英
    data = tmp_path / "data"
    env = clean_env(
        YIBAO_REDIS__URL=redis_url,
        YIBAO_SECURITY__PII_KEY=new_key_text(),
        YIBAO_GENERAL__DATA_DIR=str(data),
        YIBAO_OTP__RESEND_INTERVAL_SECONDS="0",
        LANG="C.UTF-8",
    )
    chat = Chat(env, tmp_path, "--lang", "zh")
    try:
        in_flow = [chat.say("/bind")]
        for text in (
            "Zhang Wei",
            "/start",
            "/balance",
            resident.name,
            "/help",
            f"{resident.name} {resident.id_number}",
        ):
            in_flow.append(chat.say(text))
        chat.code(in_flow[-1])
        in_flow.append(chat.say("12345"))  # a malformed code: no try used
        assert "不计入尝试次数" in in_flow[-1]
        assert in_flow[-1].splitlines()[-1] == "[1] 重新发送验证码"
        in_flow.append(chat.say("1"))  # the button, still offered
        new_code = chat.code(in_flow[-1])  # a new SMS: the "1" pressed "send a new code"
        for answer in in_flow:
            assert STEP.search(answer), answer
        assert "汉字" in in_flow[1]
        assert "绑定进行中" in in_flow[2]
        assert "尚未绑定。发送 /bind" not in in_flow[2]
        assert "/balance 需要等绑定完成后才能使用" in in_flow[3]

        done = chat.say(new_code)
        assert "已绑定" in done
        assert "/alert" not in done
        for text in ("/alert 100", "100元", "低于100提醒我"):
            answer = chat.say(text)
            assert "没有个人账户" in answer
            assert "时我会提醒你" not in answer

        spent = chat.say("今年统筹用了多少")
        head, breakdown = spent.splitlines()[:2]
        figure = Decimal(re.findall(r"¥([\d,]+\.\d\d)", head)[0].replace(",", ""))
        parts = [Decimal(m.replace(",", "")) for m in re.findall(r"¥([\d,]+\.\d\d)", breakdown)]
        assert sum(parts, Decimal(0)) == figure
        assert "（共" in breakdown

        first = chat.say("/chart")
        second = chat.say("/chart")  # within the same second, as likely as not
        paths = [Path(re.search(r"🖼 (\S+)", a)[1]) for a in (first, second)]  # type: ignore[index]
        assert "你没有个人账户" in first
        assert paths[0] != paths[1]
        assert all(p.exists() and p.name.startswith("local-") for p in paths)
        assert chat.close() == 0
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()

    again = Chat(env, tmp_path, "--lang", "en")  # the stored language was zh
    try:
        balance = again.say("/balance")
        assert "Personal account" in balance
        assert "none" in balance
        assert again.close() == 0
    finally:
        if again.proc.poll() is None:
            again.proc.kill()


WHITESPACE_ONLY = ("\t", "\u3000", "\u2028", "\u0085", "\x0b\x0c", "\x1c", " \t\u3000 ")


def test_every_line_is_answered_even_one_of_only_whitespace(
    tmp_path: Path, redis_url: str, sync_redis: redis.Redis
) -> None:
    """A script waiting for one answer block per line never hangs: a line of only whitespace gets
    the answer an empty line gets, and the next line's answer is still its own."""
    env = clean_env(
        YIBAO_REDIS__URL=redis_url,
        YIBAO_SECURITY__PII_KEY=new_key_text(),
        YIBAO_GENERAL__DATA_DIR=str(tmp_path / "data"),
        YIBAO_ALERTS__ENABLED="false",
        LANG="C.UTF-8",
    )
    chat = Chat(env, tmp_path, "--lang", "en")
    try:
        empty = chat.say("")
        assert "/balance" in empty  # an answer, not only the closing empty line
        for text in WHITESPACE_ONLY:
            assert chat.say(text, timeout=10) == empty, repr(text)
        assert "/bind — link your insurance account" in chat.say("/help")
        # Inside a flow, too: whitespace is the empty message there (no name yet), not a hang.
        assert "Step 1 of 3" in chat.say("/bind")
        assert "too short" in chat.say("\u3000")
        assert chat.close() == 0
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()


def test_a_closed_stdout_ends_the_chat_quietly(
    tmp_path: Path, redis_url: str, sync_redis: redis.Redis
) -> None:
    """``yibao chat | head -1``: once the reader is gone the chat ends, exit 0, nothing on stderr."""
    env = clean_env(
        YIBAO_REDIS__URL=redis_url,
        YIBAO_SECURITY__PII_KEY=new_key_text(),
        YIBAO_GENERAL__DATA_DIR=str(tmp_path / "data"),
        LANG="C.UTF-8",
    )
    proc = subprocess.Popen(
        [*yibao_command(), "chat", "--lang", "en"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        proc.stdin.write(b"/help\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"Commands:\n"
        proc.stdout.close()  # as head -1 does after its line
        try:
            proc.stdin.write(b"/help\n" * 200)  # answers that nobody reads
            proc.stdin.close()
        except BrokenPipeError:  # yibao chat already ended
            pass
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read().decode() == ""
    finally:
        if proc.poll() is None:
            proc.kill()

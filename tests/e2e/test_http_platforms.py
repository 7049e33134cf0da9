"""The insurance issue's acceptance check, with real processes: ``yibao sandbox serve`` on loopback,
``yibao chat`` configured with two ``http`` platforms, and the admin commands changing the platform
under the chat's feet."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from chat_process import Chat, clean_env, demo, free_port, wait_for_line, yibao_command

from bot.crypto.pii import new_key_text
from insurance import wire


def config_file(tmp_path: Path, redis_url: str, prefix: str, rest: str) -> Path:
    """A config on the test run's Redis under its own key prefix, with ``rest`` after it."""
    path = tmp_path / "yibao.toml"
    path.write_text(
        f'[general]\ndata_dir = "{tmp_path / "data"}"\n[redis]\nurl = "{redis_url}"\nprefix = "{prefix}"\n{rest}',
        encoding="utf-8",
    )
    return path


@dataclass
class Served:
    url: str
    secret_file: Path
    process: subprocess.Popen[str]

    def admin(self, *args: str) -> str:
        done = subprocess.run(
            [*yibao_command(), "sandbox", *args, "--url", self.url, "--secret-file", str(self.secret_file)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=clean_env(),
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    secret_file = tmp_path / "platform-secret"
    secret_file.write_text("a shared secret for this test run\n")
    port = free_port()
    process = subprocess.Popen(
        [*yibao_command(), "sandbox", "serve", "--port", str(port), "--secret-file", str(secret_file)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None, process.communicate()
        try:
            if httpx.get(url + wire.PATH_HEALTH, timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "yibao sandbox serve did not come up"
        time.sleep(0.05)
    yield Served(url, secret_file, process)
    process.terminate()
    process.communicate(timeout=10)


def test_two_http_platforms_bind_on_the_second_then_the_platform_changes(
    tmp_path: Path, redis_url: str, served: Served
) -> None:
    config = config_file(
        tmp_path,
        redis_url,
        "e2ehttp",
        f"""
[insurance]
balance_cache_seconds = 0

[[insurance.platforms]]
name = "shanghai"
label = "上海医保"
kind = "http"
regions = ["31"]
base_url = "{served.url}"
secret_file = "{served.secret_file}"

[[insurance.platforms]]
name = "national"
label = "国家医保服务平台"
kind = "http"
base_url = "{served.url}"
secret_file = "{served.secret_file}"
deadline_seconds = 3
""",
    )
    who = demo("low_balance")  # 王芳, a Shanghai ID number
    chat = Chat(
        clean_env(YIBAO_SECURITY__PII_KEY=new_key_text()), tmp_path, "--config", str(config), "--lang", "en"
    )
    try:
        chat.say("/bind")
        chat.say(who.name)
        asked = chat.say(who.id_number)
        assert "[1] 上海医保 (matches your ID number)   [2] 国家医保服务平台" in asked
        sent = chat.say("2")  # the second platform
        assert "Step 4 of 4" in sent  # with a choice of platform, the code is the fourth step
        assert "Your account is bound" in chat.say(chat.code(sent))

        balance = chat.say("/balance")
        assert "Personal account (个人账户): ¥32.63" in balance
        history = chat.say("/history")
        assert history.startswith("Your latest 10 transactions:")
        chart = chat.say("/chart")
        picture = Path(re.search(r"🖼 (\S+\.png)", chart)[1])  # type: ignore[index]
        assert picture.read_bytes().startswith(b"\x89PNG")

        served.admin("lock", who.id_number, "--minutes", "30")
        locked = chat.say("/balance")
        assert "locked after too many wrong password attempts" in locked
        assert "¥" not in locked
        served.admin("unlock", who.id_number)

        served.admin("sync-delay", who.id_number, "7200")
        lagging = chat.say("/balance")
        assert lagging.startswith("⚠️ The insurance platform is still syncing")
        assert "¥32.63" in lagging  # the last known figure, labelled with its time
        served.admin("sync-delay", who.id_number, "off")

        served.admin("maintenance", who.region, "on", "--retry-after", "600")
        down = chat.say("/balance")
        assert "under maintenance" in down
        assert "¥" not in down
        served.admin("maintenance", who.region, "off")

        served.admin("spend", who.id_number, "12.63")
        assert "Personal account (个人账户): ¥20.00" in chat.say("/balance")
        assert chat.close() == 0
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()


def test_a_platform_that_does_not_answer_gets_an_answer_in_time(tmp_path: Path, redis_url: str) -> None:
    """An upstream that accepts connections and never answers: the user hears so within the deadline."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    config = config_file(
        tmp_path,
        redis_url,
        "e2esilent",
        f"""[[insurance.platforms]]
name = "silent"
kind = "http"
base_url = "http://127.0.0.1:{port}"
secret = "whatever"
timeout_seconds = 0.5
deadline_seconds = 1.5
""",
    )
    chat = Chat(
        clean_env(YIBAO_SECURITY__PII_KEY=new_key_text()), tmp_path, "--config", str(config), "--lang", "en"
    )
    try:
        chat.say("/bind")
        chat.say("王芳")
        started = time.monotonic()
        answer = chat.say(demo("low_balance").id_number)
        took = time.monotonic() - started
        assert "can't reach the insurance platform" in answer
        assert took < 1.5 + 1.0, took
        assert chat.close() == 0
    finally:
        silent.close()
        if chat.proc.poll() is None:
            chat.proc.kill()


def test_the_alert_demo_an_alert_arrives_unprompted_once(
    tmp_path: Path, redis_url: str, served: Served
) -> None:
    """The README's alert demo: a short round, the chat bound to 王芳 with /alert 30 and the credit
    alert on, then the operator spends from (and credits) her account with the admin CLI and the
    alerts show up in the chat."""
    config = config_file(
        tmp_path,
        redis_url,
        "e2ealert",
        f"""[alerts]
every_seconds = 2
jitter_seconds = 0
quiet_hours = ""
poll_seconds = 0.2
[[insurance.platforms]]
name = "sandbox"
kind = "http"
base_url = "{served.url}"
secret_file = "{served.secret_file}"
""",
    )
    who = demo("low_balance")  # 王芳: ¥32.63
    chat = Chat(
        clean_env(YIBAO_SECURITY__PII_KEY=new_key_text()), tmp_path, "--config", str(config), "--lang", "en"
    )
    try:
        chat.say("/bind")
        chat.say(who.name)
        sent = chat.say(who.id_number)
        assert "Your account is bound" in chat.say(chat.code(sent))
        assert "drops below ¥30.00" in chat.say("/alert 30")
        assert "monthly credit" in chat.say("/alert credit on")
        time.sleep(3)  # a round passes above the threshold: nothing (and the credits so far are old news)
        served.admin("spend", who.id_number, "5")
        line = wait_for_line(chat, "🔔")
        assert line.startswith("🔔 Low balance: your personal account has ¥27.63")
        assert "Latest payment: ¥5.00" in wait_for_line(chat, "Latest payment")
        served.admin("spend", who.id_number, "2")  # lower still: the same crossing, nothing more
        time.sleep(5)
        served.admin("credit", who.id_number, "100")  # ¥125.63: re-armed at the next round
        assert "¥100.00" in wait_for_line(chat, "💰")  # and told: the credit alert is on
        time.sleep(3)
        served.admin("spend", who.id_number, "110")  # ¥15.63: a new crossing, one new alert
        assert "¥15.63" in wait_for_line(chat, "🔔")  # the next alert is this one, not a repeat
        assert "Alert turned off" in chat.say("/alert off")
    finally:
        assert chat.close() == 0
    printed = "".join(chat.transcript)
    assert printed.count("Low balance") == 0  # the alerts came between answers, not as one

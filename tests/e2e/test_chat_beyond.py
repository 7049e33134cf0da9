"""``yibao chat`` asked for what the platforms offer beyond the balance, for sandbox people we pick:
hospitals, a drug, the voucher (its QR saved as a file), contributions and family; and binds on a
platform that needs the local card number (in-process) and on one with a face check (a real
``yibao sandbox serve --profile face_check`` process, passed with ``yibao sandbox face-check``)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
from chat_process import Chat, clean_env, demo, free_port, wait_for_line, yibao_command

from bot.crypto.pii import new_key_text
from insurance import wire


def env_for(tmp_path: Path, redis_url: str, **extra: str) -> dict[str, str]:
    return clean_env(
        YIBAO_REDIS__URL=redis_url,
        YIBAO_REDIS__PREFIX=f"yb{free_port()}",
        YIBAO_SECURITY__PII_KEY=new_key_text(),
        YIBAO_GENERAL__DATA_DIR=str(tmp_path / "data"),
        LANG="C.UTF-8",
        **extra,
    )


def test_hospitals_drug_voucher_contributions_family(tmp_path: Path, redis_url: str) -> None:
    chat = Chat(env_for(tmp_path, redis_url), tmp_path)
    try:
        hospitals = chat.say("/hospitals 黄浦")
        assert "黄浦区" in hospitals
        assert "异地直接结算" in hospitals
        drug = chat.say("/drug 阿莫西林")
        assert "• 阿莫西林（胶囊）：甲类，" in drug
        who = demo("high_balance")  # 李娜, Beijing: a spouse and a child share her account
        chat.say("/bind")
        chat.say(who.name)
        sent = chat.say(who.id_number)
        assert "已绑定" in chat.say(chat.code(sent))
        voucher = chat.say("/voucher")
        assert f"https://sandbox.yibao.invalid/ecard/{who.member_id}" in voucher
        image = Path(next(line for line in voucher.splitlines() if "🖼" in line).split("🖼", 1)[1].strip())
        assert image.read_bytes().startswith(b"\x89PNG")
        contributions = chat.say("/contributions")
        assert "¥17,600.00 × 2% = ¥352.00" in contributions
        assert "¥352.00" in chat.say("这个月划入了多少")
        family = chat.say("/family")
        assert "配偶" in family
        assert "子女" in family
        assert "今年合计" in family
        assert "/family" in chat.say("/help")
        assert chat.close() == 0
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()


def test_bind_on_a_platform_that_needs_the_card_number(tmp_path: Path, redis_url: str) -> None:
    platforms = [{"name": "local", "label": "本地医保", "sandbox_profile": "local_card"}]
    chat = Chat(env_for(tmp_path, redis_url, YIBAO_INSURANCE__PLATFORMS=json.dumps(platforms)), tmp_path)
    try:
        who = demo("normal")
        chat.say("/bind")
        chat.say(who.name)
        asked = chat.say(who.id_number)
        assert "社保卡号" in asked
        assert "SMS" not in asked
        assert "6 到 20 位" in chat.say("12")
        sent = chat.say(who.local_card_number)
        assert "已绑定" in chat.say(chat.code(sent))
        assert chat.close() == 0
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()


def test_bind_through_the_platforms_face_check(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_env = clean_env()
    server = subprocess.Popen(
        [*yibao_command(), "sandbox", "serve", "--port", str(port), "--profile", "face_check"],
        cwd=tmp_path,
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    chat: Chat | None = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}{wire.PATH_HEALTH}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, "yibao sandbox serve exited"
            assert time.monotonic() < deadline, "the sandbox did not come up"
            time.sleep(0.05)
        secret = tmp_path / "secret"
        secret.write_text("yibao-sandbox-demo-secret")
        platforms = [
            {
                "name": "face",
                "label": "人脸核验医保",
                "kind": "http",
                "base_url": url,
                "secret_file": str(secret),
            }
        ]
        chat = Chat(
            env_for(
                tmp_path,
                redis_url,
                YIBAO_INSURANCE__PLATFORMS=json.dumps(platforms),
                YIBAO_INSURANCE__VERIFICATION_WAIT_SECONDS="60",
            ),
            tmp_path,
        )
        who = demo("normal")
        chat.say("/bind")
        chat.say(who.name)
        asked = chat.say(who.id_number)
        assert "https://sandbox.yibao.invalid/face-check/" in asked
        assert "人脸核验" in asked
        assert "尚未通过" in chat.say("好了吗")
        passed = subprocess.run(
            [*yibao_command(), "sandbox", "face-check", who.member_id, "pass", "--url", url],
            cwd=tmp_path,
            env=server_env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert passed.returncode == 0, passed.stderr
        assert "face check passed" in passed.stdout
        # No message from the user: the background poll continues the bind, unprompted.
        sms = wait_for_line(chat, "📱 SMS →", timeout=30)
        code = chat.code(sms)
        wait_for_line(chat, "验证码", timeout=10)
        assert "已绑定" in chat.say(code)
        assert chat.close() == 0
    finally:
        if chat is not None and chat.proc.poll() is None:
            chat.proc.kill()
        server.terminate()
        server.wait(timeout=10)

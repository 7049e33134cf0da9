"""Erasure that reaches the disk, for the embedded Redis an operator of the demo (or of a small
deployment without ``redis.url``) runs: after ``/unbind`` the AOF still holds the user's earlier
writes until it is rewritten, which Yibao asks for at least daily. The test binds two people in real
``yibao chat`` processes, unbinds one, lets a day pass for the rewrite record (its time is moved
back), starts ``yibao chat`` again and searches every file under the data folder."""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from chat_process import Chat, clean_env

from bot.crypto.pii import new_key_text
from insurance.sandbox import DemoPerson, SandboxPlatform


def _people() -> tuple[DemoPerson, DemoPerson]:
    normal = [p for p in SandboxPlatform.from_file().people() if p.scenario.value == "normal"]
    return normal[0], normal[1]


def _bind(env: dict[str, str], cwd: Path, who: DemoPerson, *, unbind: bool) -> None:
    chat = Chat(env, cwd, "--lang", "en")
    try:
        chat.say("/bind")
        chat.say(who.name)
        code = chat.code(chat.say(who.id_number))
        assert "Your account is bound" in chat.say(code)
        if unbind:
            assert "[1]" in chat.say("/unbind")
            assert "erased" in chat.say("1")
        assert chat.close() == 0
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()


def _found(data: Path, needle: str) -> list[str]:
    return sorted(
        str(p.relative_to(data)) for p in data.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()
    )


def test_an_unbound_member_is_gone_from_the_data_folder_after_the_daily_rewrite(tmp_path: Path) -> None:
    kept, erased = _people()
    data = tmp_path / "data"
    base = {"YIBAO_GENERAL__DATA_DIR": str(data), "YIBAO_ALERTS__ENABLED": "false", "LANG": "C.UTF-8"}
    _bind(clean_env(**base, YIBAO_CONSOLE__USER="kept"), tmp_path, kept, unbind=False)
    _bind(clean_env(**base, YIBAO_CONSOLE__USER="erased"), tmp_path, erased, unbind=True)

    # Erased from Redis, but the AOF still holds the writes that came before the erasure.
    assert _found(data, erased.member_id), "the AOF should still hold the erased binding"
    stamp = data / "redis" / "aof-rewritten"
    assert stamp.exists()  # the first start rewrote at once (there was no record yet)
    day_ago = time.time() - 25 * 3600
    os.utime(stamp, (day_ago, day_ago))

    chat = Chat(clean_env(**base, YIBAO_CONSOLE__USER="kept"), tmp_path, "--lang", "en")
    try:
        assert "Personal account" in chat.say("/balance")  # the kept binding survived the rewrite
        deadline = time.monotonic() + 60
        while stamp.stat().st_mtime < time.time() - 3600 or _found(data, erased.member_id):
            assert time.monotonic() < deadline, f"still on disk: {_found(data, erased.member_id)}"
            time.sleep(0.2)
        assert _found(data, erased.member_id) == []
        # The search sees into the rewritten files: the member still bound is there.
        assert _found(data, kept.member_id)
        assert chat.close() == 0
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()
    assert "rewrote the AOF" in (data / "yibao.log").read_text(encoding="utf-8")


def test_unbind_leaves_no_file_of_the_user_behind(tmp_path: Path, redis_url: str) -> None:
    """The console saves each /chart as a PNG under data_dir/files; /unbind deletes the user's, and
    only theirs (``anna-2`` is another user whose file names also start with ``anna-``)."""
    erased, kept = _people()
    data = tmp_path / "data"
    base = {
        "YIBAO_REDIS__URL": redis_url,
        "YIBAO_REDIS__PREFIX": f"t{secrets.token_hex(4)}",  # this test's own keys on the shared Redis
        "YIBAO_SECURITY__PII_KEY": new_key_text(),
        "YIBAO_GENERAL__DATA_DIR": str(data),
        "YIBAO_ALERTS__ENABLED": "false",
        "LANG": "C.UTF-8",
    }

    def bind_and_chart(user: str, who: DemoPerson) -> tuple[Chat, list[Path]]:
        chat = Chat(clean_env(**base, YIBAO_CONSOLE__USER=user), tmp_path, "--lang", "en")
        chat.say("/bind")
        chat.say(who.name)
        assert "Your account is bound" in chat.say(chat.code(chat.say(who.id_number)))
        charts = [Path(re.search(r"🖼 (\S+)", chat.say("/chart"))[1]) for _ in range(2)]  # type: ignore[index]
        assert all(p.is_file() and p.resolve().is_relative_to(data.resolve()) for p in charts)
        return chat, charts

    other, kept_charts = bind_and_chart("anna-2", kept)
    try:
        assert other.close() == 0
    finally:
        if other.proc.poll() is None:
            other.proc.kill()
    chat, charts = bind_and_chart("anna", erased)
    try:
        assert "[1]" in chat.say("/unbind")
        assert "erased" in chat.say("1")
        assert not any(p.exists() for p in charts)  # gone before the answer was printed
        assert chat.close() == 0
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()

    left = sorted(p.resolve() for p in data.rglob("*") if p.is_file() and p.suffix == ".png")
    assert left == sorted(p.resolve() for p in kept_charts)  # the other user's charts stay
    assert not [p for p in data.rglob("*") if p.name.startswith("anna-yibao")]

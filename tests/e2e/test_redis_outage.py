"""Alerts through a Redis outage, as an operator meets one: two ``yibao worker`` processes, a
``redis-server`` with AOF that is stopped the moment Telegram (the Bot API emulator) has accepted an
alert, so the worker that sent it cannot record it, and started again later than
``reclaim_after_seconds``. The user must get that alert once; a worker killed while it waits gives at
most the one documented extra copy (README, "Alerts": killed between Telegram's confirmation and the
record).

Also the services: ``yibao worker`` started while Redis is down waits for it
(``redis.connect_wait_seconds``), and gives up with exit 2 and one line when it never comes;
``yibao chat`` waits too, and while it runs says once that Redis went and once that it came back,
with an apology for each message meanwhile and no traceback.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from botapi_emulator import BotApiEmulator, LoopbackServer
from chat_process import Chat, clean_env, yibao_command
from test_alert_workers import FIRST_CHAT, PREFIX, CountingSandbox, RedisProcess, Scene

from bot.crypto.pii import new_key_text
from insurance.server import DEMO_SECRET, create_app

RECLAIM = 2.0
"""``alerts.reclaim_after_seconds`` in these tests; every outage is four times as long."""
OUTAGE = 4 * RECLAIM


class StopsRedisOnFirstAlert(BotApiEmulator):
    """Telegram, which kills Redis right after it took the first alert and before it answers: the
    sender has its confirmation, and Redis is gone when it tries to record it."""

    def __init__(self) -> None:
        super().__init__()
        self.redis: RedisProcess | None = None
        self.first_chat: int | None = None
        self.fired = threading.Event()

    async def _send_message(self, params: dict[str, object]) -> dict[str, object]:
        result = await super()._send_message(params)
        if self.redis is not None and not self.fired.is_set() and "Low balance" in str(params.get("text")):
            self.first_chat = int(str(params["chat_id"]))
            self.redis.kill()
            self.fired.set()
        return result


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[Scene, StopsRedisOnFirstAlert]]:
    sandbox = CountingSandbox()
    platform = LoopbackServer(create_app(sandbox, keys={"yibao": DEMO_SECRET}, admin=False), name="sandbox")
    platform.start()
    server = RedisProcess(tmp_path / "redis")
    server.start()
    emulator = StopsRedisOnFirstAlert()
    emulator.start()
    scene = Scene(tmp_path, emulator, sandbox, platform.url, server, new_key_text())
    scene.subscribe_all()
    try:
        yield scene, emulator
    finally:
        for w in scene.workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        try:
            for w in scene.workers:
                assert w.wait(timeout=30) in (0, -signal.SIGKILL)
        finally:
            for w in scene.workers:
                if w.poll() is None:
                    w.kill()
            emulator.stop()
            if server.proc is not None and server.proc.poll() is None:
                server.kill()
            platform.stop()


def _logs(scene: Scene) -> list[str]:
    return [(scene.tmp / f"worker{n}.log").read_text() for n in range(len(scene.workers))]


def _sender_of(scene: Scene, chat: int, timeout: float = 20.0) -> int:
    """The worker whose log says it delivered ``chat``'s alert and could not record it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n, log in enumerate(_logs(scene)):
            if any(
                f"tg:{chat} " in line and "not" in line and "recorded" in line for line in log.splitlines()
            ):
                return n
        time.sleep(0.1)
    raise AssertionError(f"no worker says it could not record the alert to {chat}: {_logs(scene)}")


def _start_outage(scene: Scene, emulator: StopsRedisOnFirstAlert) -> int:
    emulator.redis = scene.redis
    config = scene.config(send_rate=4, reclaim_after_seconds=RECLAIM)
    scene.start_worker(config)
    scene.start_worker(config)
    assert emulator.fired.wait(90), "no alert was sent"
    assert emulator.first_chat is not None
    return emulator.first_chat


def test_an_alert_sent_before_redis_went_away_is_sent_once(
    outage: tuple[Scene, StopsRedisOnFirstAlert],
) -> None:
    scene, emulator = outage
    first = _start_outage(scene, emulator)
    sender = _sender_of(scene, first)
    time.sleep(OUTAGE)  # longer than reclaim_after_seconds: the other worker would take the entry over
    assert all(w.poll() is None for w in scene.workers)
    scene.redis.start()  # the same AOF (appendfsync always): the pending entry and the claim are there
    scene.every_alert_once()
    log = _logs(scene)[sender]
    assert f"alert to tg:{first} recorded" in log


def test_a_sender_killed_while_redis_is_away_gives_at_most_one_extra_copy(
    outage: tuple[Scene, StopsRedisOnFirstAlert],
) -> None:
    scene, emulator = outage
    first = _start_outage(scene, emulator)
    sender = _sender_of(scene, first)
    scene.workers[sender].kill()  # between Telegram's confirmation and the record: the documented gap
    scene.workers[sender].wait()
    time.sleep(OUTAGE)
    scene.redis.start()
    survivor = 1 - sender
    want = {FIRST_CHAT + i for i in range(len(scene.chats))}
    scene.wait(lambda: set(scene.alerts()) == want, what="every alert")
    # The stopped sender's claim is taken over once the survivor has seen it unchanged for
    # reclaim_after_seconds with Redis reachable: then the alert is sent again, once.
    scene.wait(lambda: "took over the alert" in _logs(scene)[survivor], what="the take-over")
    time.sleep(2.5 * RECLAIM)  # any further copy would have arrived by now
    counts = scene.alerts()
    assert counts[first] == 2, counts
    assert counts - Counter({first: 2}) == Counter(dict.fromkeys(want - {first}, 1))


# -- services that wait for Redis ----------------------------------------------------------------------


def _worker_env(scene: Scene, **extra: str) -> dict[str, str]:
    return clean_env(
        YIBAO_TELEGRAM__TOKEN=scene.emulator.token,
        YIBAO_TELEGRAM__API_BASE_URL=scene.emulator.url,
        YIBAO_REDIS__URL=scene.redis.url,
        YIBAO_REDIS__PREFIX=PREFIX,
        YIBAO_SECURITY__PII_KEY=scene.key,
        YIBAO_GENERAL__DATA_DIR=str(scene.tmp / "data-late"),
        **extra,
    )


def test_a_worker_started_before_redis_waits_for_it(outage: tuple[Scene, StopsRedisOnFirstAlert]) -> None:
    scene, _ = outage
    scene.redis.kill()
    log_file = scene.tmp / "late.log"
    proc = subprocess.Popen(
        [*yibao_command(), "worker", "--config", str(scene.config())],
        cwd=scene.tmp,
        env=_worker_env(scene, YIBAO_LOGGING__FILE=str(log_file), YIBAO_REDIS__CONNECT_WAIT_SECONDS="60"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(5)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        waiting = log_file.read_text()
        assert "waiting for Redis" in waiting
        assert "Traceback" not in waiting
        scene.redis.start()
        scene.every_alert_once()  # the worker serves
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log_file.read_text()


def test_a_worker_gives_up_on_a_redis_that_never_comes(outage: tuple[Scene, StopsRedisOnFirstAlert]) -> None:
    scene, _ = outage
    scene.redis.kill()
    started = time.monotonic()
    done = subprocess.run(
        [*yibao_command(), "worker", "--config", str(scene.config())],
        cwd=scene.tmp,
        env=_worker_env(scene, YIBAO_REDIS__CONNECT_WAIT_SECONDS="3"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert 3 <= took < 30
    errors = [line for line in done.stderr.splitlines() if line.startswith("yibao:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"yibao: cannot start: Redis at {scene.redis.url} did not answer within 3 s")
    assert "Traceback" not in done.stderr
    attempts = [line for line in done.stderr.splitlines() if "waiting for Redis" in line]
    assert len(attempts) >= 2, done.stderr


def test_chat_waits_for_redis_and_says_once_that_it_went_and_came_back(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "redis")
    data = tmp_path / "data"
    env = clean_env(
        YIBAO_REDIS__URL=server.url,
        YIBAO_REDIS__CONNECT_WAIT_SECONDS="60",
        YIBAO_SECURITY__PII_KEY=new_key_text(),
        YIBAO_GENERAL__DATA_DIR=str(data),
        LANG="C.UTF-8",
    )
    chat = Chat(env, tmp_path, "--lang", "en")  # Redis is not there yet
    try:
        time.sleep(3)
        assert chat.proc.poll() is None
        server.start()
        assert "Yibao" in chat.say("/start", timeout=60)
        server.kill()
        for _ in range(3):
            assert "Sorry, something went wrong" in chat.say("/help", timeout=60)
        server.start()
        deadline = time.monotonic() + 60
        while "Sorry, something went wrong" in (answer := chat.say("/start", timeout=60)):
            assert time.monotonic() < deadline, "Redis came back but the chat did not"
            time.sleep(0.5)
        assert "Yibao" in answer
        assert chat.close() == 0
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
    log = (data / "yibao.log").read_text(encoding="utf-8")
    assert "waiting for Redis" in log
    assert log.count("lost the connection to Redis") == 1, log
    assert log.count("is back, after") == 1, log
    assert "Traceback" not in log
    assert "update failed" not in log


def test_a_worker_stopped_while_it_waits_for_redis_exits_0(
    outage: tuple[Scene, StopsRedisOnFirstAlert],
) -> None:
    scene, _ = outage
    scene.redis.kill()
    log_file = scene.tmp / "stopped.log"
    proc = subprocess.Popen(
        [*yibao_command(), "worker", "--config", str(scene.config())],
        cwd=scene.tmp,
        env=_worker_env(scene, YIBAO_LOGGING__FILE=str(log_file), YIBAO_REDIS__CONNECT_WAIT_SECONDS="60"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (log_file.exists() and "waiting for Redis" in log_file.read_text()):
            assert proc.poll() is None, "the worker did not wait"
            assert time.monotonic() < deadline, "the worker did not say it waits"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0  # at once, not after connect_wait_seconds
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
        assert "Traceback" not in log_file.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

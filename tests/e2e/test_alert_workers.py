"""Alerts as an operator runs them: ``yibao worker`` processes, killed and restarted, against a Redis
server with AOF that is itself killed and restarted, an insurance platform over HTTP on loopback (the
sandbox, counting each balance it is asked for) and Telegram (the Bot API emulator)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from botapi_emulator import BotApiEmulator, LoopbackServer
from chat_process import clean_env, yibao_command
from pydantic import SecretStr
from redis_topologies import ClusterSet, SentinelSet, missing_tools
from topologies import CLUSTER_SHARDS, redis_env, sync_client

from bot.crypto.pii import PiiCipher, new_key_text, parse_key
from bot.storage.codec import StateCodec
from bot.storage.embedded_redis import find_redis_server
from bot.storage.keys import Keys, UserKind
from dialogs.crossing import Watch
from dialogs.models import Binding, MemberId, PlatformName, UserKey
from insurance.models import Balance
from insurance.sandbox import SandboxPlatform
from insurance.sandbox_data import Scenario
from insurance.server import DEMO_SECRET, create_app

PREFIX = "wke2e"
FIRST_CHAT = 5_000_000


class CountingSandbox(SandboxPlatform):
    """The sandbox, counting the balances it is asked for and answering each after ``delay`` seconds."""

    def __init__(self) -> None:
        source = SandboxPlatform.from_file()
        super().__init__(source.data)
        self.asked: Counter[str] = Counter()
        self.delay = 0.0

    async def balance(self, member_id: str) -> Balance:
        self.asked[member_id] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().balance(member_id)


class RedisProcess:
    """A redis-server on a fixed port with AOF fsynced at every write, that can be killed and restarted."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                str(find_redis_server()),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@dataclass
class Scene:
    tmp: Path
    emulator: BotApiEmulator
    sandbox: CountingSandbox
    platform_url: str
    redis: RedisProcess | None
    key: str
    redis_settings: dict[str, Any] = field(default_factory=dict)
    """The ``[redis]`` settings of the workers (a single Redis, Sentinel or a cluster); by default
    those of ``redis``."""
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    chats: dict[UserKey, str] = field(default_factory=dict)
    """Subscribed user -> the member they are bound to."""

    def subscribe_all(self) -> None:
        """Every employee of the sandbox with a personal account, bound and with a threshold just
        above their balance: each is due one alert."""
        codec = StateCodec(PiiCipher(parse_key(self.key)))
        keys = Keys(PREFIX, shards=CLUSTER_SHARDS if self.redis_settings.get("cluster") else 1)
        client = sync_client(self.redis_settings)
        people = [
            p
            for p in self.sandbox.data.people
            if p.scenario in (Scenario.NORMAL, Scenario.HIGH_BALANCE, Scenario.LOW_BALANCE)
        ]
        for i, p in enumerate(people):
            user = UserKey(f"tg:{FIRST_CHAT + i}")
            self.emulator.user(FIRST_CHAT + i).started = True  # they wrote to the bot when binding
            balance = asyncio.run(self.sandbox.balance(p.member_id)).personal_account
            assert balance is not None
            binding = Binding(
                member_id=MemberId(p.member_id),
                platform=PlatformName("sandbox"),
                id_number=SecretStr(p.id_number),
                phone=SecretStr(p.phone),
                bound_at=datetime.now(UTC),
            )
            client.hset(
                keys.user(user, UserKind.PROFILE),
                mapping={
                    **codec.encode_binding(user, binding),
                    "threshold": str(balance + Decimal(1)),
                    "alert": Watch(os.urandom(6).hex(), told=False).mark(),
                    "alert_lang": "en",
                },
            )
            client.zadd(keys.schedule_of(user), {user: 0})
            self.chats[user] = p.member_id
        client.close()
        self.sandbox.asked.clear()

    def config(self, **alerts: object) -> Path:
        settings = {
            "every_seconds": 3600,
            "jitter_seconds": 0,
            "quiet_hours": "",
            "poll_seconds": 0.2,
            "reclaim_after_seconds": 2,
            "batch_size": 2,
            "platform_concurrency": 1,
            "send_rate": 10,
            **alerts,
        }
        path = self.tmp / "worker.toml"
        lines = ["[alerts]", *(f"{k} = {v!r}".replace("'", '"') for k, v in settings.items())]
        lines += [
            "[[insurance.platforms]]",
            'name = "sandbox"',
            'kind = "http"',
            f'base_url = "{self.platform_url}"',
            f'secret = "{DEMO_SECRET.decode()}"',
            "retries = 0",
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_worker(self, config: Path) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        env = clean_env(
            YIBAO_TELEGRAM__TOKEN=self.emulator.token,
            YIBAO_TELEGRAM__API_BASE_URL=self.emulator.url,
            **redis_env(self.redis_settings),
            YIBAO_REDIS__PREFIX=PREFIX,
            YIBAO_SECURITY__PII_KEY=self.key,
            YIBAO_GENERAL__DATA_DIR=str(self.tmp / f"data{n}"),
            YIBAO_LOGGING__FILE=str(self.tmp / f"worker{n}.log"),
        )
        proc = subprocess.Popen(
            [*yibao_command(), "worker", "--config", str(config)],
            cwd=self.tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.workers.append(proc)
        return proc

    def alerts(self) -> Counter[int]:
        """Alerts delivered, per chat."""
        sent = self.emulator.calls_to("sendMessage")
        return Counter(
            int(c.params["chat_id"]) for c in sent if "Low balance" in str(c.params.get("text", ""))
        )

    def wait(self, done: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not done():
            for w in self.workers:
                if w.poll() not in (None, -signal.SIGKILL, 0):
                    pytest.fail(f"a worker exited {w.returncode}: {w.stderr.read() if w.stderr else ''}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.alerts()}"
            time.sleep(0.05)

    def __post_init__(self) -> None:
        if not self.redis_settings and self.redis is not None:
            self.redis_settings = {"url": self.redis.url}

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                assert w.wait(timeout=20) in (0, -signal.SIGKILL)
            finally:
                if w.poll() is None:
                    w.kill()

    def every_alert_once(self) -> None:
        want = {FIRST_CHAT + i for i in range(len(self.chats))}
        self.wait(lambda: set(self.alerts()) == want, what="every alert")
        time.sleep(2.5)  # longer than the take-over time: any second copy would have arrived
        assert self.alerts() == Counter(dict.fromkeys(want, 1))
        assert not self.emulator.calls_to("sendMessage") or all(
            "Low balance" in str(c.params.get("text")) for c in self.emulator.calls_to("sendMessage")
        )


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    sandbox = CountingSandbox()
    platform = LoopbackServer(create_app(sandbox, keys={"yibao": DEMO_SECRET}, admin=False), name="sandbox")
    platform.start()
    server = RedisProcess(tmp_path / "redis")
    server.start()
    with BotApiEmulator() as emulator:
        s = Scene(tmp_path, emulator, sandbox, platform.url, server, new_key_text())
        s.subscribe_all()
        try:
            yield s
        finally:
            s.stop_workers()
    server.kill()
    platform.stop()


@pytest.fixture
def topology_scene(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Scene, Any]]:
    """A scene on a topology of its own (``sentinel`` or ``cluster``), and that topology."""
    if (why := missing_tools()) is not None:
        pytest.skip(why)
    servers: SentinelSet | ClusterSet = (
        SentinelSet(tmp_path / "sentinel")
        if request.param == "sentinel"
        else ClusterSet(tmp_path / "cluster")
    )
    servers.start()
    sandbox = CountingSandbox()
    platform = LoopbackServer(create_app(sandbox, keys={"yibao": DEMO_SECRET}, admin=False), name="sandbox")
    platform.start()
    try:
        with BotApiEmulator() as emulator:
            s = Scene(tmp_path, emulator, sandbox, platform.url, None, new_key_text(), servers.settings())
            s.subscribe_all()
            try:
                yield s, servers
            finally:
                s.stop_workers()
    finally:
        platform.stop()
        servers.stop()


def test_worker_killed_in_the_middle_of_a_sweep(scene: Scene) -> None:
    scene.sandbox.delay = 0.25  # a batch of two takes half a second: the sweep takes several
    config = scene.config()
    first = scene.start_worker(config)
    scene.wait(lambda: sum(scene.sandbox.asked.values()) >= 4, what="the sweep to start")
    first.kill()
    first.wait()
    assert sum(scene.sandbox.asked.values()) < len(scene.chats)
    scene.sandbox.delay = 0
    scene.start_worker(config)
    scene.every_alert_once()


def test_worker_killed_in_the_middle_of_sending(scene: Scene) -> None:
    config = scene.config(send_rate=3)
    first = scene.start_worker(config)
    scene.wait(lambda: len(scene.alerts()) >= 3, what="sending to start")
    first.kill()
    first.wait()
    assert len(scene.alerts()) < len(scene.chats)
    scene.start_worker(config)
    scene.every_alert_once()


def test_redis_killed_and_restarted_while_sending(scene: Scene) -> None:
    config = scene.config(send_rate=4)
    scene.start_worker(config)
    scene.wait(lambda: len(scene.alerts()) >= 3, what="sending to start")
    assert scene.redis is not None
    scene.redis.kill()
    time.sleep(1.5)
    scene.redis.start()  # the same AOF: nothing is lost, and the worker reconnects
    scene.every_alert_once()


def test_maintenance_during_a_sweep_alerts_after_recovery(scene: Scene) -> None:
    regions = {m.split("-")[1] for m in scene.chats.values()}
    for region in regions:
        scene.sandbox.set_maintenance(region, True)
    scene.start_worker(scene.config(every_seconds=4, jitter_seconds=0, batch_size=10))
    scene.wait(lambda: all(scene.sandbox.asked[m] >= 1 for m in scene.chats.values()), what="a sweep")
    time.sleep(0.5)
    assert scene.alerts() == Counter()  # no alert from a platform in maintenance
    for region in regions:
        scene.sandbox.set_maintenance(region, False)
    scene.every_alert_once()


def test_three_workers_check_each_user_once_a_round(scene: Scene) -> None:
    config = scene.config(batch_size=3)
    for _ in range(3):
        scene.start_worker(config)
    scene.every_alert_once()
    assert scene.sandbox.asked == Counter(dict.fromkeys(scene.chats.values(), 1))
    logs = [(scene.tmp / f"worker{n}.log").read_text() for n in range(3)]
    assert sum("alert sent" in log for log in logs) >= 2  # the sending was shared too


@pytest.mark.slow
@pytest.mark.parametrize("topology_scene", ["sentinel", "cluster"], indirect=True)
def test_a_primary_killed_while_sending_loses_and_doubles_no_alert(topology_scene: tuple[Scene, Any]) -> None:
    """Two workers on Sentinel or a cluster; the primary (or the master holding the most alert
    work) is killed with SIGKILL mid-round and started again (it comes back as a replica). Every
    user still gets their alert, once: what was queued, claimed and recorded waited for a replica."""
    scene, servers = topology_scene
    config = scene.config(send_rate=4, batch_size=3)
    scene.start_worker(config)
    scene.start_worker(config)
    scene.wait(lambda: len(scene.alerts()) >= 3, what="sending to start")
    if isinstance(servers, SentinelSet):
        servers.fail_over()
    else:
        servers.fail_over(servers.nodes[0])
    scene.every_alert_once()

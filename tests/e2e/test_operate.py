"""Operating Yibao (issue 16), as an operator sees it: ``yibao run`` and ``yibao worker`` as real
processes on a private Redis, a Bot API emulator on loopback, their ``/metrics`` scraped while a user
binds, asks and gets an alert; ``/readyz`` while Redis goes and comes back; ``/mydata`` against
``yibao admin export``; ``yibao admin erase`` leaving nothing of the user; the audit trail; and a
JSON log with no sandbox person's personal data in it.

One conversation, one set of processes, several checks, on each Telegram engine: about 25 s each.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from botapi_emulator import BotApiEmulator, FakeUser
from chat_process import clean_env, demo, free_port, yibao_command
from metrics_rules import check_names, promtool_problems
from prometheus_client.parser import text_string_to_metric_families

from bot.crypto.pii import new_key_text
from bot.storage.embedded_redis import find_redis_server
from insurance.sandbox import SandboxPlatform

USER = 7_340_021_955  # long enough that no figure in a scrape or a log contains it by chance
OTHER = 2002
PREFIX = "ops"


class RedisProcess:
    """A redis-server on a fixed port that can be stopped and started again (same port, same data)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(find_redis_server()), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--save", ""],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@dataclass
class Service:
    process: subprocess.Popen[str]
    log: Path
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@dataclass
class Scene:
    tmp: Path
    emulator: BotApiEmulator
    redis: RedisProcess
    env: dict[str, str]
    sms: Path
    services: list[Service]

    def start(self, command: str, name: str, **extra: str) -> Service:
        log = self.tmp / f"{name}.log"
        port = free_port()
        env = clean_env(
            **self.env,
            YIBAO_LOGGING__FILE=str(log),
            YIBAO_HTTP__LISTEN_PORT=str(port),
            YIBAO_GENERAL__DATA_DIR=str(self.tmp / f"data-{name}"),
            **extra,
        )
        process = subprocess.Popen(
            [*yibao_command(), command], cwd=self.tmp, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        service = Service(process, log, port)
        self.services.append(service)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(service.url("/healthz"), timeout=1).status_code == 200:
                    return service
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                pytest.fail(f"yibao {command} exited {process.returncode}: {process.communicate()}")
            assert time.monotonic() < deadline, f"yibao {command} did not serve /healthz"
            time.sleep(0.1)

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = clean_env(**self.env, YIBAO_GENERAL__DATA_DIR=str(self.tmp / "data-admin"))
        done = subprocess.run(
            [*yibao_command(), *args], cwd=self.tmp, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done

    def code_for(self, phone: str) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.sms.exists():
                mine = [json.loads(x) for x in self.sms.read_text(encoding="utf-8").splitlines()]
                mine = [x for x in mine if x["to"] == phone]
                if mine:
                    return re.search(r"\b(\d{6})\b", mine[-1]["text"])[1]  # type: ignore[index]
            time.sleep(0.05)
        raise AssertionError("no SMS")

    def codes(self) -> list[str]:
        lines = self.sms.read_text(encoding="utf-8").splitlines() if self.sms.exists() else []
        return [re.search(r"\b(\d{6})\b", json.loads(x)["text"])[1] for x in lines]  # type: ignore[index]


@pytest.fixture(params=["ptb", "aiogram"])
def scene(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Scene]:
    """On both Telegram engines: each reports through the same core and rate limiter."""
    server = RedisProcess(tmp_path / "redis")
    server.start()
    with BotApiEmulator() as emulator:
        sms = tmp_path / "sms.jsonl"
        env = {
            "YIBAO_TELEGRAM__TOKEN": emulator.token,
            "YIBAO_TELEGRAM__API_BASE_URL": emulator.url,
            "YIBAO_TELEGRAM__ENGINE": str(request.param),
            "YIBAO_REDIS__URL": server.url,
            "YIBAO_REDIS__PREFIX": PREFIX,
            "YIBAO_SECURITY__PII_KEY": new_key_text(),
            "YIBAO_SMS__GATEWAY": "file",
            "YIBAO_SMS__FILE_PATH": str(sms),
            "YIBAO_LOGGING__LEVEL": "DEBUG",
            "YIBAO_LOGGING__FORMAT": "json",
            "YIBAO_HTTP__ALWAYS": "true",
            "YIBAO_ALERTS__QUIET_HOURS": "",
            "YIBAO_ALERTS__POLL_SECONDS": "0.2",
            "YIBAO_AUDIT__FILE": str(tmp_path / "audit.jsonl"),
            "YIBAO_INSURANCE__BALANCE_CACHE_SECONDS": "0",
        }
        scene = Scene(tmp_path, emulator, server, env, sms, [])
        try:
            yield scene
        finally:
            for service in scene.services:
                service.stop()
            server.stop()


def scrape(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the service's /metrics: (name, sorted labels) -> value."""
    response = httpx.get(service.url("/metrics"), timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, labels[k]) in ls for k in labels))


def converse(user: FakeUser, text: str, expect: str, timeout: float = 10.0) -> str:
    before = len(user.inbox)
    user.says(text)
    return user.wait_for(expect, timeout=timeout, after=before).text


def test_operating_yibao(scene: Scene) -> None:
    run = scene.start("run", "run", YIBAO_ALERTS__ENABLED="false")
    worker = scene.start("worker", "worker")

    ready = httpx.get(run.url("/readyz"), timeout=5)
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"redis", "telegram", "insurance"}
    assert httpx.get(worker.url("/readyz"), timeout=5).json()["checks"]["telegram"]["ok"] is True
    before = scrape(run)

    # -- one user's whole session: bind (a wrong code first), ask, subscribe, get the alert --------
    who = demo("normal")
    zh = scene.emulator.user(USER, language_code="zh-hans")
    converse(zh, "/start", "医保助手")
    converse(zh, "/bind", "第 1 步")
    converse(zh, who.name, "第 2 步")
    converse(zh, who.id_number, "第 3 步")
    code = scene.code_for(who.phone)
    converse(zh, f"{(int(code) + 1) % 1_000_000:06d}", "还可以再试")
    converse(zh, code, "已绑定")
    scene.emulator.fail_next("sendMessage", status=429, retry_after=1)
    converse(zh, "我的医保还剩多少?", "个人账户")
    converse(zh, "/alert 50000", "¥50,000.00")
    zh.wait_for("低于", timeout=15)  # the alert, sent by the worker
    mydata = converse(zh, "/mydata", "保存")

    other = scene.emulator.user(OTHER, language_code="en")
    scene.emulator.fail_next("sendMessage", status=403, description="Forbidden: bot was blocked by the user")
    other.says("/help")
    # a token Telegram stops accepting: not ready until a call goes through again
    scene.emulator.fail_next("sendMessage", status=401, description="Unauthorized", chat_id=OTHER)
    other.says("/help")
    deadline = time.monotonic() + 10
    while httpx.get(run.url("/readyz"), timeout=5).status_code == 200:
        assert time.monotonic() < deadline, "/readyz stayed ready with a rejected token"
        time.sleep(0.1)
    assert httpx.get(run.url("/readyz"), timeout=5).json()["checks"]["telegram"]["ok"] is False
    converse(other, "/help", "Commands")
    assert httpx.get(run.url("/readyz"), timeout=5).status_code == 200

    after = scrape(run)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("yibao_updates_total", platform="tg") >= 9
    assert moved("yibao_updates_total", platform="tg", kind="bind") == 1
    assert moved("yibao_updates_total", platform="tg", kind="text") >= 5
    assert moved("yibao_answer_seconds_count", platform="tg") >= 9
    assert moved("yibao_binds_started_total", platform="tg") == 1
    assert moved("yibao_binds_code_sent_total", platform="tg", insurer="sandbox") == 1
    assert moved("yibao_binds_completed_total", platform="tg", insurer="sandbox") == 1
    assert moved("yibao_binds_failed_total", platform="tg", reason="code_wrong") == 1
    assert moved("yibao_otp_codes_sent_total", platform="tg") == 1
    assert moved("yibao_otp_checks_total", platform="tg", verdict="ok") == 1
    assert moved("yibao_otp_checks_total", platform="tg", verdict="wrong") == 1
    assert moved("yibao_insurance_requests_total", insurer="sandbox", call="lookup", outcome="ok") == 1
    assert moved("yibao_insurance_requests_total", insurer="sandbox", call="balance", outcome="ok") >= 2
    assert moved("yibao_insurance_request_seconds_count", insurer="sandbox", call="balance") >= 2
    assert value(after, "yibao_insurance_breaker_state", insurer="sandbox", state="closed") == 1
    assert moved("yibao_redis_round_trips_total") > 10
    assert moved("yibao_chat_sends_total", platform="tg", result="ok") >= 9
    assert moved("yibao_chat_sends_total", platform="tg", result="blocked") == 1
    assert moved("yibao_chat_api_refusals_total", platform="tg", status="429") == 1
    assert moved("yibao_chat_api_refusals_total", platform="tg", status="403") == 1
    assert moved("yibao_chat_api_refusals_total", platform="tg", status="401") == 1
    assert moved("yibao_chat_rate_limit_wait_seconds_count", platform="tg") >= 9

    round_ = scrape(worker)
    assert value(round_, "yibao_alerts_checked_total") >= 1
    assert value(round_, "yibao_alerts_queued_total", platform="tg") == 1
    assert value(round_, "yibao_alerts_sent_total", platform="tg") == 1
    assert value(round_, "yibao_outbox_depth", platform="tg") == 0
    assert value(round_, "yibao_outbox_oldest_age_seconds", platform="tg") == 0
    assert value(round_, "yibao_insurance_requests_total", call="balances", outcome="ok") >= 1

    for service in (run, worker):
        text = httpx.get(service.url("/metrics"), timeout=5).text
        assert check_names(text) == []
        assert promtool_problems(text) in (None, "")
        assert str(USER) not in text
        assert who.phone not in text

    # -- /mydata and the operator's export hold the same items ----------------------------------------
    export = json.loads(scene.admin("admin", "export", f"tg:{USER}", "--ticket", "DSR-1").stdout)
    items = export["items"]
    listed = [line for line in mydata.splitlines() if line.startswith("• ")]
    assert len(listed) == len(items)
    for line, item in zip(listed, items, strict=True):
        assert f": {item['value']} (" in line
    whats = {item["what"] for item in items}
    assert {"binding.platform", "binding.id_number", "binding.phone", "alert.threshold"} <= whats
    shown = json.dumps(export, ensure_ascii=False)
    assert who.id_number not in shown
    assert who.phone not in shown
    assert who.name not in shown

    # -- /readyz follows Redis ------------------------------------------------------------------------
    scene.redis.stop()
    down = httpx.get(run.url("/readyz"), timeout=10)
    assert down.status_code == 503
    assert down.json()["checks"]["redis"]["ok"] is False
    assert down.json()["checks"]["telegram"]["ok"] is True
    converse(zh, "/balance", "出了点问题")  # the apology, counted
    failures = scrape(run)
    assert value(failures, "yibao_answer_failures_total", platform="tg", cause="store_unavailable") == 1
    assert value(failures, "yibao_redis_errors_total") >= 1
    scene.redis.start()
    deadline = time.monotonic() + 10
    while httpx.get(run.url("/readyz"), timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "not ready again after Redis came back"
        time.sleep(0.2)

    # -- erasure leaves nothing of the user; the audit trail has it all ------------------------------
    scene.admin("admin", "erase", f"tg:{USER}", "--ticket", "DSR-1")
    client = redis.Redis.from_url(scene.redis.url)
    secrets_of_user = [f"tg:{USER}", who.member_id, who.id_number, who.phone]
    for key in client.keys("*"):
        kind = client.type(key).decode()
        content = repr(key) + repr(
            {
                "string": client.get,
                "hash": client.hgetall,
                "zset": lambda k: client.zrange(k, 0, -1),
                "stream": client.xrange,
                "set": client.smembers,
                "list": lambda k: client.lrange(k, 0, -1),
            }[kind](key)
        )
        for secret in secrets_of_user:
            assert secret not in content, (key, secret)
    tail = scene.admin("audit", "tail", "--json").stdout
    records = [json.loads(line) for line in tail.splitlines()]
    actions = [r["action"] for r in records]
    assert actions == ["bind_failed", "bound", "exported", "erased"]
    assert len({r["who"] for r in records}) == 1
    assert all(r["platform"] == "tg" for r in records)
    assert str(USER) not in tail
    assert len((scene.tmp / "audit.jsonl").read_text().splitlines()) == 4

    # -- the figures ------------------------------------------------------------------------------------
    png = scene.tmp / "stats.png"
    stats = scene.admin("admin", "stats", "--days", "2", "--png", str(png)).stdout
    assert "Bind funnel" in stats
    assert "<5" in stats  # one person's bind is a group under 5
    assert png.read_bytes().startswith(b"\x89PNG")

    # -- the JSON log holds no personal data --------------------------------------------------------------
    assert run.stop() == 0
    assert worker.stop() == 0
    people = SandboxPlatform.from_file().people()
    typed = ["我的医保还剩多少?"]
    for service in (run, worker):
        text = service.log.read_text(encoding="utf-8")
        lines = [json.loads(line) for line in text.splitlines()]
        assert lines
        assert all({"time", "level", "logger", "event"} <= set(line) for line in lines)
        assert any(line.get("user", "").startswith("u:") and line.get("platform") == "tg" for line in lines)
        for person in people:
            for secret in (person.name, person.id_number, person.phone):
                assert secret not in text, (service.log.name, person.scenario, secret[:2])
        for code_ in scene.codes():
            assert code_ not in text
        for message in typed:
            assert message not in text
        assert f"tg:{USER}" not in text
        assert f"tg:{OTHER}" not in text

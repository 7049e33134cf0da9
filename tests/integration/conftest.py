"""A whole Yibao runtime for a test: built by ``bot.app.build_runtime`` on the test run's Redis, with
the sandbox, the ``file`` SMS gateway and a clock the test moves by hand."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis
from topologies import CLUSTER_SHARDS, all_keys

from bot.app import Runtime, build_runtime
from bot.config import Settings
from bot.crypto.pii import new_key_text
from dialogs.models import Inbound, Reply, UserKey
from insurance.sandbox import DemoPerson, SandboxPlatform

SHANGHAI = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)


class ManualClock:
    def __init__(self, start: datetime = START) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


def person(scenario: str, index: int = 0) -> DemoPerson:
    """A sandbox person by scenario ("normal", "locked", "syncing", "maintenance", "resident"...)."""
    return [p for p in SandboxPlatform.from_file().people() if p.scenario.value == scenario][index]


@dataclass
class Harness:
    runtime: Runtime
    clock: ManualClock
    sms_file: Path
    redis: aioredis.Redis
    last: tuple[Reply, ...] = field(default=())

    async def say(self, text: str, user: str = "console:alice", locale: str | None = "en") -> str:
        self.last = await self.runtime.conversation.handle(
            Inbound(user=UserKey(user), text=text, locale=locale)
        )
        return "\n".join(reply.text for reply in self.last)

    def sms(self) -> list[dict[str, str]]:
        if not self.sms_file.exists():
            return []
        return [json.loads(line) for line in self.sms_file.read_text(encoding="utf-8").splitlines()]

    def last_code(self) -> str:
        m = re.search(r"\b(\d{6})\b", self.sms()[-1]["text"])
        assert m, self.sms()[-1]
        return m.group(1)

    async def start_bind(self, who: DemoPerson, user: str = "console:alice") -> str:
        await self.say("/bind", user)
        await self.say(who.name, user)
        return await self.say(who.id_number, user)

    async def bind(self, who: DemoPerson, user: str = "console:alice") -> str:
        sent = await self.start_bind(who, user)
        assert "Step 3 of 3" in sent, sent
        done = await self.say(self.last_code(), user)
        assert "Your account is bound" in done, done
        return done

    async def dump(self) -> dict[str, Any]:
        """Every key in Redis with its value, as text, to search for what must not be there."""
        out: dict[str, Any] = {}
        for key in await all_keys(self.redis):
            kind = (await self.redis.type(key)).decode()
            value: Any
            if kind == "string":
                value = await self.redis.get(key)
            elif kind == "hash":
                value = await self.redis.hgetall(key)
            elif kind == "zset":
                value = await self.redis.zrange(key, 0, -1, withscores=True)
            else:
                value = kind
            out[key.decode()] = repr(value)
        return out


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(
    redis: aioredis.Redis, redis_settings: dict[str, Any], topology: str, tmp_path: Path
) -> AsyncIterator[HarnessFactory]:
    """``await make_harness(otp={...}, ...)``: settings sections merged over the test defaults, on
    the test's Redis topology (a cluster with ``alerts.shards`` = ``CLUSTER_SHARDS``)."""
    made: list[Harness] = []

    async def make(**sections: dict[str, Any]) -> Harness:
        base: dict[str, dict[str, Any]] = {
            "general": {"data_dir": tmp_path / "data"},
            "redis": dict(redis_settings),
            "security": {"pii_key": new_key_text()},
            "sms": {"gateway": "file", "file_path": tmp_path / "sms.jsonl"},
        }
        if topology == "cluster":
            base["alerts"] = {"shards": CLUSTER_SHARDS}
        for name, values in sections.items():
            base[name] = {**base.get(name, {}), **values}
        settings = Settings(**base)  # type: ignore[arg-type]
        clock = ManualClock()
        runtime = await build_runtime(settings, clock=clock)
        harness = Harness(runtime, clock, Path(base["sms"]["file_path"]), redis)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.runtime.aclose()


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    return await make_harness()

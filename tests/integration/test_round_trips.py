"""How many Redis round trips a message costs, counted at the connection: a pipeline or a script is
one. A message that only reads (a cached /balance) is answered after one; a write takes three (a
peek, then the guarded read, then the guarded write)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ManualClock, person
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection

from bot.app import Runtime, build_runtime
from bot.config import Settings
from bot.crypto.pii import new_key_text
from dialogs.models import Inbound, UserKey

USER = UserKey("console:alice")


class CountingConnection(Connection):
    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def runtime(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    host, port = redis_url.removeprefix("redis://").split(":")
    client = Redis(
        connection_pool=ConnectionPool(connection_class=CountingConnection, host=host, port=int(port))
    )
    settings = Settings(
        general={"data_dir": tmp_path / "data"},  # type: ignore[arg-type]
        redis={"url": redis_url},  # type: ignore[arg-type]
        security={"pii_key": new_key_text()},  # type: ignore[arg-type]
        sms={"gateway": "file", "file_path": tmp_path / "sms.jsonl"},  # type: ignore[arg-type]
    )
    rt = await build_runtime(settings, clock=ManualClock(), redis=client)
    yield rt
    await rt.aclose()


async def trips(runtime: Runtime, text: str) -> tuple[int, str]:
    before = CountingConnection.sent
    replies = await runtime.conversation.handle(Inbound(user=USER, text=text, locale="en"))
    return CountingConnection.sent - before, "\n".join(r.text for r in replies)


async def test_round_trips_per_message(runtime: Runtime, tmp_path: Path) -> None:
    who = person("normal")
    await trips(runtime, "/bind")
    await trips(runtime, who.name)
    await trips(runtime, who.id_number)
    line = json.loads((tmp_path / "sms.jsonl").read_text().splitlines()[-1])
    await trips(runtime, re.search(r"\b(\d{6})\b", line["text"])[1])  # type: ignore[index]

    runtime.conversation.clock.advance(61)  # type: ignore[attr-defined]  # past the balance cached at binding
    n, first = await trips(runtime, "/balance")  # not cached: asks the platform, caches it
    assert "Personal account" in first
    assert n == 3
    n, again = await trips(runtime, "/balance")  # cached: read only
    assert again == first
    assert n == 1
    n, _ = await trips(runtime, "/help")
    assert n == 1
    n, reply = await trips(runtime, "/alert 100")
    assert "¥100.00" in reply
    assert n == 3


async def test_reads_that_arrive_together_share_one_round_trip(runtime: Runtime, tmp_path: Path) -> None:
    """Messages of several users in flight at once: their peeks are one command, each answer its own."""
    people = [person("normal", i) for i in range(3)]
    users = [UserKey(f"console:u{i}") for i in range(3)]
    for who, user in zip(people, users, strict=True):
        for text in ("/bind", who.name, who.id_number):
            await runtime.conversation.handle(Inbound(user=user, text=text, locale="en"))
        line = json.loads((tmp_path / "sms.jsonl").read_text().splitlines()[-1])
        code = re.search(r"\b(\d{6})\b", line["text"])[1]  # type: ignore[index]
        await runtime.conversation.handle(Inbound(user=user, text=code, locale="en"))
        await runtime.conversation.handle(Inbound(user=user, text="/balance", locale="en"))  # cached now
    alone = [
        "\n".join(
            r.text for r in await runtime.conversation.handle(Inbound(user=u, text="/balance", locale="en"))
        )
        for u in users
    ]
    assert len(set(alone)) == 3  # three people, three balances
    # The first time also loads the script into Redis (NOSCRIPT, SCRIPT LOAD, EVALSHA): count the second.
    await asyncio.gather(*(runtime.conversation.handle(Inbound(user=u, text="/help")) for u in users))
    before = CountingConnection.sent
    together = await asyncio.gather(
        *(runtime.conversation.handle(Inbound(user=u, text="/balance", locale="en")) for u in users)
    )
    assert CountingConnection.sent - before == 1
    assert ["\n".join(r.text for r in replies) for replies in together] == alone

"""Pieces both benchmarks use: a Bot API answered in-process, and Redis round trips counted at the
connection. Not a test module: nothing here asserts."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import SecretStr
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import UnixDomainSocketConnection
from telegram.request import BaseRequest, RequestData

from bot.app import Runtime
from dialogs.models import Binding, MemberId, Outcome, PlatformName, Session, UserKey, UserState
from insurance.sandbox import SandboxPlatform
from insurance.sandbox_data import Scenario

BOT_ID = 123456


def yibao_command() -> list[str]:
    """The venv's ``yibao`` (or ``python -m bot`` where the script is missing)."""
    script = Path(sys.executable).with_name("yibao")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the Bot API, answered in-process --------------------------------------------------------------


class NoNetworkRequest(BaseRequest):
    """PTB's HTTP transport, replaced: every Bot API method is answered here, without a socket.

    The parameters are still serialised as ``HTTPXRequest`` serialises them (``json_parameters``) and
    the answer is JSON bytes that PTB parses as it would Telegram's, so both sides pay the request
    object's honest share. ``getMe`` answers a bot, ``sendMessage`` a message echoing ``chat_id`` and
    ``text`` with a ``message_id`` counting up, anything else ``true``. ``calls`` counts per method.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.balance_replies = 0
        """``sendMessage`` texts that show a personal-account balance (not an apology)."""
        self.sent_at: list[float] = []
        """``time.monotonic()`` of each ``sendMessage``, when the Bot API would have received it."""
        self._message_id = 0
        self._bot = {"id": BOT_ID, "is_bot": True, "first_name": "Yibao Bench", "username": "yibao_bench_bot"}

    @property
    def read_timeout(self) -> float | None:
        return 5.0

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: object = None,
        write_timeout: object = None,
        connect_timeout: object = None,
        pool_timeout: object = None,
    ) -> tuple[int, bytes]:
        api_method = url.rsplit("/", 1)[-1]
        self.calls[api_method] += 1
        params = request_data.json_parameters if request_data is not None else {}
        result: object = True
        if api_method == "getMe":
            result = {**self._bot, "can_join_groups": True, "can_read_all_group_messages": False}
        elif api_method == "sendMessage":
            self._message_id += 1
            self.sent_at.append(time.monotonic())
            chat_id = int(params["chat_id"])
            text = params.get("text", "")
            if "个人账户" in text or "Personal account" in text:
                self.balance_replies += 1
            result = {
                "message_id": self._message_id,
                "from": self._bot,
                "chat": {"id": chat_id, "type": "private", "first_name": "用户"},
                "date": int(time.time()),
                "text": text,
            }
        return 200, json.dumps({"ok": True, "result": result}, ensure_ascii=False).encode()


# -- Redis round trips, counted at the connection --------------------------------------------------


@dataclass
class RoundTrips:
    """``sent``: request/answer exchanges with the server (one per command, pipeline or script).
    ``handshakes``: those a new connection spends introducing itself; ``connections``: new connections."""

    sent: int = 0
    handshakes: int = 0
    connections: int = 0

    def snapshot(self) -> tuple[int, int, int]:
        return self.sent, self.handshakes, self.connections


class CountingConnection(UnixDomainSocketConnection):
    """A unix-socket connection that counts round trips: every exchange goes through
    ``send_packed_command`` once (a pipeline packs all its commands into one call, a script is one
    ``EVALSHA``), so this counts round trips, not commands."""

    stats = RoundTrips()
    _handshaking = False

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        CountingConnection.stats.connections += 1
        self._handshaking = True
        try:
            await super().on_connect_check_health(check_health)
        finally:
            self._handshaking = False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._handshaking:
            CountingConnection.stats.handshakes += 1
        else:
            CountingConnection.stats.sent += 1
        await super().send_packed_command(command, check_health)


def counting_client(socket_path: str) -> Redis:
    pool = ConnectionPool(connection_class=CountingConnection, path=socket_path)
    return Redis.from_pool(pool)


# -- users bound without the conversation -------------------------------------------------------


async def bind_all(
    runtime: Runtime, users: Iterable[int | str], concurrency: int = 64, *, platform: str = "tg"
) -> None:
    """Bind each user (``<platform>:<id>``) to a sandbox employee with a personal account, through the
    store's own guarded write (as the end of ``/bind`` does), cycling through the employees."""
    people = [
        p
        for p in SandboxPlatform.from_file().people()
        if p.scenario in (Scenario.NORMAL, Scenario.HIGH_BALANCE, Scenario.LOW_BALANCE)
    ]
    bound_at = datetime.now(ZoneInfo("Asia/Shanghai"))
    gate = asyncio.Semaphore(concurrency)

    async def bind(user_id: int | str, index: int) -> None:
        person = people[index % len(people)]
        binding = Binding(
            member_id=MemberId(person.member_id),
            platform=PlatformName(runtime.settings.insurance.platforms[0].name),
            id_number=SecretStr(person.id_number),
            phone=SecretStr(person.phone),
            bound_at=bound_at,
        )

        async def step(state: UserState) -> Outcome:
            return Outcome(replies=(), session=Session(), set_binding=binding)

        async with gate:
            await runtime.store.update(UserKey(f"{platform}:{user_id}"), step)

    await asyncio.gather(*(bind(user_id, i) for i, user_id in enumerate(users)))

"""The Telegram rate limiter: windows, 429 and network retries, with real asyncio time, through
both engines' hooks (PTB's ``BaseRateLimiter``, aiogram's session middleware) on one schedule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from aiogram.exceptions import TelegramBadRequest, TelegramNetworkError, TelegramRetryAfter
from aiogram.methods import DeleteMessage, SendMessage
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut

from platforms.telegram.aiogram_engine import AiogramRateLimit
from platforms.telegram.ptb_engine import PtbRateLimiter
from platforms.telegram.ratelimit import Calendar, SendSchedule

Call = Callable[[], Awaitable[Any]]


@pytest.fixture(autouse=True)
def timedelta_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "1")  # as the PTB engine opts in


class Ptb:
    """A request as PTB makes it, and PTB's errors."""

    def __init__(self, schedule: SendSchedule) -> None:
        self.hook = PtbRateLimiter(schedule)

    async def request(self, call: Call, endpoint: str = "sendMessage", chat_id: int = 1) -> Any:
        async def callback() -> Any:
            return await call()

        return await self.hook.process_request(callback, (), {}, endpoint, {"chat_id": chat_id}, None)

    def retry_after(self, seconds: int) -> Exception:
        return RetryAfter(timedelta(seconds=seconds))

    def network(self) -> Exception:
        return NetworkError("connection refused")

    def timeout(self) -> Exception:
        return TimedOut()

    def bad_request(self) -> Exception:
        return BadRequest("message is too long")


class Aiogram:
    """A request as aiogram's session makes it, and aiogram's errors."""

    def __init__(self, schedule: SendSchedule) -> None:
        self.hook = AiogramRateLimit(schedule)
        self.method = SendMessage(chat_id=1, text="x")

    async def request(self, call: Call, endpoint: str = "sendMessage", chat_id: int = 1) -> Any:
        method: Any = (
            SendMessage(chat_id=chat_id, text="x")
            if endpoint == "sendMessage"
            else DeleteMessage(chat_id=chat_id, message_id=1)
        )

        async def make_request(bot: Any, m: Any) -> Any:
            return await call()

        return await self.hook(make_request, None, method)  # type: ignore[arg-type]

    def retry_after(self, seconds: int) -> Exception:
        return TelegramRetryAfter(method=self.method, message="Too Many Requests", retry_after=seconds)

    def network(self) -> Exception:
        return TelegramNetworkError(method=self.method, message="ClientConnectorError: refused")

    def timeout(self) -> Exception:
        return TelegramNetworkError(method=self.method, message="Request timeout error")

    def bad_request(self) -> Exception:
        return TelegramBadRequest(method=self.method, message="Bad Request: message is too long")


Engine = Ptb | Aiogram
Make = Callable[..., Engine]


@pytest.fixture(params=[Ptb, Aiogram], ids=["ptb", "aiogram"])
def engine(request: pytest.FixtureRequest) -> Make:
    kind = request.param

    def make(**schedule: Any) -> Engine:
        return kind(SendSchedule(**schedule))  # type: ignore[no-any-return]

    return make


def most_in_any_window(times: list[float], period: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= period:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_calendar_spaces_reservations_and_fills_gaps() -> None:
    now = 100.0
    calendar = Calendar(10, clock=lambda: now)
    first = [calendar.reserve(now) for _ in range(5)]
    assert first == pytest.approx([100.0, 100.1, 100.2, 100.3, 100.4])
    assert calendar.reserve(101.0) == pytest.approx(101.0)  # a later chat's turn leaves the gap free
    assert calendar.reserve(now) == pytest.approx(100.5)
    assert most_in_any_window([*first, 100.5, 101.0], 1.0) <= 10


async def test_per_chat_and_global_limits_hold_together(engine: Make) -> None:
    limiter = engine(global_rate=20, per_chat_rate=5)
    sent: list[tuple[int, float]] = []

    def send(chat: int) -> Call:
        async def call() -> dict[str, Any]:
            sent.append((chat, time.monotonic()))
            return {}

        return call

    calls = [limiter.request(send(chat), chat_id=chat) for chat in range(6) for _ in range(6)]
    await asyncio.gather(*calls)
    assert len(sent) == 36
    assert most_in_any_window([t for _, t in sent], 1.0) <= 20
    for chat in range(6):
        assert most_in_any_window([t for c, t in sent if c == chat], 1.0) <= 5


async def test_only_messages_are_spaced(engine: Make) -> None:
    limiter = engine(global_rate=1, per_chat_rate=1)
    done: list[float] = []

    async def call() -> dict[str, Any]:
        done.append(time.monotonic())
        return {}

    await asyncio.gather(*(limiter.request(call, "deleteMessage") for _ in range(5)))
    assert max(done) - min(done) < 0.5  # five deletes do not wait five seconds


async def test_a_429_waits_its_retry_after_then_retries(engine: Make) -> None:
    limiter = engine(max_retries=2)
    attempts: list[float] = []

    async def send() -> dict[str, Any]:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise limiter.retry_after(1)
        return {"ok": True}

    assert await limiter.request(send) == {"ok": True}
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 1.0


async def test_429_retries_are_bounded(engine: Make) -> None:
    limiter = engine(max_retries=0)
    error = limiter.retry_after(0)

    async def send() -> dict[str, Any]:
        raise error

    with pytest.raises(type(error)):
        await limiter.request(send)


async def test_network_errors_are_retried_but_not_timeouts_or_bad_requests(engine: Make) -> None:
    limiter = engine(network_retries=3)
    attempts = 0

    async def flaky() -> dict[str, Any]:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise limiter.network()
        return {}

    await limiter.request(flaky)
    assert attempts == 3
    for error in (limiter.timeout(), limiter.bad_request()):
        tries = 0

        async def failing(error: Exception = error) -> dict[str, Any]:
            nonlocal tries
            tries += 1
            raise error

        with pytest.raises(type(error)):
            await limiter.request(failing)
        assert tries == 1  # a timed-out send may have arrived: never twice

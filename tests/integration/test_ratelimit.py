"""The Telegram rate limiter: windows, 429 and network retries, with real asyncio time."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut

from platforms.telegram.ratelimit import Calendar, ChatRateLimiter


@pytest.fixture(autouse=True)
def timedelta_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "1")  # as the adapter opts in


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


async def test_per_chat_and_global_limits_hold_together() -> None:
    limiter = ChatRateLimiter(global_rate=20, per_chat_rate=5)
    sent: list[tuple[int, float]] = []

    async def send(chat: int) -> dict[str, Any]:
        sent.append((chat, time.monotonic()))
        return {}

    calls = [
        limiter.process_request(send, (chat,), {}, "sendMessage", {"chat_id": chat}, None)
        for chat in range(6)
        for _ in range(6)
    ]
    await asyncio.gather(*calls)
    assert len(sent) == 36
    assert most_in_any_window([t for _, t in sent], 1.0) <= 20
    for chat in range(6):
        assert most_in_any_window([t for c, t in sent if c == chat], 1.0) <= 5


async def test_only_messages_are_spaced() -> None:
    limiter = ChatRateLimiter(global_rate=1, per_chat_rate=1)
    done: list[float] = []

    async def call() -> dict[str, Any]:
        done.append(time.monotonic())
        return {}

    await asyncio.gather(
        *(limiter.process_request(call, (), {}, "deleteMessage", {"chat_id": 1}, None) for _ in range(5))
    )
    assert max(done) - min(done) < 0.5  # five deletes do not wait five seconds


async def test_a_429_waits_its_retry_after_then_retries() -> None:
    limiter = ChatRateLimiter(max_retries=2)
    attempts: list[float] = []

    async def send() -> dict[str, Any]:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RetryAfter(timedelta(seconds=1))
        return {"ok": True}

    assert await limiter.process_request(send, (), {}, "sendMessage", {"chat_id": 1}, None) == {"ok": True}
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 1.0


async def test_429_retries_are_bounded() -> None:
    limiter = ChatRateLimiter(max_retries=0)

    async def send() -> dict[str, Any]:
        raise RetryAfter(timedelta(seconds=0))

    with pytest.raises(RetryAfter):
        await limiter.process_request(send, (), {}, "sendMessage", {"chat_id": 1}, None)


async def test_network_errors_are_retried_but_not_timeouts_or_bad_requests() -> None:
    limiter = ChatRateLimiter(network_retries=3)
    attempts = 0

    async def flaky() -> dict[str, Any]:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise NetworkError("connection refused")
        return {}

    await limiter.process_request(flaky, (), {}, "sendMessage", {"chat_id": 1}, None)
    assert attempts == 3
    for error in (TimedOut(), BadRequest("message is too long")):
        tries = 0

        async def failing(error: Exception = error) -> dict[str, Any]:
            nonlocal tries
            tries += 1
            raise error

        with pytest.raises(type(error)):
            await limiter.process_request(failing, (), {}, "sendMessage", {"chat_id": 1}, None)
        assert tries == 1  # a timed-out send may have arrived: never twice

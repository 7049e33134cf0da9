"""Every request the bot makes to Telegram goes through here (PTB's ``BaseRateLimiter`` hook).

- Messages (``send*``, ``copy*``, ``forward*``) are spaced: at least ``1/global_rate`` seconds apart
  for the whole bot and ``1/per_chat_rate`` apart in one chat (Telegram: about 30/s in bulk, about
  1/s into one chat; 20/min into a group), so no one-second window ever holds more than the limit.
  Each send reserves its time in both at once, with no await in between, so a chat waiting for its
  turn never holds up another chat, and the global schedule stays exact under any concurrency.
- A 429 answer carries ``retry_after``: every send waits that long (the limit is the bot's, not the
  chat's), then the request is scheduled again, up to ``max_retries`` times.
- A connection that failed before the request went out is retried with backoff. A timeout is not:
  the message may have arrived, and a user must not get it twice. ``BadRequest`` is Telegram's
  final word on a malformed request.
- Other calls (deleting a message, answering a button) are not spaced; they still honour 429.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut
from telegram.ext import BaseRateLimiter
from telegram.warnings import PTBDeprecationWarning

log = logging.getLogger(__name__)

JSON = bool | dict[str, Any] | list[dict[str, Any]]
_MAX_CHATS = 50_000
"""Chats whose next free time is kept; the least recently used go first (long free by then)."""
_MESSAGES = ("send", "copy", "forward")


def retry_seconds(error: RetryAfter) -> float:
    """``retry_after`` in seconds, whether PTB gives an int (22.x) or a timedelta (later)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Window:
    """Actual send times: at most ``n`` in any ``period`` seconds (plus a hair for clock jitter).

    Reservations are exact, but tasks wake a little late, so the last check is on the real times."""

    MARGIN = 0.002

    def __init__(self, rate: float) -> None:
        self.n = max(1, int(rate))
        self.period = self.n / rate
        self.times: deque[float] = deque(maxlen=self.n)

    def wait(self, now: float) -> float:
        if len(self.times) < self.n:
            return 0.0
        return max(0.0, self.times[0] + self.period + self.MARGIN - now)


class Calendar:
    """Send times at least ``interval`` apart: a request takes the earliest free time from ``after``."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        self._slots: list[float] = []

    def reserve(self, after: float) -> float:
        now = self._clock()
        drop = bisect.bisect_left(self._slots, now - self.interval)
        del self._slots[:drop]
        t = max(after, now)
        i = bisect.bisect_left(self._slots, t - self.interval)
        while i < len(self._slots) and self._slots[i] < t + self.interval:
            t = max(t, self._slots[i] + self.interval)
            i += 1
        bisect.insort(self._slots, t)
        return t


class ChatRateLimiter(BaseRateLimiter[int]):
    def __init__(
        self,
        *,
        global_rate: float = 30.0,
        per_chat_rate: float = 1.0,
        group_rate_per_minute: float = 20.0,
        max_retries: int = 3,
        network_retries: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_chat_interval = 1.0 / per_chat_rate
        self.group_interval = 60.0 / group_rate_per_minute
        self.max_retries = max_retries
        self.network_retries = network_retries
        self._clock = clock
        self.per_chat_rate = per_chat_rate
        self.group_rate = group_rate_per_minute / 60.0
        self._global = Calendar(global_rate, clock)
        self._global_sent = Window(global_rate)
        self._chats: OrderedDict[int | str, tuple[float, Window]] = OrderedDict()
        self._resume = asyncio.Event()
        self._resume.set()

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    def _chat(self, chat_id: int | str) -> tuple[float, Window]:
        found = self._chats.get(chat_id)
        if found is None:
            group = isinstance(chat_id, str) or chat_id < 0
            found = (0.0, Window(self.group_rate if group else self.per_chat_rate))
            if len(self._chats) >= _MAX_CHATS:
                self._chats.popitem(last=False)
        self._chats[chat_id] = found
        self._chats.move_to_end(chat_id)
        return found

    def _reserve(self, chat_id: int | str) -> float:
        """This send's time, taken in the chat and the whole bot's schedule at once."""
        next_at, window = self._chat(chat_id)
        t = self._global.reserve(max(self._clock(), next_at))
        group = isinstance(chat_id, str) or chat_id < 0
        self._chats[chat_id] = (t + (self.group_interval if group else self.per_chat_interval), window)
        return t

    async def _wait_turn(self, chat_id: int | str) -> None:
        while True:
            await self._resume.wait()
            delay = self._reserve(chat_id) - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self._resume.is_set():  # a 429 pause began while this one waited: again
                continue
            window = self._chat(chat_id)[1]
            while True:
                now = self._clock()
                late = max(self._global_sent.wait(now), window.wait(now))
                if late <= 0:
                    break
                await asyncio.sleep(late)
            self._global_sent.times.append(now)
            window.times.append(now)
            return

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, JSON]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> JSON:
        chat_id = data.get("chat_id")
        retries_429 = rate_limit_args if rate_limit_args is not None else self.max_retries
        failures = 0
        spaced = chat_id is not None and endpoint.startswith(_MESSAGES)
        while True:
            if spaced:
                await self._wait_turn(chat_id)  # type: ignore[arg-type]
            else:
                await self._resume.wait()
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as e:
                if retries_429 <= 0:
                    raise
                retries_429 -= 1
                wait = retry_seconds(e)
                log.warning("Telegram said 429 to %s: every send waits %.1f s", endpoint, wait)
                self._resume.clear()
                try:
                    await asyncio.sleep(float(wait) + 0.1)
                finally:
                    self._resume.set()
            except (TimedOut, BadRequest):
                raise
            except NetworkError as e:
                failures += 1
                if failures > self.network_retries:
                    raise
                delay = random.uniform(0, min(4.0, 0.25 * 2**failures))  # noqa: S311 - jitter
                log.warning(
                    "network error on %s (%s); retry %d in %.2f s",
                    endpoint,
                    type(e).__name__,
                    failures,
                    delay,
                )
                await asyncio.sleep(delay)

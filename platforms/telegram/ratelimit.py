"""Every request the bot makes to Telegram goes through here, whichever engine makes it (PTB through
its ``BaseRateLimiter`` hook, aiogram through a session middleware; ``ptb_engine`` and
``aiogram_engine`` plug their exception types in through a ``Classify`` function).

- Messages (``send*``, ``copy*``, ``forward*``) are spaced: at least ``1/global_rate`` seconds apart
  for the whole bot and ``1/per_chat_rate`` apart in one chat (Telegram: about 30/s in bulk, about
  1/s into one chat; 20/min into a group), so no one-second window ever holds more than the limit.
  Each send reserves its time in both at once, with no await in between, so a chat waiting for its
  turn never holds up another chat, and the global schedule stays exact under any concurrency.
- A 429 answer carries ``retry_after``: every send waits that long (the limit is the bot's, not the
  chat's), then the request is scheduled again, up to ``max_retries`` times.
- A connection that failed before the request went out (or a 5xx) is retried with backoff. A timeout
  is not: the message may have arrived, and a user must not get it twice. A 400 is Telegram's final
  word on a malformed request, a 403 on a user who blocked the bot.
- Other calls (deleting a message, answering a button) are not spaced; they still honour 429.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from dialogs.ports import NO_METRICS, ChatMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")
_MAX_CHATS = 50_000
"""Chats whose next free time is kept; the least recently used go first (long free by then)."""
_MESSAGES = ("send", "copy", "forward")


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """Telegram said 429: every send waits ``seconds``, then this request is tried again."""

    seconds: float


class Network:
    """The request failed before it could have reached Telegram: try again with backoff."""


NETWORK = Network()
Verdict = RetryAfter | Network | None
"""What an engine's exception means here; None: final, raise it (a timeout, a 400, a 403...)."""
Classify = Callable[[Exception], Verdict]


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


class SendSchedule:
    """The bot's send schedule and retry rules, for any engine: ``call`` runs one Bot API request."""

    def __init__(
        self,
        *,
        global_rate: float = 30.0,
        per_chat_rate: float = 1.0,
        group_rate_per_minute: float = 20.0,
        max_retries: int = 3,
        network_retries: int = 3,
        clock: Callable[[], float] = time.monotonic,
        metrics: ChatMetrics = NO_METRICS,
        platform: str = "tg",
    ) -> None:
        self.metrics = metrics
        self.platform = platform
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

    async def call(
        self,
        request: Callable[[], Awaitable[T]],
        *,
        endpoint: str,
        chat_id: int | str | None,
        classify: Classify,
        retries_429: int | None = None,
    ) -> T:
        """Run ``request`` (one Bot API call) when the schedule allows, retried as ``classify``
        says. Messages (``send*``, ``copy*``, ``forward*`` to a chat) are spaced; other calls only
        wait out a 429 pause."""
        retries = self.max_retries if retries_429 is None else retries_429
        failures = 0
        spaced = chat_id is not None and endpoint.startswith(_MESSAGES)
        while True:
            if spaced:
                assert chat_id is not None
                began = self._clock()
                await self._wait_turn(chat_id)
                self.metrics.waited(self.platform, self._clock() - began)
            else:
                await self._resume.wait()
            try:
                return await request()
            except Exception as e:
                verdict = classify(e)
                if isinstance(verdict, RetryAfter):
                    self.metrics.refused(self.platform, 429)
                    if retries <= 0:
                        raise
                    retries -= 1
                    log.warning("Telegram said 429 to %s: every send waits %.1f s", endpoint, verdict.seconds)
                    self._resume.clear()
                    try:
                        await asyncio.sleep(verdict.seconds + 0.1)
                    finally:
                        self._resume.set()
                elif isinstance(verdict, Network):
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
                else:
                    raise

"""One user's messages one after the other, different users' at once: what every chat platform needs
when the same person can send faster than they are answered (Telegram's updates, WeChat's callbacks)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Sequencer:
    """Runs jobs of one key one after the other, in the order ``run`` was called, and jobs of
    different keys at once, at most ``limit`` running. A job takes its place in its key's line in
    the same step as ``run`` is called (before any await), so the order is the order of arrival."""

    def __init__(self, limit: int) -> None:
        self._tails: dict[str, asyncio.Future[None]] = {}
        self._slots = asyncio.Semaphore(limit)
        self._idle = asyncio.Event()
        self._idle.set()
        self._running = 0

    @property
    def in_flight(self) -> int:
        return self._running

    async def run(self, key: str, job: Callable[[], Awaitable[T]]) -> T:
        previous = self._tails.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = mine
        self._running += 1
        self._idle.clear()
        try:
            if previous is not None:
                await asyncio.shield(previous)  # never raises: it is always resolved with None
            async with self._slots:
                return await job()
        finally:
            mine.set_result(None)
            if self._tails.get(key) is mine:
                del self._tails[key]
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def drained(self) -> None:
        """Returns when no job is queued or running."""
        await self._idle.wait()

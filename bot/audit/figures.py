"""Aggregate counts by day for ``yibao admin stats``: never a user, only how many.

One Redis hash a day (``Keys.figures``, the day in ``general.timezone``, kept ``KEEP_DAYS``), a field
per count: ``name|label|label`` -> integer. What is counted:

- ``bind_started|<chat>``, ``code_sent|<chat>|<insurer>``, ``bound|<chat>|<insurer>``,
  ``bind_failed|<chat>|<reason>``: the bind funnel;
- ``alert_sent|<chat>``, ``alert_deferred|<chat>|<reason>``, ``alert_dropped|<chat>|<reason>``;
- ``answer|<chat>|<le>``: answers that took at most ``le`` milliseconds (``LATENCY_BUCKETS_MS``,
  ``inf`` for the rest): a compact histogram from which the percentiles are read;
- ``insurer|<insurer>|<call>|<outcome>``: insurance platform calls by outcome (the error rates).

Counts are added up in memory and written with ``HINCRBY`` in one pipeline ``flush_seconds`` after
the first count not yet written (and at close), so a turn costs no extra round trip; a crash loses
at most those seconds of counts, which only the operator's figures would miss.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta, tzinfo

from redis.asyncio import Redis

from bot.storage.keys import Keys

log = logging.getLogger(__name__)

KEEP_DAYS = 400
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def latency_bucket(seconds: float) -> str:
    ms = seconds * 1000
    for le in LATENCY_BUCKETS_MS:
        if ms <= le:
            return str(le)
    return "inf"


class Figures:
    def __init__(
        self,
        redis: Redis,
        *,
        keys: Keys,
        today: Callable[[], date],
        flush_seconds: float = 5.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.today = today
        self.flush_seconds = flush_seconds
        self._pending: Counter[tuple[str, str]] = Counter()
        self._flushing: asyncio.Task[None] | None = None
        """The one write scheduled (it waits ``flush_seconds``, then writes), if any."""

    def add(self, name: str, *labels: str, n: int = 1) -> None:
        """Count ``n`` of ``name`` with these labels (closed words, never a user) today."""
        field = "|".join((name, *labels))
        self._pending[(self.today().isoformat(), field)] += n
        self._maybe_flush()

    def answered(self, platform: str, seconds: float) -> None:
        self.add("answer", platform, latency_bucket(seconds))

    def _maybe_flush(self) -> None:
        if self._flushing is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._flushing = loop.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(self.flush_seconds)
            self._flushing = None
            await self.flush()
        finally:
            self._flushing = None

    async def flush(self) -> None:
        """Write what was counted; on failure the counts stay in memory for the next try."""
        if not self._pending:
            return
        batch, self._pending = self._pending, Counter()
        pipe = self.redis.pipeline(transaction=False)
        days = set()
        for (day, field), n in batch.items():
            pipe.hincrby(self.keys.figures(day), field, n)
            days.add(day)
        for day in days:
            pipe.expire(self.keys.figures(day), KEEP_DAYS * 86400)
        try:
            await pipe.execute()
        except BaseException as e:  # cancelled too (a close while it writes): kept for the close's write
            self._pending.update(batch)
            if not isinstance(e, Exception):
                raise
            log.warning("could not write the daily figures (%s); kept for the next try", type(e).__name__)

    async def aclose(self) -> None:
        """Write what is left now (the scheduled write is cancelled while it waits)."""
        task, self._flushing = self._flushing, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.flush()

    async def read(self, days: int, until: date | None = None) -> Counter[str]:
        """The counts of the last ``days`` days up to ``until`` (today), added up."""
        last = until or self.today()
        pipe = self.redis.pipeline(transaction=False)
        for i in range(days):
            pipe.hgetall(self.keys.figures((last - timedelta(days=i)).isoformat()))
        total: Counter[str] = Counter()
        for raw in await pipe.execute():
            for field, n in raw.items():
                total[field.decode()] += int(n)
        return total


def local_today(tz: tzinfo) -> Callable[[], date]:
    """Today in ``tz`` (``general.timezone``): the day a count belongs to."""
    return lambda: datetime.now(tz).date()

"""Work shared by any number of workers through a Redis Streams consumer group.

An entry is added once (``XADD``), handed to one consumer (``XREADGROUP``), and stays *pending*
until that consumer acknowledges it (``XACK``, then ``XDEL`` so the stream does not grow). If the
consumer dies first, the entry is idle in the pending list and another consumer takes it over
(``XAUTOCLAIM``) once it has been idle for ``reclaim_after``. Delivery is therefore at least once;
whoever handles an entry must make a second handling harmless.

Work split into shards (``alerts.shards``: a stream per shard, each in its own hash slot, so a Redis
Cluster spreads them over its masters) is read through a :class:`ShardedReader`: every worker reads
every shard, in turn, so the consumer groups still share the work however many workers there are.
Each entry id remembers its stream (:class:`EntryId`), and ``done`` acknowledges it there.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

log = logging.getLogger(__name__)


class EntryId(bytes):
    """A stream entry's id, and the stream it came from."""

    stream: str

    def __new__(cls, value: bytes, stream: str) -> EntryId:
        entry_id = super().__new__(cls, value)
        entry_id.stream = stream
        return entry_id


Entry = tuple[bytes, dict[bytes, bytes]]


class GroupReader:
    def __init__(
        self, redis: Redis, stream: str, group: str, consumer: str, *, reclaim_after_seconds: float
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.reclaim_after_ms = int(reclaim_after_seconds * 1000)
        self._next_reclaim = 0.0
        self._ready = False

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._ready = True

    async def take(self, count: int, block_ms: int | None) -> list[Entry]:
        """Entries to handle: first any a stopped consumer left (checked every half ``reclaim_after``),
        else new ones, waiting up to ``block_ms`` for them (None: not at all)."""
        if not self._ready:
            await self.ensure_group()
        try:
            if time.monotonic() >= self._next_reclaim:
                self._next_reclaim = time.monotonic() + self.reclaim_after_ms / 2000
                reclaimed = await self._reclaim(count)
                if reclaimed:
                    return reclaimed
            answer: Any = await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            # The stream or its group is gone (a Redis that lost its data): start again.
            log.warning("consumer group %s on %s was missing; created again", self.group, self.stream)
            self._ready = False
            return []
        return [
            (EntryId(entry_id, self.stream), fields)
            for _, entries in answer or []
            for entry_id, fields in entries
            if fields
        ]

    async def _reclaim(self, count: int) -> list[Entry]:
        answer: Any = await self.redis.xautoclaim(
            self.stream, self.group, self.consumer, self.reclaim_after_ms, start_id="0-0", count=count
        )
        # [next id, entries] (Redis 6.2) or [next id, entries, deleted ids] (7.0+). An entry deleted
        # meanwhile comes back empty: it was handled, nothing to do.
        entries: list[Entry] = [
            (EntryId(entry_id, self.stream), fields) for entry_id, fields in answer[1] if fields
        ]
        gone = [entry_id for entry_id, fields in answer[1] if not fields]
        if gone:
            await self.redis.xack(self.stream, self.group, *gone)
        if entries:
            log.info("took over %d entries of %s left by a stopped worker", len(entries), self.stream)
        return entries

    def done(self, pipe: Pipeline, *entry_ids: bytes) -> None:
        """Queue the acknowledgement (and deletion) of handled entries on ``pipe``."""
        pipe.xack(self.stream, self.group, *entry_ids)
        pipe.xdel(self.stream, *entry_ids)


class ShardedReader:
    """One :class:`GroupReader` per shard's stream, read in turn (see the module docstring)."""

    POLL_MS = 50
    """With several shards and none holding work, how long one of them is waited on before the
    next look at all: what an entry may wait, at most, beyond ``block_ms`` of one shard."""

    def __init__(
        self, redis: Redis, streams: list[str], group: str, consumer: str, *, reclaim_after_seconds: float
    ) -> None:
        self.readers = [
            GroupReader(redis, stream, group, consumer, reclaim_after_seconds=reclaim_after_seconds)
            for stream in streams
        ]
        self._by_stream = {r.stream: r for r in self.readers}
        self._turn = 0

    async def take(self, count: int, block_ms: int) -> list[Entry]:
        if len(self.readers) == 1:
            return await self.readers[0].take(count, block_ms)
        n = len(self.readers)
        start, self._turn = self._turn, (self._turn + 1) % n
        taken: list[Entry] = []
        for i in range(n):
            taken += await self.readers[(start + i) % n].take(count - len(taken), None)
            if len(taken) >= count:
                break
        if taken:
            return taken
        return await self.readers[start].take(count, min(block_ms, self.POLL_MS))

    def done(self, pipe: Pipeline, *entry_ids: bytes) -> None:
        """Queue the acknowledgement of handled entries, each on its own shard's stream."""
        by_stream: dict[str, list[bytes]] = {}
        for entry_id in entry_ids:
            stream = entry_id.stream if isinstance(entry_id, EntryId) else self.readers[0].stream
            by_stream.setdefault(stream, []).append(entry_id)
        for stream, ids in by_stream.items():
            self._by_stream[stream].done(pipe, *ids)

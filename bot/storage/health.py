"""Whether Redis answers, as this process sees it: waiting for it at start-up, and one log line when
it stops answering and one when it answers again, however many messages and loops meet it meanwhile.

``wait_for_redis`` is the start of every service with ``redis.url`` (``yibao run``, ``worker``,
``chat``): a PING, tried with backoff for ``redis.connect_wait_seconds``, one log line per attempt and
no traceback, then :class:`RedisUnreachable` (the CLI's one line and exit 2). :class:`RedisHealth` is
told by the store and the alert loops about each failed and each answered call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.exceptions import ClusterError, ReadOnlyError, RedisClusterException, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

UNREACHABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    ClusterError,
    TryAgainError,
    RedisClusterException,
)
"""What redis-py raises when the server is not there (refused, reset, timed out, still loading), or
not whole yet: a primary just demoted (``READONLY``), a cluster with slots not served while a master
fails over (``CLUSTERDOWN``, ``TRYAGAIN``), or one that could not be reached to learn its layout."""

_FIRST_PAUSE = 0.5
_MAX_PAUSE = 5.0
_ATTEMPT_TIMEOUT = 5.0


class RedisUnreachable(Exception):
    """Redis did not answer within ``redis.connect_wait_seconds``; the message says where and how long."""


def redacted_url(url: str) -> str:
    """The URL with any password replaced by ``***``, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def wait_for_redis(
    redis: Redis, *, where: str, wait_seconds: float, stop: asyncio.Event | None = None
) -> bool:
    """PING until Redis answers (True), ``stop`` is set (False), or ``wait_seconds`` have passed
    (raises :class:`RedisUnreachable`). Each failed attempt is one log line."""
    deadline = time.monotonic() + wait_seconds
    pause = _FIRST_PAUSE
    attempt = 0
    while True:
        attempt += 1
        try:
            await asyncio.wait_for(redis.ping(), timeout=_ATTEMPT_TIMEOUT)
        except (*UNREACHABLE, OSError, TimeoutError) as e:
            error: BaseException = e
        else:
            if attempt > 1:
                log.info("Redis at %s answered (attempt %d)", where, attempt)
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            raise RedisUnreachable(
                f"Redis at {where} did not answer within {wait_seconds:g} s "
                f"(redis.connect_wait_seconds); last error: {_reason(error)}"
            )
        pause = min(pause, left)
        log.warning(
            "waiting for Redis at %s (%s); attempt %d, next in %.1f s, giving up in %.0f s",
            where,
            _reason(error),
            attempt,
            pause,
            left,
        )
        if stop is not None:
            try:
                await asyncio.wait_for(stop.wait(), pause)
                return False
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(pause)
        pause = min(pause * 2, _MAX_PAUSE)


class RedisHealth:
    """One line when Redis stops answering this process, one when it answers again.

    Right after Redis is back, the client's other pooled connections still point at the old server
    and fail once each; failures within ``settle_seconds`` of the return are that, and are logged
    only if they go on past it."""

    def __init__(self, where: str, *, settle_seconds: float = 2.0) -> None:
        self.where = where
        self.settle_seconds = settle_seconds
        self._down_since: float | None = None
        self._said_down = False
        self._back_at: float | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, error: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        settling = self._back_at is not None and now - self._back_at < self.settle_seconds
        if not self._said_down and not settling:
            self._said_down = True
            log.warning(
                "lost the connection to Redis at %s (%s); answering with an apology and retrying "
                "until it is back",
                self.where,
                _reason(error),
            )

    def answered(self) -> None:
        if self._down_since is None:
            return
        if self._said_down:
            log.warning("Redis at %s is back, after %.1f s", self.where, time.monotonic() - self._down_since)
            self._back_at = time.monotonic()
        self._down_since = None
        self._said_down = False

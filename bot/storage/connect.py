"""The Redis client from the ``[redis]`` settings: one server, a primary watched by Sentinel, or a Cluster.

Every part of Yibao talks to the client through redis-py's asyncio command interface, typed as
:class:`redis.asyncio.Redis`; what differs between the topologies is said here and in
:class:`Topology`, which the store and the alert machinery ask when it matters:

- **single** (``url``): ``Redis.from_url``.
- **sentinel** (``sentinels``, ``sentinel_master``): ``Sentinel(...).master_for(...)``, a ``Redis``
  whose connections ask the sentinels where the primary is. When the primary dies, calls fail
  (the store answers with its apology) until the sentinels have promoted the replica; new
  connections then go to the new primary, and a connection still open to the old one, demoted,
  is dropped at its first ``READONLY``. No restart.
- **cluster** (``cluster = true``, ``url`` any node): an asyncio ``RedisCluster``, which routes each
  command to the master of its key's slot, follows ``MOVED``/``ASK`` during a resharding and learns
  the new layout after a failover. Its command interface is the same; it is handed around typed as
  ``Redis`` (``cast``), so code that must act differently on a cluster asks :attr:`Topology.cluster`.
  On a cluster: a script's keys must share one slot (a user's keys share the user's ``{tag}``;
  the alert keys share their shard's), a pipeline is split by node and sent in parallel
  (:func:`bot.storage.topology.send`), and ``WAIT`` runs on the node that took the write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff

from bot.config import RedisSettings
from bot.storage.health import redacted_url

TopologyName = Literal["single", "sentinel", "cluster"]


def _retry() -> Retry:
    """Retry a failed command only briefly (3 times, at most 0.25 s apart): the callers retry on
    their own terms (the start-up wait, the alert loops, the sender's record), a message gets its
    apology at once, and a record waiting for Redis is in within moments of its return (redis-py's
    default, 10 retries up to 1 s apart, would hold it a few seconds longer)."""
    return Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.25), 3)


@dataclass
class Topology:
    """What the code above the client must know of the Redis it talks to."""

    name: TopologyName = "single"
    wait_replicas: int = 0
    """Replicas a protected write waits for (``WAIT``); 0: none."""
    wait_timeout_ms: int = 500
    where: str = "?"
    """For log lines: the URL (password hidden), the sentinels, or a cluster node."""
    unprotected: int = 0
    """Protected writes that reached fewer replicas than asked within the timeout (``batch.send``)."""
    warned_at: float = field(default=-1e9, repr=False)
    _sentinel: Sentinel | None = field(default=None, repr=False)

    @property
    def cluster(self) -> bool:
        return self.name == "cluster"

    async def aclose(self) -> None:
        """Close what the client does not close itself (the sentinels' own connections)."""
        if self._sentinel is not None:
            for client in self._sentinel.sentinels:
                await client.aclose()


def connect(settings: RedisSettings, *, url: str | None = None) -> tuple[Redis, Topology]:
    """The client and its topology. ``url`` (the embedded server's) stands in for an empty ``url``."""
    wait = settings.replicas_to_wait
    timeout = settings.wait_timeout_ms
    if settings.sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [_address(a) for a in settings.sentinels],
            sentinel_kwargs={
                "password": _plain(settings.sentinel_password),
                "socket_timeout": 2.0,
                "socket_connect_timeout": 2.0,
            },
            retry=_retry(),
        )
        client = sentinel.master_for(
            settings.sentinel_master,
            redis_class=Redis,
            password=_plain(settings.password),
            username=settings.username,
            retry=_retry(),
            socket_connect_timeout=2.0,
        )
        where = f"sentinels {','.join(settings.sentinels)} (master {settings.sentinel_master})"
        return client, Topology("sentinel", wait, timeout, where, _sentinel=sentinel)
    target = settings.url.get_secret_value() if settings.url is not None else url
    if target is None:
        raise ValueError("no Redis to connect to: set redis.url or redis.sentinels")
    if settings.cluster:
        cluster = RedisCluster.from_url(target, retry=_retry(), socket_connect_timeout=2.0)
        return cast("Redis", cluster), Topology("cluster", wait, timeout, f"cluster {redacted_url(target)}")
    return Redis.from_url(target, retry=_retry()), Topology("single", wait, timeout, redacted_url(target))


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _plain(secret: object) -> str | None:
    get = getattr(secret, "get_secret_value", None)
    return None if get is None else str(get())

"""The Redis topologies a test module can run on: ``pytestmark = TOPOLOGIES`` (see tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.sentinel import Sentinel

ClientFactory = Callable[[], aioredis.Redis]

TOPOLOGIES = pytest.mark.parametrize(
    "topology",
    [
        "single",
        pytest.param("sentinel", marks=pytest.mark.slow),
        pytest.param("cluster", marks=pytest.mark.slow),
    ],
    indirect=True,
)
CLUSTER_SHARDS = 3
"""``alerts.shards`` of the harnesses on the cluster, so the sharded keys are what is tested there."""


async def all_keys(client: aioredis.Redis, pattern: str = "*") -> list[bytes]:
    """``KEYS pattern`` on every master: redis-py sends a cluster's ``KEYS`` to one node only."""
    candidate: object = client
    if not isinstance(candidate, RedisCluster):
        return list(await client.keys(pattern))
    answer: Any = await candidate.keys(pattern, target_nodes=RedisCluster.PRIMARIES)
    if isinstance(answer, dict):
        return [key for keys in answer.values() for key in keys]
    return list(answer)


def redis_env(settings: dict[str, Any]) -> dict[str, str]:
    """The ``[redis]`` settings of a topology as the ``YIBAO_REDIS__*`` variables of a process."""
    env = {}
    for key, value in settings.items():
        shown = json.dumps(value) if isinstance(value, list | bool) else str(value)
        env[f"YIBAO_REDIS__{key.upper()}"] = shown
    if settings.get("cluster"):
        env["YIBAO_ALERTS__SHARDS"] = str(CLUSTER_SHARDS)
    return env


def sync_client(settings: dict[str, Any]) -> redis.Redis:
    """A blocking client on a topology, to look at what a process stored (typed as ``Redis``)."""
    if settings.get("sentinels"):
        hosts = [(a.rpartition(":")[0], int(a.rpartition(":")[2])) for a in settings["sentinels"]]
        return Sentinel(hosts).master_for(settings["sentinel_master"])
    if settings.get("cluster"):
        return cast("redis.Redis", redis.RedisCluster.from_url(settings["url"]))
    return redis.Redis.from_url(settings["url"])


def sync_keys(client: redis.Redis, pattern: str = "*") -> list[bytes]:
    """``KEYS`` on every master of a cluster, or on the one Redis."""
    candidate: object = client
    if isinstance(candidate, redis.RedisCluster):
        answer: Any = candidate.keys(pattern, target_nodes=redis.RedisCluster.PRIMARIES)
        if isinstance(answer, dict):
            return [key for keys in answer.values() for key in keys]
        return list(answer)
    return list(client.keys(pattern))

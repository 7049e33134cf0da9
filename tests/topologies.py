"""The Redis topologies a test module can run on: ``pytestmark = TOPOLOGIES`` (see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

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

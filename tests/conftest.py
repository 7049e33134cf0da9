"""Shared fixtures: one real Redis for the whole run, started by the run itself.

The session server listens on a free port on 127.0.0.1 (never the machine's own Redis on 6379). Async
clients are made per test, so each one lives on that test's event loop.

Topologies: a test module marked ``@TOPOLOGIES`` (``pytestmark = TOPOLOGIES``) runs once on each of
``single`` (the session server), ``sentinel`` (a primary, a replica and three sentinels) and ``cluster``
(three masters with a replica each), the last two started once for the run when first asked for
(``tests/redis_topologies.py``). Its ``redis`` fixture and ``redis_settings`` (the ``[redis]`` section)
are then of that topology, built by ``bot.storage.connect`` as the runtime builds them.

Under pytest-xdist (``tasks.py test`` runs the suite on a few worker processes) each worker is a test
run of its own here: its own session server (so ``FLUSHALL`` empties nothing of another worker's), and
its own Sentinel and Cluster, started when it first runs a test on them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis_topologies import ClusterSet, SentinelSet, missing_tools
from topologies import ClientFactory

from bot.config import RedisSettings
from bot.storage.connect import connect
from bot.storage.embedded_redis import EmbeddedRedis

RedisFactory = Callable[..., EmbeddedRedis]


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> str:
    """``single`` unless the test is parametrized over ``TOPOLOGIES``."""
    name: str = getattr(request, "param", "single")
    if name != "single" and (why := missing_tools()) is not None:
        pytest.skip(f"{name} topology: {why}")
    return name


@pytest.fixture(scope="session")
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    servers = SentinelSet(tmp_path_factory.mktemp("sentinel"))
    try:
        yield servers.start()
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSet]:
    servers = ClusterSet(tmp_path_factory.mktemp("cluster"))
    try:
        yield servers.start()
    finally:
        servers.stop()


@pytest.fixture
def redis_settings(topology: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ``[redis]`` settings of this test's topology."""
    if topology == "sentinel":
        return request.getfixturevalue("sentinel_set").settings()  # type: ignore[no-any-return]
    if topology == "cluster":
        return request.getfixturevalue("redis_cluster").settings()  # type: ignore[no-any-return]
    return {"url": request.getfixturevalue("redis_url")}


@pytest.fixture
async def new_client(redis_settings: dict[str, Any]) -> AsyncIterator[ClientFactory]:
    """``new_client()``: another client on this test's topology (another process, as it were)."""
    made: list[tuple[aioredis.Redis, Any]] = []

    def make() -> aioredis.Redis:
        client, topology = connect(RedisSettings(**redis_settings))
        made.append((client, topology))
        return client

    yield make
    for client, topology in made:
        await client.aclose()
        await topology.aclose()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """The one Redis server of this test run."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), tcp=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture(name="redis")
async def redis_client(new_client: ClientFactory) -> aioredis.Redis:
    """A bytes client on the test's topology (the session server unless parametrized), emptied
    (FLUSHALL, on every master of a cluster) before the test."""
    client = new_client()
    await client.flushall()
    return client


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    """Start private servers a test may stop, kill and restart; all are stopped at teardown.

    ``redis_factory(data_dir=None, **kwargs)`` returns a started :class:`EmbeddedRedis`; ``data_dir``
    defaults to a fresh folder in ``tmp_path``, ``kwargs`` go to ``EmbeddedRedis``.
    """
    servers: list[EmbeddedRedis] = []

    def start(data_dir: Path | None = None, **kwargs: Any) -> EmbeddedRedis:
        server = EmbeddedRedis(data_dir or tmp_path / f"redis{len(servers)}", **kwargs)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()

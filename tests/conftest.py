"""Shared fixtures: one real Redis for the whole run, started by the run itself.

The session server listens on a free port on 127.0.0.1 (never the machine's own Redis on 6379). Async
clients are made per test, so each one lives on that test's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.storage.embedded_redis import EmbeddedRedis

RedisFactory = Callable[..., EmbeddedRedis]


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
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A bytes client on the session server, emptied (FLUSHALL) before the test."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushall()
    yield client
    await client.aclose()


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

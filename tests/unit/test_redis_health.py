"""The process's view of Redis: one line when it goes, one when it is back, and URLs without passwords."""

from __future__ import annotations

import logging
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.storage.health import RedisHealth, redacted_url


def test_a_password_never_reaches_a_log_line() -> None:
    assert redacted_url("redis://:s3cret@10.0.0.5:6380/0") == "redis://:***@10.0.0.5:6380/0"
    assert redacted_url("rediss://app:s3cret@cache.example:6379") == "rediss://app:***@cache.example:6379"
    assert redacted_url("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"
    assert redacted_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bot.storage.health"]


def test_an_outage_is_two_lines_however_many_calls_meet_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    health = RedisHealth("redis://r:6379", settle_seconds=0.2)
    health.answered()
    for _ in range(50):
        health.failed(RedisConnectionError("Connection refused"))
    assert health.down
    for _ in range(50):
        health.answered()
    assert not health.down
    lines = _lines(caplog)
    assert len(lines) == 2, lines
    assert lines[0].startswith(
        "lost the connection to Redis at redis://r:6379 (ConnectionError: Connection refused)"
    )
    assert lines[1].startswith("Redis at redis://r:6379 is back, after")


def test_stale_connections_failing_right_after_the_return_are_not_a_new_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    health = RedisHealth("r", settle_seconds=0.3)
    health.failed(RedisConnectionError("reset"))
    health.answered()
    health.failed(RedisConnectionError("Connection closed by server."))  # an old pooled connection
    health.answered()
    assert len(_lines(caplog)) == 2
    time.sleep(0.35)
    health.failed(RedisConnectionError("refused"))  # past the settling time: a new outage
    assert len(_lines(caplog)) == 3

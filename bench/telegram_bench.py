"""Yibao on Telegram, measured: a cached ``/balance`` through the whole stack against a bare PTB echo.

Not a test: nothing here asserts; it prints figures. Run ``.venv/bin/python bench/telegram_bench.py``
(``--quick`` for a short run, ``--help`` for the knobs); ``bench/README.md`` explains the figures.

What is measured, all in one process so the two sides share the machine's noise:

- the full path: update JSON -> ``PtbEngine.feed`` -> PTB -> ``TelegramCore`` -> ``dialogs`` -> Redis (a real
  ``redis-server`` on a unix socket; the read pipeline and the write script) -> the reply handed to
  :class:`NoNetworkRequest`, which answers every Bot API method locally and opens no socket;
- the reference: a bare PTB ``Application`` with one echo ``MessageHandler``, the same request class,
  fed the very same update dicts the same way;
- in rounds that alternate between the two, after a warm-up round of each; each figure is the median
  over the measured rounds;
- Redis round trips, counted at the connection (one ``send_packed_command`` is one round trip, whether it
  carries one command, a pipeline or a script), and calls reaching the sandbox insurance platform;
- the start-up of a real ``yibao run`` process (polling a Bot API emulator on loopback) to its first reply.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import importlib
import io
import os
import platform
import pstats
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import redis
import telegram
from benchkit import CountingConnection, NoNetworkRequest, bind_all, counting_client, yibao_command
from telegram import Update
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters

from bot.app import Runtime, build_runtime
from bot.config import Settings
from bot.crypto.pii import new_key_text
from bot.storage.embedded_redis import EmbeddedRedis
from bot.storage.keys import UserKind
from dialogs.models import (
    Inbound,
    Reply,
    UserKey,
)
from platforms.telegram.core import TelegramCore
from platforms.telegram.options import TelegramOptions
from platforms.telegram.ptb_engine import PtbEngine

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "123456:AAE-bench-token-0123456789abcdefghijklmno"  # noqa: S105 - a fake bot token
CONCURRENCY = 64
FIRST_USER_ID = 800_000_000
TARGET_RATIO = 0.50
TARGET_ROUND_TRIPS = 2.0
SANDBOX = "sandbox"
"""The platform name of the default settings' one in-process sandbox."""


# -- updates ---------------------------------------------------------------------------------------


class Updates:
    """Realistic private-chat message updates, ``update_id`` and each chat's ``message_id`` counting up."""

    def __init__(self, users: int) -> None:
        self.users = users
        self._update_id = 500_000_000
        self._message_ids = [0] * users

    def user_ids(self) -> range:
        return range(FIRST_USER_ID, FIRST_USER_ID + self.users)

    def message(self, index: int, text: str) -> dict[str, Any]:
        self._update_id += 1
        self._message_ids[index] += 1
        user_id = FIRST_USER_ID + index
        return {
            "update_id": self._update_id,
            "message": {
                "message_id": self._message_ids[index],
                "from": {"id": user_id, "is_bot": False, "first_name": "用户", "language_code": "zh-hans"},
                "chat": {"id": user_id, "type": "private", "first_name": "用户"},
                "date": int(time.time()),
                "text": text,
                "entities": [{"type": "bot_command", "offset": 0, "length": len(text)}],
            },
        }

    def round_robin(self, count: int, start: int, text: str = "/balance") -> list[dict[str, Any]]:
        return [self.message((start + i) % self.users, text) for i in range(count)]


# -- feeding ---------------------------------------------------------------------------------------


@dataclass
class RoundResult:
    updates: int
    seconds: float
    latencies: list[float]
    round_trips: int = 0
    handshakes: int = 0
    connections: int = 0
    insurance_calls: int = 0

    @property
    def rate(self) -> float:
        return self.updates / self.seconds

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 0.99) * 1000


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def feed(
    process: Callable[[dict[str, Any]], Awaitable[None]], updates: Sequence[dict[str, Any]]
) -> RoundResult:
    """Every update through ``process``, at most ``CONCURRENCY`` in flight (as PTB's
    ``concurrent_updates``); latency is one ``process`` call, from its start to its return."""
    pending: Iterator[dict[str, Any]] = iter(updates)
    latencies: list[float] = []
    clock = time.perf_counter

    async def worker() -> None:
        for update in pending:  # the workers share one iterator: each update is taken once
            t0 = clock()
            await process(update)
            latencies.append(clock() - t0)

    gc.collect()
    started = clock()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return RoundResult(len(updates), clock() - started, latencies)


# -- the two sides ---------------------------------------------------------------------------------


async def _echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    if message is None or message.text is None:
        return
    await context.bot.send_message(message.chat_id, message.text)


class EchoBot:
    """The reference: a bare PTB application that echoes every text message."""

    def __init__(self) -> None:
        self.request = NoNetworkRequest()
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(TOKEN)
            .request(self.request)
            .concurrent_updates(CONCURRENCY)
            .updater(None)
            .build()
        )
        self.app.add_handler(MessageHandler(filters.TEXT, _echo))

    async def start(self) -> None:
        await self.app.initialize()
        await self.app.start()

    async def process(self, data: dict[str, Any]) -> None:
        await self.app.process_update(Update.de_json(data, self.app.bot))

    async def stop(self) -> None:
        await self.app.stop()
        await self.app.shutdown()


@dataclass
class FullStack:
    runtime: Runtime
    engine: PtbEngine
    request: NoNetworkRequest

    async def process(self, data: dict[str, Any]) -> None:
        await self.engine.feed(data)


def count_insurance_calls(runtime: Runtime, counter: list[int]) -> None:
    """Count the balances the in-process sandbox platform is asked for (its server looks the method up
    on the instance per request, so wrapping it there sees every call that gets past the cache)."""
    sandbox = runtime.sandboxes[SANDBOX]
    original = sandbox.balance

    async def counted(member_id: str) -> Any:
        counter[0] += 1
        return await original(member_id)

    vars(sandbox)["balance"] = counted  # shadows the method on this instance only


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def breakdown_sides(
    full: FullStack, replies: tuple[Reply, ...]
) -> tuple[dict[str, Callable[[dict[str, Any]], Awaitable[None]]], PtbEngine]:
    """Parts of the full path, each fed the same updates, to see where its time goes.

    - PTB and the Telegram core with the conversation stubbed (it returns a real ``/balance``'s replies);
    - the conversation alone (``Conversation.handle``: dialogs, store, Redis), without PTB;
    - the two Redis round trips alone: the store's read pipeline and a release script, on its keys.
    """
    runtime = full.runtime

    async def stub(inbound: Inbound) -> tuple[Reply, ...]:
        return replies

    stubbed = PtbEngine(
        TelegramCore(stub, catalogs=runtime.conversation.catalogs, concurrency=CONCURRENCY),
        full.engine.options,
        request=NoNetworkRequest(),
    )
    release = runtime.redis.register_script(_RELEASE)

    def user_of(update: dict[str, Any]) -> UserKey:
        return UserKey(f"tg:{update['message']['from']['id']}")

    async def conversation(update: dict[str, Any]) -> None:
        message = update["message"]
        await runtime.conversation.handle(
            Inbound(user=user_of(update), text=message["text"], locale=message["from"].get("language_code"))
        )

    async def two_round_trips(update: dict[str, Any]) -> None:
        user = user_of(update)
        lock = runtime.keys.user(user, UserKind.LOCK)
        pipe = runtime.redis.pipeline(transaction=False)
        pipe.set(lock, "bench", nx=True, px=30_000)
        pipe.get(runtime.keys.user(user, UserKind.SESSION))
        pipe.hgetall(runtime.keys.user(user, UserKind.PROFILE))
        pipe.get(runtime.keys.user(user, UserKind.BALANCE))
        await pipe.execute()
        await release(keys=[lock], args=["bench"])

    return {
        "PTB + Telegram core, conversation stubbed": stubbed.feed,
        "conversation alone (no PTB)": conversation,
        "the 2 Redis round trips alone": two_round_trips,
    }, stubbed


def settings_for(socket_path: str, tmp: Path, prefix: str) -> Settings:
    return Settings(
        general={"data_dir": tmp / "data"},
        redis={"url": f"unix://{socket_path}", "prefix": prefix},
        security={"pii_key": new_key_text()},
        sms={"gateway": "file", "file_path": tmp / "sms.jsonl"},
        insurance={"balance_cache_seconds": 3600},
    )


# -- start-up of `yibao run` -------------------------------------------------------------------------


def _emulator_module() -> ModuleType:
    """The Bot API emulator of the end-to-end tests (they are not a package; their folder is put on
    the path)."""
    path = str(ROOT / "tests" / "e2e")
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("botapi_emulator")


@dataclass
class StartupRun:
    first_reply: float
    """From spawning ``yibao run`` to the reply to ``/help`` reaching the emulator."""
    serving: float | None
    """What the process logged as its own time to serving (after its imports)."""


_SERVING = re.compile(r"serving Telegram by \w+ on \w+, ([0-9.]+) s after start")


def startup_once(socket_path: str, tmp: Path, run: int) -> StartupRun:
    emulator_module = _emulator_module()
    folder = tmp / f"startup-{run}"
    folder.mkdir()
    log = folder / "yibao.log"
    with emulator_module.BotApiEmulator(token=TOKEN) as emulator:
        user = emulator.user(FIRST_USER_ID - 1 - run)
        env = {k: v for k, v in os.environ.items() if not k.startswith("YIBAO_")}
        env.update(
            {
                "YIBAO_TELEGRAM__TOKEN": TOKEN,
                "YIBAO_TELEGRAM__API_BASE_URL": emulator.url,
                "YIBAO_REDIS__URL": f"unix://{socket_path}",
                "YIBAO_REDIS__PREFIX": f"yibao-bench-startup-{run}",
                "YIBAO_SECURITY__PII_KEY": new_key_text(),
                "YIBAO_SMS__GATEWAY": "file",
                "YIBAO_SMS__FILE_PATH": str(folder / "sms.jsonl"),
                "YIBAO_GENERAL__DATA_DIR": str(folder / "data"),
                "YIBAO_LOGGING__FILE": str(log),
            }
        )
        with open(folder / "output.txt", "wb") as output:
            spawned = time.monotonic()
            process = subprocess.Popen(  # noqa: S603 - our own entry point, fixed arguments
                [*yibao_command(), "run"],
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
            try:
                user.says("/help")
                user.wait_for(lambda sent: True, timeout=60)
                first_reply = emulator.calls_to("sendMessage")[0].at - spawned
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    found = _SERVING.search(log.read_text(encoding="utf-8")) if log.exists() else None
    return StartupRun(first_reply, float(found[1]) if found else None)


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Figures:
    echo: list[RoundResult]
    full: list[RoundResult]
    warm_insurance_calls: int
    full_request: NoNetworkRequest
    echo_request: NoNetworkRequest
    startup: list[StartupRun]
    redis_version: str
    breakdown: dict[str, list[RoundResult]] = field(default_factory=dict)
    profile: str | None = None


async def measure(args: argparse.Namespace, socket_path: str, tmp: Path) -> Figures:
    settings = settings_for(socket_path, tmp, "yibao-bench")
    client = counting_client(socket_path)
    runtime = await build_runtime(settings, redis=client)
    info = await client.info("server")
    insurance_calls = [0]
    count_insurance_calls(runtime, insurance_calls)
    request = NoNetworkRequest()
    core = runtime.telegram_core()  # telegram.concurrent_updates: 64, as CONCURRENCY
    engine = PtbEngine(
        core,
        TelegramOptions(
            token=TOKEN, global_rate=1e6, per_chat_rate=1e6, concurrent_updates=CONCURRENCY, webhook=True
        ),
        request=request,
    )
    full = FullStack(runtime, engine, request)
    echo = EchoBot()
    updates = Updates(args.users)
    stats = CountingConnection.stats
    try:
        await engine.initialize()
        await core.set_commands()
        await engine.start()
        await echo.start()
        await bind_all(runtime, updates.user_ids())
        # Each user's first /balance asks the platform and fills the cache; the measured ones do not.
        await feed(full.process, updates.round_robin(args.users, 0))
        warm_insurance_calls = insurance_calls[0]
        cursor = 0
        echo_rounds: list[RoundResult] = []
        full_rounds: list[RoundResult] = []
        for n in range(args.rounds + 1):  # round 0 warms both up and is not reported
            batch = updates.round_robin(args.updates, cursor)
            cursor += args.updates
            order = ("echo", "full") if n % 2 == 0 else ("full", "echo")
            for side in order:
                if side == "echo":
                    result = await feed(echo.process, batch)
                    if n:
                        echo_rounds.append(result)
                    continue
                before, calls_before = stats.snapshot(), insurance_calls[0]
                result = await feed(full.process, batch)
                after = stats.snapshot()
                result.round_trips = after[0] - before[0]
                result.handshakes = after[1] - before[1]
                result.connections = after[2] - before[2]
                result.insurance_calls = insurance_calls[0] - calls_before
                if n:
                    full_rounds.append(result)
        breakdown: dict[str, list[RoundResult]] = {}
        if args.breakdown:
            sample = await runtime.conversation.handle(
                Inbound(user=UserKey(f"tg:{FIRST_USER_ID}"), text="/balance", locale="zh-hans")
            )
            sides, stubbed = breakdown_sides(full, sample)
            await stubbed.initialize()
            await stubbed.start()
            try:
                sides = {
                    "reference: bare PTB echo": echo.process,
                    **sides,
                    "full: cached /balance": full.process,
                }
                breakdown = {name: [] for name in sides}
                for n in range(args.rounds + 1):
                    batch = updates.round_robin(args.updates, cursor)
                    cursor += args.updates
                    for name, process in sides.items():
                        result = await feed(process, batch)
                        if n:
                            breakdown[name].append(result)
            finally:
                await stubbed.stop()
        profile = None
        if args.profile:
            profiler = cProfile.Profile()
            batch = updates.round_robin(args.updates, cursor)
            profiler.enable()
            await feed(full.process, batch)
            profiler.disable()
            profile = _profile_text(profiler)
    finally:
        await echo.stop()
        await engine.stop()
        await runtime.aclose()
    startup = [startup_once(socket_path, tmp, run) for run in range(args.startup_runs)]
    return Figures(
        echo=echo_rounds,
        full=full_rounds,
        warm_insurance_calls=warm_insurance_calls,
        full_request=request,
        echo_request=echo.request,
        startup=startup,
        redis_version=str(info.get("redis_version", "?")),
        breakdown=breakdown,
        profile=profile,
    )


def _profile_text(profiler: cProfile.Profile, lines: int = 25) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(lines)
    return out.getvalue()


def report(args: argparse.Namespace, figures: Figures) -> None:
    def med(rounds: list[RoundResult], attr: str) -> float:
        return statistics.median(float(getattr(r, attr)) for r in rounds)

    echo_rate, full_rate = med(figures.echo, "rate"), med(figures.full, "rate")
    ratio = full_rate / echo_rate
    updates = sum(r.updates for r in figures.full)
    trips = sum(r.round_trips for r in figures.full) / updates
    handshakes = sum(r.handshakes for r in figures.full)
    connections = sum(r.connections for r in figures.full)
    insurance = sum(r.insurance_calls for r in figures.full)
    cpus = os.cpu_count()
    print(
        f"machine: Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{cpus} CPUs ({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else cpus} usable), "
        f"{platform.system()} {platform.machine()}"
    )
    print(
        f"versions: python-telegram-bot {telegram.__version__}, redis-py {redis.__version__}, "
        f"redis-server {figures.redis_version}"
    )
    print(
        f"run: {args.users} users bound and with a warm balance cache; {args.rounds} measured rounds of "
        f"{args.updates} /balance updates per side (plus one warm-up round), sides alternating; "
        f"{CONCURRENCY} updates in flight; figures are medians over the rounds"
    )
    print(
        "full path: rate limits lifted (global and per-chat 1e6/s) to measure the stack, not Telegram's "
        "limits; replies go to a request object that makes no network call"
    )
    print()
    header = f"{'':34}{'updates/s':>12}{'p50 ms':>10}{'p99 ms':>10}"
    print(header)
    print("-" * len(header))
    for name, rounds in (("reference: bare PTB echo", figures.echo), ("full: cached /balance", figures.full)):
        print(
            f"{name:34}{med(rounds, 'rate'):12,.0f}{med(rounds, 'p50_ms'):10.2f}{med(rounds, 'p99_ms'):10.2f}"
        )
    print(
        f"(latency: one process() call. With {CONCURRENCY} in flight, updates that wait on Redis queue behind "
        f"each other (p50 ~ {CONCURRENCY} / rate); the echo never waits on I/O, so it never queues.)"
    )
    print()
    verdict = "MET" if ratio >= TARGET_RATIO else "NOT MET"
    print(f"throughput ratio full/echo:        {ratio:.2f}   (target >= {TARGET_RATIO:.2f}: {verdict})")
    trips_verdict = "MET" if trips <= TARGET_ROUND_TRIPS else "NOT MET"
    print(
        f"Redis round trips per update:      {trips:.2f}   (target <= {TARGET_ROUND_TRIPS:.0f}: {trips_verdict}; "
        f"{handshakes} handshake exchanges on {connections} new connections not included)"
    )
    print(
        f"insurance calls while measured:    {insurance}      "
        f"(warm-up: {figures.warm_insurance_calls} for {args.users} users' first /balance)"
    )
    balance_replies = figures.full_request.balance_replies
    sent = figures.full_request.calls["sendMessage"]
    print(
        f"full path replies showing a balance: {balance_replies} of {sent} sendMessage calls "
        "(every round, warm-up included)"
    )
    if figures.startup:
        firsts = [s.first_reply for s in figures.startup]
        serving = [s.serving for s in figures.startup if s.serving is not None]
        served = f"; it logs serving after {statistics.median(serving):.2f} s" if serving else ""
        print(
            f"start-up, `yibao run` spawned -> first reply: {statistics.median(firsts):.2f} s   (median of "
            f"{len(firsts)}: {', '.join(f'{s:.2f}' for s in firsts)}; includes interpreter start and "
            f"imports{served})"
        )
    print()
    print("per round (updates/s, echo | full):")
    for i, (e, f) in enumerate(zip(figures.echo, figures.full, strict=True), 1):
        print(f"  round {i}: {e.rate:9,.0f} | {f.rate:9,.0f}   ratio {f.rate / e.rate:.2f}")
    print(f"Bot API calls, full path: {dict(sorted(figures.full_request.calls.items()))}")
    print(f"Bot API calls, reference: {dict(sorted(figures.echo_request.calls.items()))}")
    if figures.breakdown:
        print()
        print("breakdown (the same updates through parts of the full path; medians; µs = 1e6 / updates/s):")
        reference = med(figures.breakdown["reference: bare PTB echo"], "rate")
        for name, rounds in figures.breakdown.items():
            rate = med(rounds, "rate")
            print(
                f"  {name:38}{rate:9,.0f}/s {1e6 / rate:7.0f} µs/update   {rate / reference:5.2f} of the echo"
            )
    if figures.profile:
        print()
        print("profile of one extra full-path round (not in the figures above), by own time:")
        print(figures.profile)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--updates", type=int, default=3000, help="updates per side per round (3000)")
    parser.add_argument("--users", type=int, default=2000, help="bound users, fed round-robin (2000)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per side (3)")
    parser.add_argument("--startup-runs", type=int, default=3, help="`yibao run` start-ups to time (3)")
    parser.add_argument(
        "--quick", action="store_true", help="a short run: 500 users, 1500 updates, 2 rounds, 1 start-up"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="also time parts of the full path (more rounds)"
    )
    parser.add_argument("--profile", action="store_true", help="also profile one extra full-path round")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.updates, args.rounds, args.startup_runs = 500, 1500, 2, 1
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="yibao-bench-") as name:
        tmp = Path(name)
        with EmbeddedRedis(tmp / "redis", tcp=False) as server:
            socket_path = server.url.removeprefix("unix://")
            figures = asyncio.run(measure(args, socket_path, tmp))
    report(args, figures)
    print(f"\n(benchmark took {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()

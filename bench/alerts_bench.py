"""Yibao's alerts, measured: a sweep over many subscribed users, and the outbox draining at its rate.

Not a test: nothing here asserts; it prints figures. Run ``.venv/bin/python bench/alerts_bench.py``
(``--quick`` for a short run, ``--help`` for the knobs); ``bench/README.md`` explains the figures.

The sweep: a real ``redis-server`` (unix socket, AOF on, as the embedded default runs it) holds
``--users`` bound users, each with a threshold; the sandbox insurance platform runs as its own
process (``yibao sandbox serve``, real HTTP on loopback, signed requests), and this process runs
one worker's checker (``bot.alerts.checks.Checker``) until every user is checked once. Users are spread
over the sandbox's employees; one in a hundred has a threshold above the balance, so the sweep also
queues alerts. Figures: users checked per second, Redis round trips per user (counted at the
connection), and Redis memory per subscribed user (``INFO memory`` ``used_memory``, after binding
all the users and again after subscribing them and sweeping).

The outbox: ``--messages`` alerts queued, then one sender (``bot.alerts.outbox.Sender``) delivers them at
``--rate`` through the real Telegram core and PTB engine (its rate limiter) into a Bot API answered
in-process (no network). Figures: the achieved rate against the configured one, and the most sends
in any one second (sliding window, and per calendar second).

``--cluster``: the sweep once more on a single Redis (TCP, no persistence) with two workers, and on a
Redis Cluster of three masters (a replica each, ``alerts.shards`` 12) with two workers, started in
the same run from ``redis-server`` and ``redis-cli`` (``tests/redis_topologies.py``). Figures: users
checked per second on each and their ratio, and memory per user all told on each (the cluster's
summed over its masters).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import platform
import pstats
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
from benchkit import CountingConnection, NoNetworkRequest, counting_client, free_port, yibao_command
from pydantic import SecretStr

from bot.alerts.checks import Checker, CheckReport
from bot.alerts.outbox import Outbox
from bot.app import Runtime, build_runtime
from bot.config import Settings
from bot.crypto.pii import new_key_text
from bot.storage.embedded_redis import EmbeddedRedis
from bot.storage.keys import UserKind
from dialogs.crossing import AlertFacts, Watch
from dialogs.models import Binding, MemberId, PlatformName, UserKey
from insurance.sandbox import SandboxPlatform
from insurance.sandbox_data import Scenario
from insurance.server import DEMO_SECRET
from platforms.telegram.options import TelegramOptions
from platforms.telegram.ptb_engine import PtbEngine

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "123456:AAE-bench-token-0123456789abcdefghijklmno"  # noqa: S105 - a fake bot token
TARGET_USERS_PER_S = 20_000
TARGET_BYTES_PER_USER = 400
TARGET_BYTES_ALL_TOLD = 600
CLUSTER_SHARDS = 12
"""alerts.shards for the cluster: four parts per master."""
TARGET_RATE_ERROR = 0.02
FIRST_USER_ID = 700_000_000
ALERTING_SHARE = 100
"""One user in this many has a threshold above their balance (an alert in the sweep)."""


def start_sandbox(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [*yibao_command(), "sandbox", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the sandbox server did not start")


def settings_for(
    socket_path: str,
    tmp: Path,
    port: int,
    args: argparse.Namespace,
    redis_section: dict[str, Any] | None = None,
    shards: int = 1,
) -> Settings:
    return Settings(
        general={"data_dir": tmp / "data"},  # type: ignore[arg-type]
        redis=redis_section or {"url": f"unix://{socket_path}"},  # type: ignore[arg-type]
        security={"pii_key": new_key_text()},  # type: ignore[arg-type]
        sms={"gateway": "file", "file_path": tmp / "sms.jsonl"},  # type: ignore[arg-type]
        insurance={  # type: ignore[arg-type]
            "platforms": [
                {
                    "name": "sandbox",
                    "kind": "http",
                    "base_url": f"http://127.0.0.1:{port}",
                    "secret": DEMO_SECRET,
                    "max_concurrency": args.concurrency,
                }
            ]
        },
        alerts={  # type: ignore[arg-type]
            "batch_size": args.batch,
            "platform_concurrency": args.concurrency,
            "send_rate": args.rate,
            "quiet_hours": "",
            "shards": shards,
        },
    )


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


async def populate(runtime: Runtime, users: int, subscribe: bool) -> None:
    """``users`` bound users (written as the store writes them, in pipelines rather than one guarded
    update each, which would take minutes); with ``subscribe``, their thresholds and schedule entries."""
    people = [
        p
        for p in SandboxPlatform.from_file().data.people
        if p.scenario in (Scenario.NORMAL, Scenario.HIGH_BALANCE, Scenario.LOW_BALANCE)
    ]
    sandbox = SandboxPlatform.from_file()
    balances = {p.member_id: (await sandbox.balance(p.member_id)).personal_account for p in people}
    keys, codec, r = runtime.keys, runtime.store.codec, runtime.redis
    now = datetime.now(UTC)
    chunk = 1000
    for first in range(0, users, chunk):
        pipe = r.pipeline(transaction=False)
        for i in range(first, min(first + chunk, users)):
            user = UserKey(f"tg:{FIRST_USER_ID + i}")
            p = people[i % len(people)]
            profile = keys.user(user, UserKind.PROFILE)
            if not subscribe:
                binding = Binding(
                    member_id=MemberId(p.member_id),
                    platform=PlatformName("sandbox"),
                    id_number=SecretStr(p.id_number),
                    phone=SecretStr(p.phone),
                    bound_at=now,
                )
                pipe.hset(profile, mapping=codec.encode_binding(user, binding))  # type: ignore[arg-type]
                continue
            balance = balances[p.member_id]
            assert balance is not None
            threshold = balance + 1 if i % ALERTING_SHARE == 0 else max(Decimal(1), balance // 2)
            mark = Watch(secrets.token_hex(6), told=False).mark()
            pipe.hset(profile, mapping={"threshold": str(threshold), "alert": mark, "alert_lang": "zh"})
            pipe.zadd(keys.schedule_of(user), {user: 0})
        await pipe.execute()


async def sweep(runtime: Runtime, users: int, profile: bool) -> tuple[float, float, CheckReport]:
    worker = runtime.alert_worker({})
    checker = worker.checker
    assert isinstance(checker, Checker)
    report = CheckReport()
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    cpu = time.process_time()
    if profiler is not None:
        profiler.enable()
    await checker.move_due()
    while report.checked < users:
        part = await checker.work(block_ms=100)
        report.add(part)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
    return seconds, cpu, report


def sweep_part(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    server = EmbeddedRedis(tmp / "redis")
    server.start()
    port = free_port()
    sandbox = start_sandbox(port)
    try:
        sync = redis.Redis(unix_socket_path=server.url.removeprefix("unix://"))
        counted = counting_client(server.url.removeprefix("unix://"))

        async def run() -> dict[str, Any]:
            runtime = await build_runtime(
                settings_for(server.url.removeprefix("unix://"), tmp, port, args), redis=counted
            )
            try:
                await populate(runtime, args.users, subscribe=False)
                await asyncio.sleep(0.2)
                bound = used_memory(sync)
                await populate(runtime, args.users, subscribe=True)
                # A small warm-up sweep on other keys is not needed: the first batches warm the pool.
                before = CountingConnection.stats.snapshot()
                others = proc_cpu(sandbox.pid), redis_cpu(sync)
                seconds, cpu, report = await sweep(runtime, args.users, args.profile)
                after = CountingConnection.stats.snapshot()
                others = proc_cpu(sandbox.pid) - others[0], redis_cpu(sync) - others[1]
                await asyncio.sleep(0.2)
                swept = used_memory(sync)
                return {
                    "seconds": seconds,
                    "cpu": cpu,
                    "sandbox_cpu": others[0],
                    "redis_cpu": others[1],
                    "report": report,
                    "round_trips": after[0] - before[0],
                    "bound_bytes": bound,
                    "swept_bytes": swept,
                    "outbox": sync.xlen(runtime.keys.outbox("tg")),
                }
            finally:
                await runtime.aclose()

        return asyncio.run(run())
    finally:
        sandbox.terminate()
        sandbox.wait(10)
        server.stop()


async def sweep_with(runtime: Runtime, users: int, workers: int) -> float:
    """Seconds for ``workers`` checkers in this process to check every user once."""
    checkers = [runtime.alert_worker({}).checker for _ in range(workers)]
    started = time.perf_counter()
    assert checkers[0] is not None
    await checkers[0].move_due()
    checked = 0

    async def work(checker: Checker) -> None:
        nonlocal checked
        while checked < users:
            part = await checker.work(block_ms=100)
            checked += part.checked

    await asyncio.gather(*(work(c) for c in checkers if c is not None))
    return time.perf_counter() - started


def cluster_part(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The sweep with two workers on one Redis and on a three-master cluster, in one run."""
    sys.path.insert(0, str(ROOT / "tests"))
    from redis_topologies import ClusterSet, Node, missing_tools
    from redis_topologies import free_port as node_port

    if (why := missing_tools()) is not None:
        raise SystemExit(f"--cluster {why}")
    single = Node(tmp / "single", node_port(), [])
    single.start()
    cluster = ClusterSet(tmp / "cluster").start()
    port = free_port()
    sandbox = start_sandbox(port)
    out: dict[str, Any] = {}
    try:
        for name, section, shards, nodes in (
            ("single", {"url": f"redis://{single.address}"}, 1, [single]),
            ("cluster", {"url": cluster.url, "cluster": True}, CLUSTER_SHARDS, None),
        ):
            masters = nodes if nodes is not None else cluster.live_masters()
            settings = settings_for("", tmp / name, port, args, redis_section=section, shards=shards)

            async def run(settings: Settings = settings, masters: list[Node] = masters) -> dict[str, float]:
                runtime = await build_runtime(settings)
                try:
                    empty = sum(used_memory(n.client()) for n in masters)
                    await populate(runtime, args.users, subscribe=False)
                    await populate(runtime, args.users, subscribe=True)
                    seconds = await sweep_with(runtime, args.users, workers=2)
                    await asyncio.sleep(0.2)
                    used = sum(used_memory(n.client()) for n in masters) - empty
                    data = sum(int(n.client().info("memory")["used_memory_dataset"]) for n in masters)
                    return {
                        "rate": args.users / seconds,
                        "bytes": used / args.users,
                        "data": data / args.users,
                    }
                finally:
                    await runtime.aclose()

            out[name] = asyncio.run(run())
    finally:
        sandbox.terminate()
        sandbox.wait(10)
        cluster.stop()
        single.kill()
    return out


def outbox_part(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    server = EmbeddedRedis(tmp / "redis-outbox")
    server.start()
    try:
        settings = settings_for(server.url.removeprefix("unix://"), tmp, free_port(), args)

        async def run() -> dict[str, Any]:
            runtime = await build_runtime(settings)
            request = NoNetworkRequest()
            core = runtime.telegram_core()
            engine = PtbEngine(
                core,
                TelegramOptions(token=TOKEN, global_rate=max(30.0, args.rate), webhook=True),
                request=request,
            )
            await engine.initialize()
            try:
                outbox = Outbox(runtime.keys, runtime.store.codec)
                now = datetime.now(UTC)
                pipe = runtime.redis.pipeline(transaction=False)
                for i in range(args.messages):
                    user = UserKey(f"tg:{FIRST_USER_ID + i}")
                    token = secrets.token_hex(6)
                    profile = runtime.keys.user(user, UserKind.PROFILE)
                    pipe.hset(profile, mapping={"threshold": "100", "alert": Watch(token, told=True).mark()})
                    facts = AlertFacts(balance=Decimal("88.20"), threshold=Decimal(100), as_of=now)
                    outbox.put(pipe, user, token, facts, now)
                await pipe.execute()
                sender = runtime.alert_worker({"tg": core}, checks=False).senders[0]
                started = time.monotonic()
                sent = 0
                while sent < args.messages:
                    sent += (await sender.work(block_ms=100, count=50)).sent
                return {"seconds": time.monotonic() - started, "sent_at": request.sent_at}
            finally:
                await engine.close()
                await runtime.aclose()

        return asyncio.run(run())
    finally:
        server.stop()


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def report(
    args: argparse.Namespace,
    sweep: dict[str, Any] | None,
    drain: dict[str, Any] | None,
    topologies: dict[str, Any] | None = None,
) -> None:
    print(f"Yibao alerts benchmark — Python {platform.python_version()}, {os.cpu_count()} cores")
    if sweep is not None:
        r: CheckReport = sweep["report"]
        rate = r.checked / sweep["seconds"]
        trips = sweep["round_trips"] / r.checked
        per_user = (sweep["swept_bytes"] - sweep["bound_bytes"]) / args.users
        verdict = "met" if rate >= TARGET_USERS_PER_S else "NOT met"
        mem_verdict = "met" if per_user <= TARGET_BYTES_PER_USER else "NOT met"
        print(
            f"\nSweep: {r.checked:,} subscribed users against the sandbox over HTTP (batch {args.batch}, "
            f"{args.concurrency} calls in flight)"
        )
        print(
            f"  users checked/s:                 {rate:,.0f}   (target >= {TARGET_USERS_PER_S:,}: {verdict}); "
            f"{sweep['seconds']:.2f} s in all"
        )
        print(f"  Redis round trips per user:      {trips:.3f}")
        per = 1e6 / r.checked
        print(
            f"  CPU a user:                      {sweep['cpu'] * per:.1f} µs here (the worker), "
            f"{sweep['sandbox_cpu'] * per:.1f} µs the sandbox server, {sweep['redis_cpu'] * per:.1f} µs "
            f"redis-server"
        )
        all_told = sweep["swept_bytes"] / args.users
        all_verdict = "met" if all_told <= TARGET_BYTES_ALL_TOLD else "NOT met"
        print(
            f"  Redis memory per subscribed user: {per_user:.0f} B   (target <= {TARGET_BYTES_PER_USER}: "
            f"{mem_verdict}); with the binding: {all_told:.0f} B a user in all (target <= "
            f"{TARGET_BYTES_ALL_TOLD}: {all_verdict})"
        )
        print(
            f"  alerts queued: {r.alerts:,} (1 user in {ALERTING_SHARE}); no sure balance: {r.unknown:,}; "
            f"outbox length {sweep['outbox']:,}"
        )
    if topologies is not None:
        one, many = topologies["single"], topologies["cluster"]
        ratio = many["rate"] / one["rate"]
        verdict = "met" if ratio >= 1 else "NOT met"
        print(f"\nSweep on two topologies, two workers each (in this process), {args.users:,} users:")
        print(
            f"  one Redis:                       {one['rate']:,.0f} users/s; {one['bytes']:.0f} B a user in all"
        )
        print(
            f"  cluster, 3 masters ({CLUSTER_SHARDS} shards): {many['rate']:,.0f} users/s; "
            f"{many['bytes']:.0f} B a user in all (over the masters)"
        )
        print(f"  cluster / one Redis:             {ratio:.2f}   (target >= 1: {verdict})")
    if drain is not None:
        times = sorted(drain["sent_at"])
        n = len(times)
        achieved = (n - 1) / (times[-1] - times[0])
        error = abs(achieved - args.rate) / args.rate
        window = max_in_window(times)
        calendar = max(
            sum(1 for t in times if int(t - times[0]) == s) for s in range(int(times[-1] - times[0]) + 1)
        )
        ok = "met" if error <= TARGET_RATE_ERROR and window <= args.rate else "NOT met"
        print(
            f"\nOutbox: {n:,} alerts at a configured {args.rate:g}/s through the Telegram core and PTB engine, no network"
        )
        print(
            f"  achieved rate:                   {achieved:.2f}/s ({error:.1%} off; target within "
            f"{TARGET_RATE_ERROR:.0%} and no second above: {ok})"
        )
        print(f"  most sends in any 1 s window:    {window} (sliding); {calendar} (calendar seconds)")
        print(f"  {drain['seconds']:.1f} s to drain")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--rate", type=float, default=30.0, help="alerts.send_rate for the outbox part")
    p.add_argument("--batch", type=int, default=100, help="alerts.batch_size")
    p.add_argument("--concurrency", type=int, default=8, help="alerts.platform_concurrency")
    p.add_argument("--only", choices=("sweep", "outbox"))
    p.add_argument(
        "--cluster",
        action="store_true",
        help="also sweep on one Redis and on a 3-master cluster, two workers each",
    )
    p.add_argument("--quick", action="store_true", help="10,000 users and 300 messages")
    p.add_argument("--profile", action="store_true", help="print where the sweep's time goes (cProfile)")
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.messages = 10_000, 300
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="yibao-alerts-bench-") as tmp:
        sweep = sweep_part(args, Path(tmp)) if args.only in (None, "sweep") else None
        drain = outbox_part(args, Path(tmp)) if args.only in (None, "outbox") else None
        topologies = cluster_part(args, Path(tmp)) if args.cluster else None
    report(args, sweep, drain, topologies)


if __name__ == "__main__":
    main()

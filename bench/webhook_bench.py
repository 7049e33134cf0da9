"""Telegram over real HTTP, as a user meets it: webhook POSTs in, Bot API calls out, on loopback.

Four bots, each its own process, each behind its own port, all answering ``/balance``:

- ``yibao run`` on the aiogram engine and on the PTB engine, webhook mode, ``--users`` users bound
  and their balances cached (the figure a user meets for a repeated question);
- a bare aiogram webhook bot (aiogram's own aiohttp server and ``SimpleRequestHandler``) and a bare
  PTB webhook bot (PTB's documented custom-webhook set-up: Starlette on uvicorn), each answering
  ``/balance`` with a fixed text through ``sendMessage``: what the library costs with no bot in it.

A load generator in this process keeps ``--connections`` keep-alive HTTP/1.1 connections busy with
``POST /telegram`` (the secret header, one update each, a different user each time); a Bot API stub
(another process, aiohttp) answers every call at once. Rounds are interleaved, the bots taking turns
in a rotating order, so the machine's noise falls on all of them alike; the figures are medians of
the rounds. CPU per update is the bot process's user + system time over the round (from
``/proc/<pid>/stat``), divided by the updates. Start-up is from spawning the process to the stub's
seeing its ``setWebhook``.

    .venv/bin/python bench/webhook_bench.py            # about 5 minutes
    .venv/bin/python bench/webhook_bench.py --quick    # about 1 minute

Figures, not tests: nothing here asserts; targets are printed as MET or NOT MET.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from benchkit import bind_all, free_port, yibao_command

TOKENS = {
    "yibao-aiogram": "111111:AAE-bench-aiogram-0123456789abcdefghijkl",
    "yibao-ptb": "222222:AAE-bench-ptb-0123456789abcdefghijklmnop",
    "bare-aiogram": "333333:AAE-bench-bare-aiogram-0123456789abcdef",
    "bare-ptb": "444444:AAE-bench-bare-ptb-0123456789abcdefghijk",
}
SECRET = "bench-webhook-secret"  # noqa: S105 - a fake webhook secret
PATH = "/telegram"
FIRST_USER_ID = 900_000_000
FIXED_REPLY = "个人账户：¥1,234.56"
TICKS = os.sysconf("SC_CLK_TCK")


# -- the Bot API stub (its own process) ---------------------------------------------------------------


def run_stub(port: int) -> None:
    """Answer every Bot API call at once; ``GET /_stats`` tells what each bot sent and when."""
    from aiohttp import web

    sent: Counter[str] = Counter()
    balances: Counter[str] = Counter()
    first: dict[str, dict[str, float]] = defaultdict(dict)
    message_id = 0

    async def params(request: web.Request) -> dict[str, Any]:
        kind = request.content_type
        if kind == "application/json":
            return dict(await request.json())
        if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
            return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        return dict(parse_qsl(request.query_string))

    async def api(request: web.Request) -> web.Response:
        nonlocal message_id
        token = request.match_info["token"]
        method = request.match_info["method"]
        first[token].setdefault(method, time.time())
        p = await params(request)
        bot = {"id": int(token.split(":")[0]), "is_bot": True, "first_name": "Bench", "username": "bench_bot"}
        result: object = True
        if method == "getMe":
            result = {**bot, "can_join_groups": True, "can_read_all_group_messages": False}
        elif method == "sendMessage":
            message_id += 1
            sent[token] += 1
            text = str(p.get("text", ""))
            if "个人账户" in text:
                balances[token] += 1
            result = {
                "message_id": message_id,
                "from": bot,
                "chat": {"id": int(p["chat_id"]), "type": "private", "first_name": "用户"},
                "date": int(time.time()),
                "text": text,
            }
        return web.json_response({"ok": True, "result": result})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"sent": sent, "balances": balances, "first": first})

    app = web.Application()
    app.router.add_get("/_stats", stats)
    app.router.add_route("*", "/bot{token}/{method}", api)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- the bare bots (their own processes) --------------------------------------------------------------


def run_bare_aiogram(port: int, api: str, token: str, url: str) -> None:
    from aiogram import Bot, Dispatcher
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.types import Message
    from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
    from aiohttp import web

    bot = Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(api), limit=256))
    dp = Dispatcher()

    @dp.message()
    async def balance(message: Message) -> None:
        await message.answer(FIXED_REPLY)

    async def on_startup(bot: Bot) -> None:
        await bot.set_webhook(url, secret_token=SECRET)

    dp.startup.register(on_startup)
    app = web.Application()
    SimpleRequestHandler(dispatcher=dp, bot=bot, secret_token=SECRET).register(app, path=PATH)
    setup_application(app, dp, bot=bot)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def run_bare_ptb(port: int, api: str, token: str, url: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route
    from telegram import Update
    from telegram.ext import Application, ContextTypes, MessageHandler, filters

    application = (
        Application.builder().token(token).base_url(f"{api}/bot").updater(None).concurrent_updates(64).build()
    )

    async def balance(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await context.bot.send_message(update.effective_chat.id, FIXED_REPLY)

    application.add_handler(MessageHandler(filters.ALL, balance))

    async def telegram(request: Request) -> Response:
        if request.headers.get("X-Telegram-Bot-Api-Secret-Token") != SECRET:
            return Response(status_code=403)
        await application.process_update(Update.de_json(await request.json(), application.bot))
        return Response()

    async def main() -> None:
        server = uvicorn.Server(
            uvicorn.Config(
                Starlette(routes=[Route(PATH, telegram, methods=["POST"])]),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                access_log=False,
            )
        )
        async with application:
            await application.bot.set_webhook(url, secret_token=SECRET)
            await application.start()
            await server.serve()
            await application.stop()

    asyncio.run(main())


# -- the load generator -------------------------------------------------------------------------------


def update_bytes(update_id: int, user_id: int) -> bytes:
    body = json.dumps(
        {
            "update_id": update_id,
            "message": {
                "message_id": update_id,
                "date": int(time.time()),
                "chat": {"id": user_id, "type": "private", "first_name": "用户"},
                "from": {"id": user_id, "is_bot": False, "first_name": "用户", "language_code": "zh-hans"},
                "text": "/balance",
                "entities": [{"type": "bot_command", "offset": 0, "length": 8}],
            },
        },
        ensure_ascii=False,
    ).encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Telegram-Bot-Api-Secret-Token: {SECRET}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


@dataclass
class Round:
    seconds: float
    latencies: list[float]
    cpu_seconds: float
    failed: int

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def load(port: int, requests: list[bytes], connections: int, pid: int) -> Round:
    queue = list(reversed(requests))
    latencies: list[float] = []
    failed = 0
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal failed
        while queue:
            request = queue.pop()
            started = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - started)
            failed += status != 200

    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    await asyncio.gather(*(worker(r, w) for r, w in streams))
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu_before
    for _, writer in streams:
        writer.close()
    return Round(seconds, latencies, cpu, failed)


# -- the orchestra ------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    spawned_at: float
    rounds: list[Round] = field(default_factory=list)


def yibao_env(
    name: str, engine: str, port: int, api: str, redis_url: str, tmp: Path, key: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIBAO_")}
    env.update(
        {
            "YIBAO_TELEGRAM__TOKEN": TOKENS[name],
            "YIBAO_TELEGRAM__ENGINE": engine,
            "YIBAO_TELEGRAM__API_BASE_URL": api,
            "YIBAO_TELEGRAM__MODE": "webhook",
            "YIBAO_TELEGRAM__WEBHOOK_URL": f"http://127.0.0.1:{port}{PATH}",
            "YIBAO_TELEGRAM__WEBHOOK_SECRET": SECRET,
            "YIBAO_TELEGRAM__GLOBAL_RATE": "1000",
            "YIBAO_TELEGRAM__PER_CHAT_RATE": "30",
            "YIBAO_HTTP__LISTEN_PORT": str(port),
            "YIBAO_REDIS__URL": redis_url,
            "YIBAO_REDIS__PREFIX": "webhook-bench",
            "YIBAO_SECURITY__PII_KEY": key,
            "YIBAO_SMS__GATEWAY": "file",
            "YIBAO_SMS__FILE_PATH": str(tmp / "sms.jsonl"),
            "YIBAO_GENERAL__DATA_DIR": str(tmp / f"data-{name}"),
            "YIBAO_INSURANCE__BALANCE_CACHE_SECONDS": "3600",
            "YIBAO_ALERTS__ENABLED": "false",
            "YIBAO_LOGGING__LEVEL": "WARNING",
            "YIBAO_LOGGING__FILE": str(tmp / f"{name}.log"),
        }
    )
    return env


def spawn(name: str, api: str, redis_url: str, tmp: Path, key: str) -> Target:
    port = free_port()
    if name.startswith("yibao"):
        engine = name.removeprefix("yibao-")
        argv = [*yibao_command(), "run"]
        env = yibao_env(name, engine, port, api, redis_url, tmp, key)
    else:
        argv = [
            sys.executable,
            __file__,
            "--role",
            name,
            str(port),
            api,
            TOKENS[name],
            f"http://127.0.0.1:{port}{PATH}",
        ]
        env = dict(os.environ)
    started = time.time()
    process = subprocess.Popen(argv, env=env, cwd=tmp, stdin=subprocess.DEVNULL)  # noqa: S603
    return Target(name, port, process, started)


async def stats(stub_port: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", stub_port)
    writer.write(b"GET /_stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    raw = await reader.read()
    writer.close()
    return dict(json.loads(raw.split(b"\r\n\r\n", 1)[1]))


async def wait_ready(targets: list[Target], stub_port: int, within: float = 60) -> dict[str, float]:
    deadline = time.monotonic() + within
    while True:
        seen = (await stats(stub_port))["first"]
        startup = {
            t.name: seen[TOKENS[t.name]]["setWebhook"] - t.spawned_at
            for t in targets
            if "setWebhook" in seen.get(TOKENS[t.name], {})
        }
        if len(startup) == len(targets):
            return startup
        for t in targets:
            if t.process.poll() is not None:
                raise SystemExit(f"{t.name} exited {t.process.returncode} while starting")
        if time.monotonic() > deadline:
            raise SystemExit(f"not started in {within} s: {sorted(set(TOKENS) - set(startup))}")
        await asyncio.sleep(0.05)


async def wait_port(port: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def prepare(redis_url: str, tmp: Path, key: str, users: int) -> None:
    from bot.app import build_runtime
    from bot.config import Settings

    settings = Settings(
        general={"data_dir": tmp / "data-binder"},
        redis={"url": redis_url, "prefix": "webhook-bench"},
        security={"pii_key": key},
        sms={"gateway": "file", "file_path": tmp / "sms.jsonl"},
    )
    runtime = await build_runtime(settings)
    try:
        await bind_all(runtime, range(FIRST_USER_ID, FIRST_USER_ID + users))
    finally:
        await runtime.aclose()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(args: argparse.Namespace) -> None:
    from bot.crypto.pii import new_key_text
    from bot.storage.embedded_redis import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="yibao-webhook-bench-") as folder:
        tmp = Path(folder)
        redis_server = EmbeddedRedis(tmp / "redis")
        redis_server.start()
        stub_port = free_port()
        stub = subprocess.Popen([sys.executable, __file__, "--role", "stub", str(stub_port)])  # noqa: S603, ASYNC220
        targets: list[Target] = []
        try:
            key = new_key_text()
            await prepare(redis_server.url, tmp, key, args.users)
            await wait_port(stub_port)
            api = f"http://127.0.0.1:{stub_port}"
            targets = [spawn(name, api, redis_server.url, tmp, key) for name in TOKENS]
            startup = await wait_ready(targets, stub_port)
            for t in targets:
                await wait_port(t.port)
            update_id = 0

            def batch(n: int) -> list[bytes]:
                nonlocal update_id
                out = []
                for i in range(n):
                    update_id += 1
                    out.append(update_bytes(update_id, FIRST_USER_ID + (update_id + i) % args.users))
                return out

            # Warm-up: every user's first /balance asks the platform and fills the cache.
            for t in targets:
                await load(
                    t.port,
                    [update_bytes(i + 1, FIRST_USER_ID + i) for i in range(args.users)],
                    args.connections,
                    t.process.pid,
                )
            for r in range(args.rounds):
                order = targets[r % len(targets) :] + targets[: r % len(targets)]
                for t in order:
                    t.rounds.append(await load(t.port, batch(args.updates), args.connections, t.process.pid))
            seen = await stats(stub_port)
        finally:
            for t in targets:
                t.process.send_signal(signal.SIGTERM)
            for t in targets:
                try:
                    t.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    t.process.kill()
            stub.terminate()
            stub.wait(timeout=10)
            redis_server.stop()
    report(args, targets, startup, seen)


def report(
    args: argparse.Namespace, targets: list[Target], startup: dict[str, float], seen: dict[str, Any]
) -> None:
    import aiogram
    import telegram

    print(
        f"machine: Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}"
    )
    print(f"versions: aiogram {aiogram.__version__}, python-telegram-bot {telegram.__version__}")
    print(
        f"run: {args.users} users bound and cached; {args.rounds} rounds of {args.updates} /balance webhook POSTs "
        f"per bot, {args.connections} keep-alive connections, bots taking turns in rotating order; medians over rounds\n"
    )
    print(
        f"{'bot':<16}{'updates/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'CPU/update':>12}{'start-up':>10}{'replies':>9}"
    )
    print("-" * 76)
    figures: dict[str, tuple[float, float]] = {}
    for t in targets:
        rate = median([r.rate for r in t.rounds])
        p50 = median([pct(r.latencies, 0.5) * 1000 for r in t.rounds])
        p99 = median([pct(r.latencies, 0.99) * 1000 for r in t.rounds])
        cpu = median([r.cpu_seconds / len(r.latencies) * 1000 for r in t.rounds])
        failed = sum(r.failed for r in t.rounds)
        token = TOKENS[t.name]
        replies = seen["balances"].get(token, 0)
        figures[t.name] = (rate, cpu)
        note = f" ({failed} not 200)" if failed else ""
        print(
            f"{t.name:<16}{rate:>11,.0f}{p50:>9.1f}{p99:>9.1f}{cpu:>10.2f}ms{startup[t.name]:>9.2f}s{replies:>9}{note}"
        )
    expected = (args.rounds * args.updates + args.users) * len(targets)
    total = sum(seen["balances"].values())
    print(f"\nbalance replies seen by the Bot API stub: {total:,} of {expected:,} (warm-up included)")

    def ratio(a: str, b: str, which: int) -> float:
        return figures[a][which] / figures[b][which]

    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    from bot.config import TelegramSettings

    default = TelegramSettings().engine
    mine, other = f"yibao-{default}", f"yibao-{'aiogram' if default == 'ptb' else 'ptb'}"
    print(f"\nratios (same run; the default engine is {default}):")
    r = ratio(mine, "bare-aiogram", 0)
    print(f"  yibao (default) / bare aiogram, updates/s:    {r:5.2f}   (target >= 0.80: {verdict(r >= 0.8)})")
    r = ratio(mine, "bare-aiogram", 1)
    print(
        f"  yibao (default) / bare aiogram, CPU/update:   {r:5.2f}   (target <= 1.25: {verdict(r <= 1.25)})"
    )
    r = ratio("yibao-ptb", "bare-ptb", 0)
    print(f"  yibao (ptb) / bare PTB, updates/s:            {r:5.2f}   (target >= 1.00: {verdict(r >= 1.0)})")
    r = ratio("yibao-aiogram", "bare-aiogram", 0)
    print(f"  yibao (aiogram) / bare aiogram, updates/s:    {r:5.2f}")
    r = ratio(mine, other, 0)
    print(
        f"  default engine / the other, updates/s:        {r:5.2f}   (the default should be the faster: {verdict(r >= 1.0)})"
    )
    r = startup[mine] / startup["bare-aiogram"]
    print(f"  start-up yibao (default) / bare aiogram:      {r:5.2f}   (target <= 2.00: {verdict(r <= 2.0)})")
    print("\nper round (updates/s):")
    for i in range(args.rounds):
        rates = "  ".join(f"{t.name} {t.rounds[i].rate:,.0f}" for t in targets)
        print(f"  round {i + 1}: {rates}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        role, *rest = sys.argv[2:]
        if role == "stub":
            run_stub(int(rest[0]))
        elif role == "bare-aiogram":
            run_bare_aiogram(int(rest[0]), rest[1], rest[2], rest[3])
        elif role == "bare-ptb":
            run_bare_ptb(int(rest[0]), rest[1], rest[2], rest[3])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and updates (about 1 minute)")
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--updates", type=int, default=3000, help="updates per bot per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--connections", type=int, default=64)
    args = p.parse_args()
    if args.quick:
        args.updates, args.rounds, args.users = 1000, 3, 200
    started = time.monotonic()
    asyncio.run(bench(args))
    print(f"\n(benchmark took {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()

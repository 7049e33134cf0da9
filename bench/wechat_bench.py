"""WeChat over real HTTP, as a user meets it: signed callbacks in, passive replies out, on loopback.

Three servers, each its own process, each behind its own port, all answering ``/balance`` for
``--users`` users bound and their balances cached:

- ``yibao run`` serving a WeChat Official Account in **plaintext mode**, and one in **safe mode**
  (every callback decrypted, every reply encrypted: AES-256-CBC, SHA-1 signatures);
- ``yibao run`` on Telegram (the PTB engine, webhook mode), the reference the other chat platform's
  figures are read against (``bench/webhook_bench.py`` measures it against the bare libraries).

The load generator in this process keeps ``--connections`` keep-alive connections busy with signed
``POST /wechat`` callbacks (a new nonce and ``MsgId`` each, a different user each time; in safe mode
encrypted as WeChat does) and, for Telegram, webhook updates; each reply is the passive XML (WeChat)
or a ``sendMessage`` to the stub (Telegram). Rounds are interleaved, the servers taking turns in a
rotating order, medians over rounds; CPU per update is the server process's user + system time.

    .venv/bin/python bench/wechat_bench.py            # about 2 minutes
    .venv/bin/python bench/wechat_bench.py --quick    # about 40 seconds

Figures, not tests: nothing here asserts; targets are printed as MET or NOT MET.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from benchkit import bind_all, free_port, yibao_command
from webhook_bench import (
    FIRST_USER_ID,
    Round,
    Target,
    load,
    median,
    pct,
    update_bytes,
    wait_port,
    yibao_env,
)

APP_ID = "wx0123456789abcdef"
APP_SECRET = "bench-secret"  # noqa: S105 - a fake app secret
TOKEN = "benchToken2026"  # noqa: S105 - a fake callback token
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
ACCOUNT = "gh_benchaccount"
PATH = "/wechat"
TELEGRAM_BENCH = str(Path(__file__).resolve().with_name("webhook_bench.py"))


def run_wechat_stub(port: int) -> None:
    """WeChat's API as far as these servers call it: a token, and ok to any message."""
    from aiohttp import web

    async def stable_token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "BENCH_" + "x" * 40, "expires_in": 7200})

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    app = web.Application()
    app.router.add_post("/cgi-bin/stable_token", stable_token)
    app.router.add_route("*", "/cgi-bin/{path:.*}", ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def openid(n: int) -> str:
    return f"oBench{n:022d}"


def _sha1(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode(), usedforsecurity=False).hexdigest()


def callback_bytes(n: int, user: int, *, safe: bool) -> bytes:
    """One text callback, signed (and encrypted) as WeChat sends it, written as an HTTP request."""
    from platforms.tencent.crypto import MessageCrypto  # the bench's own client: WeChat's published scheme

    stamp, nonce = str(int(time.time())), secrets.token_hex(8)
    inner = (
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid(user)}]]></FromUserName>"
        f"<CreateTime>{stamp}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[/balance]]></Content><MsgId>{n}</MsgId></xml>"
    ).encode()
    query = {
        "signature": _sha1(TOKEN, stamp, nonce),
        "timestamp": stamp,
        "nonce": nonce,
        "openid": openid(user),
    }
    body = inner
    if safe:
        encrypted = MessageCrypto(TOKEN, AES_KEY, APP_ID).encrypt(inner)
        query.update(encrypt_type="aes", msg_signature=_sha1(TOKEN, stamp, nonce, encrypted))
        body = f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>".encode()
    head = (
        f"POST {PATH}?{urlencode(query)} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def spawn_wechat(name: str, api: str, redis_url: str, tmp: Path, key: str) -> Target:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIBAO_")}
    env.update(
        {
            "YIBAO_WECHAT__APP_ID": APP_ID,
            "YIBAO_WECHAT__APP_SECRET": APP_SECRET,
            "YIBAO_WECHAT__TOKEN": TOKEN,
            "YIBAO_WECHAT__API_BASE_URL": api,
            "YIBAO_HTTP__LISTEN_PORT": str(port),
            "YIBAO_REDIS__URL": redis_url,
            "YIBAO_REDIS__PREFIX": "wechat-bench",
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
    if name == "wechat-safe":
        env["YIBAO_WECHAT__ENCODING_AES_KEY"] = AES_KEY
    process = subprocess.Popen([*yibao_command(), "run"], env=env, cwd=tmp, stdin=subprocess.DEVNULL)  # noqa: S603
    return Target(name, port, process, time.time())


def spawn_telegram(api: str, redis_url: str, tmp: Path, key: str) -> Target:
    port = free_port()
    env = yibao_env("yibao-ptb", "ptb", port, api, redis_url, tmp, key)
    env["YIBAO_REDIS__PREFIX"] = "wechat-bench"
    process = subprocess.Popen([*yibao_command(), "run"], env=env, cwd=tmp, stdin=subprocess.DEVNULL)  # noqa: S603
    return Target("telegram-ptb", port, process, time.time())


async def prepare(redis_url: str, tmp: Path, key: str, users: int) -> None:
    from bot.app import build_runtime
    from bot.config import Settings

    settings = Settings(
        general={"data_dir": tmp / "data-binder"},
        redis={"url": redis_url, "prefix": "wechat-bench"},
        security={"pii_key": key},
        sms={"gateway": "file", "file_path": tmp / "sms.jsonl"},
    )
    runtime = await build_runtime(settings)
    try:
        await bind_all(runtime, [openid(n) for n in range(users)], platform="wx")
        await bind_all(runtime, range(FIRST_USER_ID, FIRST_USER_ID + users))
    finally:
        await runtime.aclose()


async def bench(args: argparse.Namespace) -> None:
    from bot.crypto.pii import new_key_text
    from bot.storage.embedded_redis import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="yibao-wechat-bench-") as folder:
        tmp = Path(folder)
        redis_server = EmbeddedRedis(tmp / "redis")
        redis_server.start()
        wx_port, tg_port = free_port(), free_port()
        stubs = [
            subprocess.Popen([sys.executable, __file__, "--role", "stub", str(wx_port)]),  # noqa: S603, ASYNC220
            subprocess.Popen([sys.executable, TELEGRAM_BENCH, "--role", "stub", str(tg_port)]),  # noqa: S603, ASYNC220
        ]
        targets: list[Target] = []
        try:
            key = new_key_text()
            await prepare(redis_server.url, tmp, key, args.users)
            await wait_port(wx_port)
            await wait_port(tg_port)
            wx_api, tg_api = f"http://127.0.0.1:{wx_port}", f"http://127.0.0.1:{tg_port}"
            targets = [
                spawn_wechat("wechat-plain", wx_api, redis_server.url, tmp, key),
                spawn_wechat("wechat-safe", wx_api, redis_server.url, tmp, key),
                spawn_telegram(tg_api, redis_server.url, tmp, key),
            ]
            for t in targets:
                await wait_port(t.port, within=60)
            counter = 0

            def batch(t: Target, n: int, *, every_user: bool = False) -> list[bytes]:
                nonlocal counter
                out = []
                for i in range(n):
                    counter += 1
                    user = i if every_user else (counter + i) % args.users
                    if t.name == "telegram-ptb":
                        out.append(update_bytes(counter, FIRST_USER_ID + user))
                    else:
                        out.append(callback_bytes(counter, user, safe=t.name == "wechat-safe"))
                return out

            for t in targets:  # warm-up: every user's first /balance fills the cache
                await load(t.port, batch(t, args.users, every_user=True), args.connections, t.process.pid)
            for r in range(args.rounds):
                order = targets[r % len(targets) :] + targets[: r % len(targets)]
                for t in order:
                    requests = batch(t, args.updates)  # signed just before the round: timestamps are fresh
                    t.rounds.append(await load(t.port, requests, args.connections, t.process.pid))
        finally:
            for t in targets:
                t.process.send_signal(signal.SIGTERM)
            for t in targets:
                try:
                    t.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    t.process.kill()
            for stub in stubs:
                stub.terminate()
                stub.wait(timeout=10)
            redis_server.stop()
    report(args, targets)


def report(args: argparse.Namespace, targets: list[Target]) -> None:
    print(
        f"machine: Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}"
    )
    print(
        f"run: {args.users} users bound and cached per platform; {args.rounds} rounds of {args.updates} /balance "
        f"per server, {args.connections} keep-alive connections, rotating order; medians over rounds\n"
    )
    print(f"{'server':<16}{'updates/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'CPU/update':>12}")
    print("-" * 57)
    figures: dict[str, tuple[float, float]] = {}
    for t in targets:
        rounds: list[Round] = t.rounds
        rate = median([r.rate for r in rounds])
        p50 = median([pct(r.latencies, 0.5) * 1000 for r in rounds])
        p99 = median([pct(r.latencies, 0.99) * 1000 for r in rounds])
        cpu = median([r.cpu_seconds / len(r.latencies) * 1000 for r in rounds])
        failed = sum(r.failed for r in rounds)
        figures[t.name] = (rate, cpu)
        note = f" ({failed} not 200)" if failed else ""
        print(f"{t.name:<16}{rate:>11,.0f}{p50:>9.1f}{p99:>9.1f}{cpu:>10.2f}ms{note}")

    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    print("\nratios (same run):")
    r = figures["wechat-safe"][0] / figures["wechat-plain"][0]
    print(f"  safe mode / plaintext mode, updates/s:     {r:5.2f}   (target >= 0.85: {verdict(r >= 0.85)})")
    r = figures["wechat-safe"][1] / figures["wechat-plain"][1]
    print(f"  safe mode / plaintext mode, CPU/update:    {r:5.2f}")
    r = figures["wechat-plain"][0] / figures["telegram-ptb"][0]
    print(f"  WeChat (plaintext) / Telegram, updates/s:  {r:5.2f}   (target >= 0.80: {verdict(r >= 0.8)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", help=argparse.SUPPRESS)
    p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--updates", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--quick", action="store_true", help="fewer users, updates and rounds")
    args = p.parse_args()
    if args.role == "stub":
        run_wechat_stub(int(args.rest[0]))
        return
    if args.quick:
        args.users, args.updates, args.rounds = 500, 1000, 3
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()

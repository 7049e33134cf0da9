"""Yibao's pages over real HTTP on loopback, as a user meets them, against the chat turn they run.

One runtime in this process, on an embedded Redis (its round trips counted at the connection), the
in-process sandbox, ``--users`` users bound, each with a page session opened the way a user opens
one: ``/web`` in the chat, then its link (a 303 and the session cookie). Then, in rounds that take
turns:

- **chat**: ``/balance`` as a chat turn (``Runtime.handle``), ``--connections`` at once: the
  reference, the work the chat does for one question (the balance is cached, as after the first);
- **account page**: ``GET /web/account`` over loopback HTTP with httpx keep-alive connections, as
  many at once: the session read, three turns (``/balance``, ``/chart`` as SVG, ``/history``), the
  templates, the headers;
- **bind page**: ``GET /web/bind`` for the same (bound) users, which redirects to the account: the
  session and the frame alone, what every page pays before its own work.

Printed: each one's requests a second (median of the rounds), the pages' as a ratio of the chat
turn's, and Redis round trips per request. The load generator shares the process (and its CPU) with
the server, as it does for the chat reference, so the ratio compares like with like.

    .venv/bin/python bench/web_bench.py            # about 40 seconds
    .venv/bin/python bench/web_bench.py --quick    # about 15 seconds

Figures, not tests: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from benchkit import CountingConnection, bind_all, counting_client

from bot.app import Runtime, build_runtime
from bot.config import Settings
from bot.crypto.pii import new_key_text
from bot.http.server import HttpServer
from bot.storage.embedded_redis import EmbeddedRedis
from dialogs.models import Inbound, UserKey

USERS_AT_MOST = 30
"""The pages allow 30 link openings a minute per client address: every bench user is one."""


def settings_for(socket_path: str, tmp: Path) -> Settings:
    return Settings(
        general={"data_dir": tmp / "data"},  # type: ignore[arg-type]
        redis={"url": f"unix://{socket_path}"},  # type: ignore[arg-type]
        security={"pii_key": new_key_text()},  # type: ignore[arg-type]
        sms={"gateway": "file", "file_path": tmp / "sms.jsonl"},  # type: ignore[arg-type]
        web={"enabled": True, "public_url": "https://yibao.bench.example"},  # type: ignore[arg-type]
    )


async def open_sessions(runtime: Runtime, base: str, users: list[UserKey]) -> list[str]:
    """Each user's page session, opened as a user does: ``/web``, then the link it answers."""
    cookies = []
    async with httpx.AsyncClient(timeout=30) as http:
        for user in users:
            [reply] = await runtime.handle(Inbound(user=user, text="/web", locale="zh"))
            assert reply.web_link is not None, reply.text
            opened = await http.get(reply.web_link.replace("https://yibao.bench.example", base))
            assert opened.status_code == 303, opened.text
            cookies.append(opened.headers["set-cookie"].split(";", 1)[0])
    return cookies


async def rate(requests: int, connections: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Requests a second for ``requests`` calls of ``one(i)``, ``connections`` at once."""
    next_index = iter(range(requests))

    async def worker() -> None:
        for i in next_index:
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return requests / (time.perf_counter() - started)


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, list[float]]:
    server = EmbeddedRedis(tmp / "redis")
    server.start()
    try:
        socket_path = server.url.removeprefix("unix://")
        runtime = await build_runtime(settings_for(socket_path, tmp), redis=counting_client(socket_path))
        http_server = HttpServer(host="127.0.0.1", port=0)
        http_server.mount(runtime.web_pages().routes())
        await http_server.start()
        base = f"http://127.0.0.1:{http_server.port}"
        try:
            ids = [f"bench{i}" for i in range(args.users)]
            await bind_all(runtime, ids, platform="console")
            users = [UserKey(f"console:{i}") for i in ids]
            cookies = await open_sessions(runtime, base, users)
            limits = httpx.Limits(
                max_connections=args.connections, max_keepalive_connections=args.connections
            )
            async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:

                async def chat(i: int) -> None:
                    await runtime.handle(Inbound(user=users[i % len(users)], text="/balance", locale="zh"))

                async def account(i: int) -> None:
                    r = await http.get("/web/account", headers={"cookie": cookies[i % len(cookies)]})
                    if r.status_code != 200:
                        raise AssertionError(f"the account page answered {r.status_code}")

                async def frame(i: int) -> None:
                    r = await http.get("/web/bind", headers={"cookie": cookies[i % len(cookies)]})
                    if r.status_code not in (200, 303):
                        raise AssertionError(f"the bind page answered {r.status_code}")

                kinds: dict[str, Callable[[int], Awaitable[None]]] = {
                    "chat": chat,
                    "account": account,
                    "frame": frame,
                }
                for one in kinds.values():  # warm up: caches, connections, templates
                    await rate(args.requests // 5, args.connections, one)
                out: dict[str, list[float]] = {name: [] for name in kinds}
                trips: dict[str, list[float]] = {name: [] for name in kinds}
                names = list(kinds)
                for r in range(args.rounds):
                    for name in names[r % len(names) :] + names[: r % len(names)]:  # rotating order
                        before = CountingConnection.stats.snapshot()[0]
                        out[name].append(await rate(args.requests, args.connections, kinds[name]))
                        trips[name].append((CountingConnection.stats.snapshot()[0] - before) / args.requests)
                for name in names:
                    out[f"{name}_trips"] = trips[name]
                return out
        finally:
            await http_server.stop()
            await runtime.aclose()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    parser.add_argument("--users", type=int, default=USERS_AT_MOST)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    args.users = max(1, min(args.users, USERS_AT_MOST))
    args.rounds, args.requests = (3, 300) if args.quick else (5, 1000)
    with tempfile.TemporaryDirectory(prefix="yibao-web-bench-") as folder:
        figures = asyncio.run(bench(args, Path(folder)))
    med = {name: statistics.median(values) for name, values in figures.items()}
    print(f"Yibao pages benchmark — Python {platform.python_version()}, {sys.platform}")
    print(
        f"{args.users} users bound, each with a page session; {args.connections} at once; "
        f"{args.rounds} rounds of {args.requests}, medians"
    )
    print(
        f"  chat /balance turn (reference):  {med['chat']:8,.0f}/s   {med['chat_trips']:.1f} Redis round trips each"
    )
    print(
        f"  GET /web/account over HTTP:       {med['account']:8,.0f}/s   {med['account_trips']:.1f} Redis round trips each"
        f"   ({med['account'] / med['chat']:.2f}× the chat turn; it runs three turns)"
    )
    print(
        f"  GET /web/bind (session + frame):  {med['frame']:8,.0f}/s   {med['frame_trips']:.1f} Redis round trips each"
        f"   ({med['frame'] / med['chat']:.2f}× the chat turn)"
    )


if __name__ == "__main__":
    main()

"""The process's one HTTP server (``bot.http.server``): mounted routes beside ``/healthz``, over real
HTTP on loopback; a path claimed twice, a port taken, and a stop that answers what is in flight."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bot.http.server import HttpServer, RouteConflict


async def _hello(request: Request) -> Response:
    return PlainTextResponse("hello " + request.url.path)


async def test_routes_of_two_platforms_and_health_on_one_port() -> None:
    server = HttpServer(host="127.0.0.1", port=0)
    server.mount([Route("/telegram", _hello, methods=["POST"])])
    server.mount([Route("/wechat", _hello, methods=["GET", "POST"])])
    await server.start()
    try:
        assert server.port != 0
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            assert (await client.post("/telegram")).text == "hello /telegram"
            assert (await client.get("/wechat")).text == "hello /wechat"
            assert (await client.get("/telegram")).status_code == 405
            assert (await client.get("/nowhere")).status_code == 404
    finally:
        await server.stop()
    await server.stop()  # a second stop is harmless


def test_a_path_claimed_twice_is_refused() -> None:
    server = HttpServer(host="127.0.0.1", port=0)
    server.mount([Route("/telegram", _hello)])
    with pytest.raises(RouteConflict, match="/telegram"):
        server.mount([Route("/telegram", _hello)])
    with pytest.raises(RouteConflict, match="/healthz"):
        server.mount([Route("/healthz", _hello)])


async def test_a_port_taken_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(host="127.0.0.1", port=port)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            await server.start()


async def test_stop_answers_the_request_in_flight_then_refuses_new_ones() -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: Request) -> Response:
        arrived.set()
        await release.wait()
        return PlainTextResponse("finished")

    server = HttpServer(host="127.0.0.1", port=0)
    server.mount([Route("/slow", slow, methods=["POST"])])
    await server.start()
    url = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=url) as client:
        in_flight = asyncio.create_task(client.post("/slow"))
        await asyncio.wait_for(arrived.wait(), 5)
        stopping = asyncio.create_task(server.stop())
        await asyncio.sleep(0.2)
        assert not stopping.done()  # waiting for the request it took
        release.set()
        response = await asyncio.wait_for(in_flight, 5)
        await asyncio.wait_for(stopping, 5)
    assert response.status_code == 200
    assert response.text == "finished"
    async with httpx.AsyncClient(base_url=url) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/healthz")

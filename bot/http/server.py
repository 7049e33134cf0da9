"""One HTTP server a process, whatever platforms it serves.

Each platform that needs inbound HTTP hands over Starlette routes (``platforms.telegram.webhook``
gives the webhook's); they are served together, with ``GET /healthz`` beside them, on one
``listen_host:listen_port``. A route path may be claimed once: two platforms asking for one path is a
start-up error, not a silent shadowing.

Signals are the process's to handle, not uvicorn's: on SIGTERM the command stops taking new work and
calls ``stop``, which closes the listening socket and answers the requests in flight before it
returns (an update handled inside a request is finished, not cut off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterable, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"


class RouteConflict(ValueError):
    """Two routes claim one path (a platform's path set to another's, or to ``/healthz``)."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Signals are the process's to handle (it stops taking work, then calls ``stop``)."""
        yield


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here rather than by uvicorn, whose answer to a failed bind is
    ``sys.exit`` from inside the event loop."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as e:
        raise OSError(f"cannot listen on {host}:{port}: {e}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _path(route: BaseRoute) -> str:
    return str(getattr(route, "path", ""))


class HttpServer:
    """Serve ``mount``-ed routes and ``/healthz`` from ``start`` until ``stop``."""

    def __init__(self, *, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._routes: list[BaseRoute] = [Route(HEALTH_PATH, _health, methods=["GET"], name="health")]
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(_path(r) for r in self._routes)

    def mount(self, routes: Iterable[BaseRoute]) -> None:
        """Add a platform's routes; before ``start``. Raises ``RouteConflict`` for a path taken."""
        if self._server is not None:
            raise RuntimeError("routes are mounted before the server starts")
        for route in routes:
            if _path(route) in self.paths:
                raise RouteConflict(f"two routes claim the path {_path(route)!r}")
            self._routes.append(route)

    async def start(self) -> None:
        """Listen; returns once requests are taken. Raises ``OSError`` saying why it cannot (the
        port is taken, the host is not this machine's)."""
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]  # the one given, when 0 asked for any free port (tests)
        app = Starlette(routes=self._routes)
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = server = _Server(config)
        self._task = task = asyncio.create_task(server.serve(sockets=[sock]), name="http-server")
        while not server.started:
            if task.done():
                task.result()
                raise OSError(f"the HTTP server on {self.host}:{self.port} stopped while starting")
            await asyncio.sleep(0.01)
        log.info("HTTP on %s:%s serving %s", self.host, self.port, ", ".join(self.paths))

    async def stop(self) -> None:
        """Stop accepting; the requests in flight are answered first. Safe to call twice."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task

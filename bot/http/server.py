"""One HTTP server a process, whatever platforms it serves.

Each platform that needs inbound HTTP hands over Starlette routes (``platforms.telegram.webhook``
gives the webhook's); they are served together, with ``GET /healthz`` (the process is alive),
``GET /readyz`` (it can do its work) and ``GET /metrics`` (Prometheus) beside them, on one
``listen_host:listen_port``.

Readiness is a registry: each part that must work for the process to be useful adds a named check
(``add_check``): Redis answers, each chat platform's token was accepted, an insurance platform's
breaker is closed. ``/readyz`` runs them all (each within ``check_timeout`` seconds) and answers 200
when every one passes, else 503, its JSON body naming each check and why it failed. A route path may be claimed once: two platforms asking for one path is a
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
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot import metrics

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"


@dataclass(frozen=True, slots=True)
class Readiness:
    ok: bool
    detail: str = ""
    """Why not (or what was seen), for the operator: never a secret, never a user."""


ReadinessCheck = Callable[[], Awaitable[Readiness]]
"""One part's answer to "can you do your work now?"."""


async def run_checks(checks: dict[str, ReadinessCheck], limit: float) -> tuple[bool, dict[str, object]]:
    """Every check at once, each within ``limit`` seconds: whether all passed, and the JSON body."""

    async def one(check: ReadinessCheck) -> Readiness:
        try:
            return await asyncio.wait_for(check(), limit)
        except TimeoutError:
            return Readiness(False, f"no answer within {limit:g} s")
        except Exception as e:
            return Readiness(False, type(e).__name__)

    results = await asyncio.gather(*(one(c) for c in checks.values()))
    parts: dict[str, object] = {
        name: {"ok": r.ok, **({"detail": r.detail} if r.detail else {})}
        for name, r in zip(checks, results, strict=True)
    }
    ready = all(r.ok for r in results)
    return ready, {"status": "ready" if ready else "not ready", "checks": parts}


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


async def _metrics(request: Request) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


def _path(route: BaseRoute) -> str:
    return str(getattr(route, "path", ""))


class HttpServer:
    """Serve ``mount``-ed routes, ``/healthz``, ``/readyz`` and ``/metrics`` from ``start`` until ``stop``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        check_timeout: float = 2.0,
        trusted_proxies: Sequence[str] = ("127.0.0.1",),
    ) -> None:
        self.host = host
        self.port = port
        self.trusted_proxies = list(trusted_proxies)
        """Peers whose ``X-Forwarded-For`` names the client (``http.trusted_proxies``)."""
        self.check_timeout = check_timeout
        self.checks: dict[str, ReadinessCheck] = {}
        self.before_scrape: list[Callable[[], Awaitable[None]]] = []
        """Run before ``/metrics`` answers (gauges read at scrape time: the outbox's depth)."""
        self._routes: list[BaseRoute] = [
            Route(HEALTH_PATH, _health, methods=["GET"], name="health"),
            Route(READY_PATH, self._ready, methods=["GET"], name="ready"),
            Route(METRICS_PATH, self._metrics, methods=["GET"], name="metrics"),
        ]
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(_path(r) for r in self._routes)

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """Add a part to ``/readyz`` (``redis``, ``telegram``, ``wechat``, ``insurance``); a name once."""
        if name in self.checks:
            raise ValueError(f"two readiness checks named {name!r}")
        self.checks[name] = check

    async def _ready(self, request: Request) -> Response:
        ready, body = await run_checks(self.checks, self.check_timeout)
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _metrics(self, request: Request) -> Response:
        for refresh in self.before_scrape:
            try:
                await asyncio.wait_for(refresh(), self.check_timeout)
            except Exception as e:  # a gauge a little old is better than no metrics at all
                log.debug("a metrics refresh failed: %s", type(e).__name__)
        return await _metrics(request)

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
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            proxy_headers=True,
            forwarded_allow_ips=self.trusted_proxies,
        )
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

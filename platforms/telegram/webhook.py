"""The webhook endpoint: Telegram POSTs updates here, any number of Yibao processes behind one address.

A request must carry the secret given to ``setWebhook`` in ``X-Telegram-Bot-Api-Secret-Token``
(compared in constant time); anything else gets 403 and is not looked at. An update is handled
before the request is answered, so a process told to stop finishes the requests it took; one that
cannot be handled is logged (its type, not its text) and answered 200, so Telegram does not send it
again and again. ``GET /healthz`` is for the load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from platforms.telegram.adapter import TelegramAdapter

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name, not a secret
_MAX_BODY = 1 << 20


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Signals are the runtime's to handle (it stops taking updates, then finishes them)."""
        yield


class WebhookServer:
    def __init__(self, adapter: TelegramAdapter, *, host: str, port: int, path: str, secret: str) -> None:
        self.adapter = adapter
        self.secret = secret.encode()
        self.path = path
        routes = [
            Route(path, self._update, methods=["POST"]),
            Route("/healthz", self._health, methods=["GET"]),
        ]
        app = Starlette(routes=routes)
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="telegram-webhook")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start (the port is taken...)
                raise RuntimeError("the webhook server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting; requests in flight are answered first."""
        self._server.should_exit = True
        if self._task is not None:
            await self._task

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _update(self, request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self.secret):
            log.warning("a webhook request without the right secret token was refused")
            return JSONResponse({"ok": False}, status_code=403)
        body = await request.body()
        if len(body) > _MAX_BODY:
            return JSONResponse({"ok": False}, status_code=413)
        try:
            data = json.loads(body)
        except ValueError:
            return JSONResponse({"ok": False}, status_code=400)
        try:
            await self.adapter.process(data)
        except Exception as e:
            # Answered 200 all the same: Telegram would otherwise send this update again, forever.
            # The error's text may quote the update, so only its type is logged.
            update_id = data.get("update_id") if isinstance(data, dict) else None
            log.error("skipped update %s that could not be handled: %s", update_id, type(e).__name__)
        return JSONResponse({"ok": True})

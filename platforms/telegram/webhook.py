"""The webhook endpoint: Telegram POSTs updates here, any number of Yibao processes behind one address.

``webhook_routes`` gives the route that the process's one HTTP server (``bot.http``) mounts beside
the other platforms' and ``/healthz``. A request must carry the secret given to ``setWebhook`` in
``X-Telegram-Bot-Api-Secret-Token`` (compared in constant time); anything else gets 403 and is not
looked at. An update is handled before the request is answered, so a process told to stop finishes
the requests it took; one that cannot be handled is logged (its type, not its text) and answered
200, so Telegram does not send it again and again.
"""

from __future__ import annotations

import hmac
import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from platforms.limits import TooLarge, read_body
from platforms.telegram.options import Engine

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name, not a secret
_MAX_BODY = 1 << 20


class _Webhook:
    def __init__(self, engine: Engine, secret: str) -> None:
        self.engine = engine
        self.secret = secret.encode()

    async def handle(self, request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self.secret):
            log.warning("a webhook request without the right secret token was refused")
            return JSONResponse({"ok": False}, status_code=403)
        try:
            body = await read_body(request, _MAX_BODY)
        except TooLarge:
            return JSONResponse({"ok": False}, status_code=413)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
            return JSONResponse({"ok": False}, status_code=400)
        if not isinstance(data, dict):
            return JSONResponse({"ok": False}, status_code=400)
        try:
            await self.engine.feed(data)
        except Exception as e:
            # Answered 200 all the same: Telegram would otherwise send this update again, forever.
            # The error's text may quote the update, so only its type is logged.
            update_id = data.get("update_id")
            log.error("skipped update %s that could not be handled: %s", update_id, type(e).__name__)
        return JSONResponse({"ok": True})


def webhook_routes(engine: Engine, *, path: str, secret: str) -> list[BaseRoute]:
    """The webhook's route on ``path`` (``telegram.webhook_path``), for the process's HTTP server."""
    return [Route(path, _Webhook(engine, secret).handle, methods=["POST"], name="telegram-webhook")]

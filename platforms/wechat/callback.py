"""The official account's callback on the process's HTTP server (``wechat.callback_path``).

- ``GET``: WeChat's URL check when the operator saves the server address in the admin console:
  ``echostr`` is answered only if ``signature`` matches (403 otherwise).
- ``POST``: a message or an event, in plaintext mode or safe mode (``encoding_aes_key`` set: the
  message must be encrypted, and the passive reply is encrypted too). A request that is not WeChat's
  (signature, timestamp, replayed nonce) gets 403 and nothing of it is processed; a signed one whose
  body is not a message we can read (an XML bomb, malformed, too large) is answered ``success``,
  logged by kind, and dropped: WeChat would only send it again.
- The body is read up to ``MAX_BODY`` and no further.
"""

from __future__ import annotations

import logging
import time

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from platforms.limits import TooLarge, read_body
from platforms.tencent.callback import CallbackGuard, Refused
from platforms.tencent.xmlmsg import MAX_BODY, BadXml
from platforms.wechat.core import WechatCore

log = logging.getLogger(__name__)


def _success() -> Response:
    return PlainTextResponse("success")


class _Callback:
    def __init__(self, core: WechatCore, guard: CallbackGuard) -> None:
        self.core = core
        self.guard = guard

    async def verify(self, request: Request) -> Response:
        query = dict(request.query_params)
        try:
            await self.guard.verify_plain(query)
        except Refused as e:
            log.warning("a WeChat URL check was refused: %s", e.reason)
            return PlainTextResponse("forbidden", status_code=403)
        return PlainTextResponse(query.get("echostr", ""))

    async def message(self, request: Request) -> Response:
        received = time.monotonic()
        query = dict(request.query_params)
        try:
            body = await read_body(request, MAX_BODY)
        except TooLarge:
            log.warning("a WeChat callback over %d bytes was answered success and dropped", MAX_BODY)
            return _success()
        try:
            msg = await self.guard.open_message(query, body)
        except Refused as e:
            log.warning("a WeChat callback was refused (403): %s", e.reason)
            return PlainTextResponse("forbidden", status_code=403)
        except BadXml as e:
            log.warning("a WeChat callback that is not a readable message was answered success: %s", e.kind)
            return _success()
        try:
            answer = await self.core.on_message(msg, received=received)
        except Exception as e:  # answered all the same: WeChat would only send it again
            log.error("a WeChat callback could not be handled: %s", type(e).__name__)
            return _success()
        background = BackgroundTask(answer.later) if answer.later is not None else None
        if answer.passive is None:
            return PlainTextResponse("success", background=background)
        sealed = self.guard.seal(answer.passive, nonce=query.get("nonce", ""))
        return Response(sealed, media_type="application/xml", background=background)


def callback_routes(core: WechatCore, guard: CallbackGuard, *, path: str) -> list[BaseRoute]:
    handler = _Callback(core, guard)

    async def endpoint(request: Request) -> Response:
        if request.method == "GET":
            return await handler.verify(request)
        return await handler.message(request)

    return [Route(path, endpoint, methods=["GET", "POST"], name="wechat-callback")]

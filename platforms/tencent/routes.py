"""A WeChat or WeCom callback on the process's HTTP server (``wechat.callback_path``,
``wecom.callback_path``).

- ``GET``: the URL check when the operator saves the server address in the admin console. WeChat
  signs it with ``signature`` and wants ``echostr`` back as it is; WeCom signs an encrypted
  ``echostr`` with ``msg_signature`` and wants it decrypted. Anything else: 403.
- ``POST``: a message or an event, in plaintext mode or safe mode (WeChat with ``encoding_aes_key``
  set, WeCom always: the message must be encrypted, and a passive reply is encrypted too). A request
  that is not the platform's (signature, timestamp, replayed nonce) gets 403 and nothing of it is
  processed; a signed one whose body is not a message we can read (an XML bomb, malformed, too
  large) is answered ``success``, logged by kind, and dropped: the platform would only send it again.
- The body is read up to ``MAX_BODY`` and no further. The answer's ``later`` sends run after the
  response is out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from platforms.limits import TooLarge, read_body
from platforms.tencent.callback import CallbackGuard, Refused
from platforms.tencent.xmlmsg import MAX_BODY, BadXml, XmlMessage

log = logging.getLogger(__name__)


class Answer(Protocol):
    @property
    def passive(self) -> bytes | None: ...
    @property
    def later(self) -> Callable[[], Awaitable[None]] | None: ...


class Core(Protocol):
    async def on_message(self, msg: XmlMessage, *, received: float | None = None) -> Answer: ...


class _Callback:
    def __init__(self, core: Core, guard: CallbackGuard, platform: str, encrypted_echo: bool) -> None:
        self.core = core
        self.guard = guard
        self.platform = platform
        self.encrypted_echo = encrypted_echo
        self.acknowledgement = "" if encrypted_echo else "success"
        """What "received, nothing to say" is: WeChat documents ``success``, WeCom an empty body."""

    def ack(self) -> Response:
        return PlainTextResponse(self.acknowledgement)

    async def verify(self, request: Request) -> Response:
        query = dict(request.query_params)
        try:
            if self.encrypted_echo:
                echo = (await self.guard.open_encrypted(query, query.get("echostr", ""))).decode()
            else:
                await self.guard.verify_plain(query)
                echo = query.get("echostr", "")
        except (Refused, UnicodeDecodeError) as e:
            log.warning("a %s URL check was refused: %s", self.platform, getattr(e, "reason", "not text"))
            return PlainTextResponse("forbidden", status_code=403)
        return PlainTextResponse(echo)

    async def message(self, request: Request) -> Response:
        received = time.monotonic()
        query = dict(request.query_params)
        try:
            body = await read_body(request, MAX_BODY)
        except TooLarge:
            log.warning(
                "a %s callback over %d bytes was answered success and dropped", self.platform, MAX_BODY
            )
            return self.ack()
        try:
            msg = await self.guard.open_message(query, body)
        except Refused as e:
            log.warning("a %s callback was refused (403): %s", self.platform, e.reason)
            return PlainTextResponse("forbidden", status_code=403)
        except BadXml as e:
            log.warning(
                "a %s callback that is not a readable message was answered success: %s", self.platform, e.kind
            )
            return self.ack()
        try:
            answer = await self.core.on_message(msg, received=received)
        except Exception as e:  # answered all the same: WeChat would only send it again
            log.error("a %s callback could not be handled: %s", self.platform, type(e).__name__)
            return self.ack()
        background = BackgroundTask(answer.later) if answer.later is not None else None
        if answer.passive is None:
            return PlainTextResponse(self.acknowledgement, background=background)
        sealed = self.guard.seal(answer.passive, nonce=query.get("nonce", ""))
        return Response(sealed, media_type="application/xml", background=background)


def callback_routes(
    core: Core, guard: CallbackGuard, *, path: str, platform: str = "WeChat", encrypted_echo: bool = False
) -> list[BaseRoute]:
    handler = _Callback(core, guard, platform, encrypted_echo)

    async def endpoint(request: Request) -> Response:
        if request.method == "GET":
            return await handler.verify(request)
        return await handler.message(request)

    return [Route(path, endpoint, methods=["GET", "POST"], name=f"{platform.lower()}-callback")]

"""PTB's networking on aiohttp: a ``telegram.request.BaseRequest`` for the PTB engine.

PTB's own ``HTTPXRequest`` (httpx, httpcore, anyio) was 37-40 % of ``yibao run``'s time per update
under webhook load; aiohttp, already here for the aiogram engine, does the same requests for a
fraction of it (``bench/webhook_bench.py``). PTB documents ``BaseRequest`` as the way to bring one's
own networking backend; this one sends what ``HTTPXRequest`` sends (the parameters as a form, files
as multipart) and raises what it raises: ``TimedOut`` for a timeout (the request may have arrived),
``NetworkError`` for anything else that failed on the way.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

_CONNECT_TIMEOUT = 5.0


class AiohttpRequest(BaseRequest):
    def __init__(self, *, connection_pool_size: int = 256, read_timeout: float = 5.0) -> None:
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._pool_size)
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": self.USER_AGENT}
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        read = self._read_timeout if read_timeout is BaseRequest.DEFAULT_NONE else read_timeout
        connect = _CONNECT_TIMEOUT if connect_timeout is BaseRequest.DEFAULT_NONE else connect_timeout
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        data: aiohttp.FormData | dict[str, Any] | None = None
        if request_data is not None:
            params = {k: str(v) for k, v in request_data.json_parameters.items()}
            if request_data.contains_files:
                form = aiohttp.FormData()
                for name, value in params.items():
                    form.add_field(name, value)
                for name, (filename, content, mimetype) in request_data.multipart_data.items():
                    form.add_field(name, content, filename=filename, content_type=mimetype)
                data = form
            else:
                data = params
        try:
            async with self._session.request(method, url, data=data, timeout=timeout) as response:
                return response.status, await response.read()
        except TimeoutError as e:
            raise TimedOut from e
        except aiohttp.ClientError as e:
            raise NetworkError(f"aiohttp.{type(e).__name__}: {e}") from e

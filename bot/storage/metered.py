"""Redis round trips and errors into ``bot.metrics``, counted where every request passes: the connection.

``meter(client)`` swaps the client's connection class for a subclass that counts each request
written (``send_packed_command``: one command, or a whole pipeline, is one round trip) and each one
that fails, by error class. Connections are made lazily, so it is done before the first command.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from bot import metrics


def _metered(base: type[Any]) -> type[Any]:
    async def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> None:
        metrics.REDIS_ROUND_TRIPS.inc()
        try:
            await base.send_packed_command(self, *args, **kwargs)
        except Exception as e:
            metrics.REDIS_ERRORS.labels(type(e).__name__).inc()
            raise

    async def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await base.read_response(self, *args, **kwargs)
        except Exception as e:
            metrics.REDIS_ERRORS.labels(type(e).__name__).inc()
            raise

    return type(
        f"Metered{base.__name__}",
        (base,),
        {"send_packed_command": send_packed_command, "read_response": read_response, "_yibao_metered": True},
    )


def meter(client: Redis) -> Redis:
    pool = client.connection_pool
    if not getattr(pool.connection_class, "_yibao_metered", False):
        pool.connection_class = _metered(pool.connection_class)
    return client

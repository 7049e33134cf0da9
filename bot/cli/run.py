"""``yibao run``: the bot on Telegram (``telegram.engine``: aiogram or python-telegram-bot), polling or
behind a webhook (a route on the process's one HTTP server, ``bot.http``, at ``[http]``
``listen_host:listen_port``), with the alert work beside it, in one process; ``yibao worker``: the
alert work alone (checks, and sending on Telegram).

SIGTERM or SIGINT: stop taking updates, finish the ones in flight (and the alert work in hand),
close Redis and the platforms' connections, return (exit 0).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from bot.app import StartupError, build_runtime
from bot.config import Settings, read_secret
from bot.http.server import HttpServer, Readiness
from dialogs.ports import Outlet
from platforms.telegram.core import TelegramCore, TelegramStartError
from platforms.telegram.engines import build_engine
from platforms.telegram.options import Engine, TelegramOptions
from platforms.telegram.webhook import webhook_routes

log = logging.getLogger(__name__)


def telegram_options(settings: Settings, *, required: bool = True) -> TelegramOptions | None:
    tg = settings.telegram
    token = read_secret(tg.token, tg.token_file)
    if token is None:
        if not required:
            return None
        raise StartupError(
            "yibao run needs telegram.token (or telegram.token_file, or YIBAO_TELEGRAM__TOKEN)"
        )
    return TelegramOptions(
        token=token.get_secret_value(),
        api_base_url=tg.api_base_url,
        global_rate=tg.global_rate,
        per_chat_rate=tg.per_chat_rate,
        max_retries=tg.max_retries,
        concurrent_updates=tg.concurrent_updates,
        webhook=tg.mode == "webhook",
    )


def telegram_check(core: TelegramCore) -> Callable[[], Awaitable[Readiness]]:
    """``/readyz``'s ``telegram`` part: the token was accepted (``getMe`` answered at start)."""

    async def check() -> Readiness:
        return Readiness(True) if core.token_ok else Readiness(False, "the token was not accepted yet")

    return check


def http_server(settings: Settings) -> HttpServer:
    return HttpServer(host=settings.http.listen_host, port=settings.http.listen_port)


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT arrive)."""
    started = time.monotonic()
    options = telegram_options(settings)
    assert options is not None
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = await build_runtime(settings, stop=stop)
    tg = settings.telegram
    core = runtime.telegram_core()
    engine: Engine | None = None
    http: HttpServer | None = None
    alerts: asyncio.Task[None] | None = None
    try:
        engine = build_engine(tg.engine, core, options)
        await engine.initialize()
        try:
            await core.set_commands()
        except Exception as e:  # the token worked, so Telegram is there: say what failed, not a traceback
            raise StartupError(f"Telegram: setMyCommands failed ({type(e).__name__})") from None
        await engine.start()
        if tg.mode == "webhook" or settings.http.always:
            http = http_server(settings)
            runtime.observe(http)
            http.add_check("telegram", telegram_check(core))
        if tg.mode == "polling":
            await engine.start_polling()
            if http is not None:
                await http.start()
        else:
            secret = read_secret(tg.webhook_secret, tg.webhook_secret_file)
            assert secret is not None  # the settings model requires it
            assert tg.webhook_url is not None
            assert http is not None
            http.mount(webhook_routes(engine, path=tg.webhook_path, secret=secret.get_secret_value()))
            await http.start()
            await engine.register_webhook(tg.webhook_url, secret.get_secret_value())
        if settings.alerts.enabled:
            alerts = asyncio.create_task(runtime.alert_worker({core.platform: core}).run(stop))
        log.info(
            "serving Telegram by %s on %s, %.2f s after start",
            tg.mode,
            engine.name,
            time.monotonic() - started,
        )
        await stop.wait()
        log.info("stopping: no new updates; finishing the ones in flight")
    except TelegramStartError as e:
        raise StartupError(str(e)) from None
    finally:
        stop.set()
        if alerts is not None:
            await alerts
        if http is not None:
            await http.stop()
        if engine is not None:
            await engine.stop()
        await runtime.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped")


async def _no_sms(masked_to: str, text: str) -> None:
    """The worker binds nobody, so it never sends an SMS code (and needs no SMS gateway)."""
    raise RuntimeError("yibao worker sends no SMS codes")


async def work(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """``yibao worker``: alert checks, and the Telegram outbox when a token is configured."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    options = telegram_options(settings, required=False)
    runtime = await build_runtime(settings, show_sms=_no_sms, stop=stop)
    engine: Engine | None = None
    http: HttpServer | None = None
    try:
        outlets: dict[str, Outlet] = {}
        if settings.http.always:
            http = http_server(settings)
            runtime.observe(http)
        if options is None:
            log.warning("no telegram.token: checking only; alerts for Telegram users wait in the outbox")
        else:
            core = runtime.telegram_core()
            # Sends only: no updates are taken here.
            engine = build_engine(settings.telegram.engine, core, dataclasses.replace(options, webhook=True))
            await engine.initialize()
            outlets[core.platform] = core
            if http is not None:
                http.add_check("telegram", telegram_check(core))
        if http is not None:
            await http.start()
        log.info("alert worker started")
        await runtime.alert_worker(outlets).run(stop)
    except TelegramStartError as e:
        raise StartupError(str(e)) from None
    finally:
        if http is not None:
            await http.stop()
        if engine is not None:
            await engine.close()
        await runtime.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped")

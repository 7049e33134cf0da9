"""Mount Yibao into an existing Telegram bot, on aiogram or python-telegram-bot.

    yibao = await YibaoOnTelegram.open("yibao.toml")      # or a Settings object, or None: as `yibao`
    dp.include_router(yibao.aiogram_router(bot))          # aiogram: a fresh Router each call
    yibao.add_to_ptb(application, group=-1)               # PTB: handlers in a group before the host's
    await yibao.run_alerts(stop)                          # optional: or leave alerts to `yibao worker`
    await yibao.aclose()

Yibao answers its own commands (``/balance``, ``/bind``, ``/alert``…) and buttons, and every
message of a user who is in one of its flows (binding, confirming ``/unbind``, an alert amount);
everything else — the host's ``/start``, ``/help``, its own commands, FSM and free text — goes on
to the host's handlers. Replies and alerts go out through the host's bot. Nothing of Yibao's
settings ``[telegram]`` section is used but ``concurrent_updates``: the host owns the token,
polling or webhook, and its rate limiting (Yibao's alerts are still paced by ``alerts.send_rate``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.app import Runtime, build_runtime
from bot.config import Settings, load_settings
from bot.http.server import HttpServer
from dialogs.models import Inbound
from platforms import web
from platforms.telegram.core import user_key

if TYPE_CHECKING:  # only the host's library is imported, when it asks for it
    from aiogram import Bot, Router
    from telegram.ext import Application


class YibaoOnTelegram:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.core = runtime.telegram_core()
        # What reaches a user unprompted besides alerts (a face check that passed, what a page did)
        # goes through the host's bot too.
        runtime.followups.outlets[self.core.platform] = self.core

    @classmethod
    async def open(cls, config: Settings | str | Path | None = None) -> YibaoOnTelegram:
        """Build Yibao from ``config``: a ``Settings``, a config file, or None for the file ``yibao``
        itself would read (``$YIBAO_CONFIG``, ``./config.toml``, the defaults). Raises
        ``bot.config.ConfigError`` naming each bad key."""
        settings = config if isinstance(config, Settings) else load_settings(config)[0]
        return cls(await build_runtime(settings))

    async def claims(self, user_id: int, text: str) -> bool:
        """Is this Telegram user's message (or button) Yibao's to answer?"""
        return await self.runtime.conversation.claims(Inbound(user=user_key(user_id), text=text))

    def aiogram_router(self, bot: Bot) -> Router:
        """A fresh ``Router`` for ``dp.include_router``, answering through ``bot``. Include it before
        the host's catch-all handlers, as with any router."""
        from platforms.telegram.aiogram_engine import yibao_router

        return yibao_router(bot, self.core, self.claims)

    def add_to_ptb(self, application: Application[Any, Any, Any, Any, Any, Any], *, group: int = -1) -> None:
        """Add Yibao's handlers to ``application`` in handler ``group`` (one that runs before the
        host's, which are in group 0 unless they chose another)."""
        from platforms.telegram.ptb_engine import add_yibao_handlers

        add_yibao_handlers(application, self.core, self.claims, group=group)

    async def set_commands(self) -> None:
        """Replace the bot's command menu with Yibao's, in Chinese and English (optional: a host with
        commands of its own keeps its menu and adds Yibao's there)."""
        await self.core.set_commands()

    @property
    def pages_enabled(self) -> bool:
        """``[web] enabled``: ``/web`` is Yibao's, and ``serve_pages`` has pages to serve."""
        return self.runtime.settings.web.enabled

    async def set_menu_button(self) -> bool:
        """The chat's menu button opens Yibao's Mini App (``<public_url>/web/tg``), when ``[web]`` is
        on with an https ``public_url``; False (nothing set) otherwise. Optional, like
        ``set_commands``: a host with a menu button of its own keeps it (``/web`` still works)."""
        w = self.runtime.settings.web
        if not w.enabled or w.public_url is None:
            return False
        return await self.core.set_menu_button(web.url(w.public_url, web.TELEGRAM_ENTRY))

    async def serve_pages(self, stop: asyncio.Event) -> None:
        """Yibao's pages (``[web] enabled``) on the ``[http]`` server (``listen_host``:``listen_port``,
        with ``/healthz``, ``/readyz`` and ``/metrics`` beside them) until ``stop``; put it behind
        your TLS proxy at ``[web] public_url``. What a page does is told in the chat through the
        host's bot."""
        settings = self.runtime.settings
        server = HttpServer(
            host=settings.http.listen_host,
            port=settings.http.listen_port,
            trusted_proxies=settings.http.trusted_proxies,
        )
        self.runtime.observe(server)
        server.mount(self.runtime.web_pages().routes())
        await server.start()
        try:
            await stop.wait()
        finally:
            await server.stop()

    async def run_alerts(self, stop: asyncio.Event) -> None:
        """The alert checks and sends for Telegram users, through the host's bot, until ``stop``."""
        await self.runtime.alert_worker({self.core.platform: self.core}).run(stop)

    async def aclose(self) -> None:
        """Finish Yibao's updates in flight, then close Redis and the insurance platforms' clients."""
        await self.core.sequencer.drained()
        await self.runtime.aclose()

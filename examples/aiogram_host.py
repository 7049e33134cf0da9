"""An aiogram 3 bot of the operator's own, with a /ping and a free-text echo, and Yibao mounted in it.

    BOT_TOKEN=123:abc YIBAO_CONFIG=yibao.toml .venv/bin/python examples/aiogram_host.py

``BOT_API_BASE_URL`` points the bot at another Bot API server (a local telegram-bot-api, or the test
emulator). Yibao's own settings come from ``YIBAO_CONFIG`` (or ``./config.toml``, or the defaults);
its ``[telegram]`` token is not used: the host's bot answers. SIGTERM or Ctrl-C stops it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.filters import Command
from aiogram.types import Message

from bot.hosting.telegram import YibaoOnTelegram


async def main() -> None:
    logging.basicConfig(level=logging.INFO)
    api = TelegramAPIServer.from_base(os.environ.get("BOT_API_BASE_URL", "https://api.telegram.org"))
    bot = Bot(os.environ["BOT_TOKEN"], session=AiohttpSession(api=api))
    dp = Dispatcher()

    host = Router(name="host")  # the operator's own handlers

    @host.message(Command("ping"))
    async def ping(message: Message) -> None:
        await message.answer("pong")

    @host.message()
    async def echo(message: Message) -> None:
        await message.answer(f"host heard: {message.text}")

    yibao = await YibaoOnTelegram.open(os.environ.get("YIBAO_CONFIG"))
    # Yibao's router before the host's catch-all one: it lets through what is not its own. (Handlers
    # registered on the Dispatcher itself run before any router's, so keep catch-alls in a router.)
    dp.include_router(yibao.aiogram_router(bot))
    dp.include_router(host)

    stop = asyncio.Event()
    alerts = asyncio.create_task(yibao.run_alerts(stop))
    # Yibao's pages, when [web] is on: served on its [http] port, opened from the menu button.
    pages = asyncio.create_task(yibao.serve_pages(stop)) if yibao.pages_enabled else None
    await yibao.set_menu_button()
    loop = asyncio.get_running_loop()
    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logging.info("host bot with Yibao: polling")
    await stop.wait()
    await dp.stop_polling()
    await polling
    await alerts
    if pages is not None:
        await pages
    await yibao.aclose()


if __name__ == "__main__":
    asyncio.run(main())

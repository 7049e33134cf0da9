"""A python-telegram-bot 22 bot of the operator's own, with a /ping and a free-text echo, and Yibao
mounted in it.

    BOT_TOKEN=123:abc YIBAO_CONFIG=yibao.toml .venv/bin/python examples/ptb_host.py

``BOT_API_BASE_URL`` points the bot at another Bot API server (a local telegram-bot-api, or the test
emulator). Yibao's own settings come from ``YIBAO_CONFIG`` (or ``./config.toml``, or the defaults);
its ``[telegram]`` token is not used: the host's bot answers. SIGTERM or Ctrl-C stops it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from telegram import Update
from telegram.ext import ApplicationBuilder, CommandHandler, ContextTypes, MessageHandler, filters

from bot.hosting.telegram import YibaoOnTelegram


async def ping(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_text("pong")


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None
    await update.effective_message.reply_text(f"host heard: {update.effective_message.text}")


async def main() -> None:
    logging.basicConfig(level=logging.INFO)
    api = os.environ.get("BOT_API_BASE_URL", "https://api.telegram.org")
    application = (
        ApplicationBuilder()
        .token(os.environ["BOT_TOKEN"])
        .base_url(f"{api}/bot")
        .concurrent_updates(True)
        .build()
    )
    application.add_handler(CommandHandler("ping", ping))  # the host's handlers: group 0
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))

    yibao = await YibaoOnTelegram.open(os.environ.get("YIBAO_CONFIG"))
    yibao.add_to_ptb(application, group=-1)  # before the host's group: it lets through what is not its own

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with application:
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling()
        alerts = asyncio.create_task(yibao.run_alerts(stop))
        # Yibao's pages, when [web] is on: served on its [http] port, opened from the menu button.
        pages = asyncio.create_task(yibao.serve_pages(stop)) if yibao.pages_enabled else None
        await yibao.set_menu_button()
        logging.info("host bot with Yibao: polling")
        await stop.wait()
        await application.updater.stop()
        await application.stop()
        await alerts
        if pages is not None:
            await pages
    await yibao.aclose()


if __name__ == "__main__":
    asyncio.run(main())

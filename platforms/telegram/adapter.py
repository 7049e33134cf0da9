"""Yibao on Telegram: PTB updates in as ``Inbound``, ``Reply`` out as Bot API calls.

One adapter serves polling (one process) and webhooks (any number of processes behind a load
balancer; ``platforms.telegram.webhook`` serves them). What the adapter owns:

- private chats only: a message or a pressed button becomes an ``Inbound`` for ``tg:<user id>`` in
  the user's ``language_code``; in a group it only points people to a private chat;
- replies as HTML-escaped text split below 4096 characters, buttons as an inline keyboard (pressed
  buttons come back as callback queries, answered at once), files as photos;
- a message that held an ID number or an SMS code is deleted from the chat (bots may, in private
  chats, for 48 hours), with the reply's note about it when the dialogs give one;
- a 403 (the user blocked the bot or is gone) is reported through ``on_unreachable``;
- one bad update is logged, without its text, and skipped.

Updates are handled concurrently (across users); the dialogs' per-user guard keeps one user's
messages in order of processing.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Message,
    Update,
)
from telegram.constants import ChatType, ParseMode
from telegram.error import BadRequest, Forbidden, TelegramError, TimedOut
from telegram.ext import (
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.request import BaseRequest

from dialogs.i18n import Catalogs
from dialogs.models import Inbound, Reply, UserKey
from dialogs.ports import Undeliverable
from platforms.telegram.ratelimit import ChatRateLimiter
from platforms.telegram.render import CAPTION_LIMIT, as_html, split_text

log = logging.getLogger(__name__)

Handler = Callable[[Inbound], Awaitable[Sequence[Reply]]]
Unreachable = Callable[[UserKey], Awaitable[None]]


_COMMANDS = ("start", "balance", "history", "chart", "alert", "bind", "unbind", "lang", "help", "cancel")


@dataclass(frozen=True, slots=True)
class TelegramOptions:
    token: str
    api_base_url: str = "https://api.telegram.org"
    global_rate: float = 30.0
    per_chat_rate: float = 1.0
    max_retries: int = 3
    concurrent_updates: int = 64
    webhook: bool = False
    """No updater (polling) is built: updates arrive through ``process``."""


def user_key(user_id: int) -> UserKey:
    return UserKey(f"tg:{user_id}")


class TelegramAdapter:
    platform = "tg"

    def __init__(
        self,
        options: TelegramOptions,
        handle: Handler,
        *,
        catalogs: Catalogs,
        on_unreachable: Unreachable | None = None,
        default_locale: str = "zh",
        request: BaseRequest | None = None,
    ) -> None:
        """``request`` replaces PTB's HTTP transport (a benchmark's request object that makes no
        network call); the Bot API server is otherwise ``options.api_base_url``."""
        # PTB's documented opt-in to timedelta durations (``retry_after``), which its next major
        # version makes the default; without it, every 429 logs a deprecation warning.
        os.environ.setdefault("PTB_TIMEDELTA", "1")
        self.options = options
        self.handle = handle
        self.catalogs = catalogs
        self.on_unreachable = on_unreachable
        self.default_locale = default_locale
        base = options.api_base_url.rstrip("/")
        builder = (
            ApplicationBuilder()
            .token(options.token)
            .base_url(f"{base}/bot")
            .base_file_url(f"{base}/file/bot")
            .rate_limiter(
                ChatRateLimiter(
                    global_rate=options.global_rate,
                    per_chat_rate=options.per_chat_rate,
                    max_retries=options.max_retries,
                )
            )
            .concurrent_updates(options.concurrent_updates)
        )
        if request is not None:
            builder = builder.request(request)
        if options.webhook:
            builder = builder.updater(None)
        self.app = builder.build()
        private = filters.ChatType.PRIVATE
        self.app.add_handler(MessageHandler(private & ~filters.UpdateType.EDITED, self._on_message))
        self.app.add_handler(MessageHandler(filters.ChatType.GROUPS & filters.COMMAND, self._on_group))
        self.app.add_handler(CallbackQueryHandler(self._on_button))
        self.app.add_error_handler(self._on_error)

    # -- life --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, check the token (``getMe``), set the command menus, start handling updates."""
        await self.app.initialize()
        await self.set_commands()
        await self.app.start()

    async def start_polling(self) -> None:
        assert self.app.updater is not None, "built for webhooks"
        await self.app.bot.delete_webhook()
        await self.app.updater.start_polling(allowed_updates=["message", "callback_query"])

    async def register_webhook(self, url: str, secret: str) -> None:
        await self.app.bot.set_webhook(
            url, secret_token=secret, allowed_updates=["message", "callback_query"]
        )

    async def stop(self) -> None:
        """Stop taking updates, finish the ones in flight, then close."""
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    async def process(self, data: object) -> None:
        """One update from a webhook (already authenticated): handled before this returns."""
        update = Update.de_json(data, self.app.bot)  # type: ignore[arg-type]
        await self.app.process_update(update)

    async def set_commands(self) -> None:
        for lang in ("zh", "en"):
            t = self.catalogs.get(lang)
            descriptions = {
                "start": t.gettext("What Yibao does and what it keeps"),
                "balance": t.gettext("What is left on my account"),
                "history": t.gettext("My latest payments"),
                "chart": t.gettext("The last 12 months as a picture"),
                "alert": t.gettext("Alert me when the balance is low"),
                "bind": t.gettext("Link my insurance account"),
                "unbind": t.gettext("Unlink and erase my data"),
                "lang": t.gettext("Language: /lang zh or /lang en"),
                "help": t.gettext("All commands"),
                "cancel": t.gettext("Leave what I am doing"),
            }
            commands = [BotCommand(name, descriptions[name]) for name in _COMMANDS]
            await self.app.bot.set_my_commands(commands, language_code=lang)
            if lang == self.default_locale:
                await self.app.bot.set_my_commands(commands)

    # -- in ----------------------------------------------------------------------------------------

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        inbound = Inbound(user=user_key(user.id), text=message.text or "", locale=user.language_code)
        replies = await self.handle(inbound)
        deleted = False
        if replies and replies[0].sensitive_input:
            deleted = await self._delete(message)
        await self.send(user.id, replies, note_deleted=deleted)

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query, user = update.callback_query, update.effective_user
        if query is None or user is None:
            return
        try:
            await query.answer()
        except TelegramError as e:  # too late to answer (over 15 s): the press still counts
            log.info("could not answer a button press: %s", type(e).__name__)
        if not query.data:
            return
        if isinstance(query.message, Message):  # one press: the buttons go once used
            with contextlib.suppress(TelegramError):
                await query.message.edit_reply_markup(reply_markup=None)
        replies = await self.handle(
            Inbound(user=user_key(user.id), text=query.data, locale=user.language_code)
        )
        await self.send(user.id, replies)

    async def _on_group(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat, user = update.effective_chat, update.effective_user
        if chat is None or chat.type == ChatType.PRIVATE:
            return
        locale = (user.language_code if user else None) or self.default_locale
        t = self.catalogs.get("en" if locale.startswith("en") else "zh")
        await self.app.bot.send_message(
            chat.id,
            as_html(t.gettext("Your insurance data is private: please talk to me in a private chat.")),
            parse_mode=ParseMode.HTML,
        )

    async def _delete(self, message: Message) -> bool:
        try:
            return await message.delete()
        except TelegramError as e:  # older than 48 h, or already gone
            log.info("could not delete a message with personal data: %s", type(e).__name__)
            return False

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        update_id = update.update_id if isinstance(update, Update) else None
        error = context.error
        # The error's text may quote what the user typed: log its type only.
        log.error("update %s failed: %s", update_id, type(error).__name__, exc_info=False)

    # -- out ---------------------------------------------------------------------------------------

    async def deliver(self, user: UserKey, replies: tuple[Reply, ...]) -> None:
        """An unprompted message (the ``Outlet`` port), through the same rendering and rate limiter
        as replies. ``Undeliverable`` when Telegram refuses it for good (blocked, chat gone); a
        timed-out send counts as sent (it may have arrived: sending again could show it twice)."""
        try:
            await self.send(int(user.removeprefix("tg:")), replies, raise_refusals=True)
        except (Forbidden, BadRequest) as e:
            raise Undeliverable(type(e).__name__) from None
        except TimedOut:
            log.warning("an unprompted message to %s timed out; it may have arrived, not sent again", user)

    async def send(
        self,
        chat_id: int,
        replies: Sequence[Reply],
        *,
        note_deleted: bool = False,
        raise_refusals: bool = False,
    ) -> None:
        try:
            for i, reply in enumerate(replies):
                text = reply.text
                if i == 0 and note_deleted and reply.deleted_note:
                    text = f"{reply.deleted_note}\n\n{text}"
                await self._send_one(chat_id, text, reply)
        except Forbidden:
            log.info("tg:%s cannot be reached (blocked the bot, or gone)", chat_id)
            if self.on_unreachable is not None:
                await self.on_unreachable(user_key(chat_id))
            if raise_refusals:
                raise
        except BadRequest as e:
            log.error("Telegram refused a reply to tg:%s: %s", chat_id, e.message)
            if raise_refusals:
                raise

    async def _send_one(self, chat_id: int, text: str, reply: Reply) -> None:
        markup = None
        if reply.buttons:
            markup = InlineKeyboardMarkup(
                [[InlineKeyboardButton(b.label, callback_data=b.payload)] for b in reply.buttons]
            )
        if reply.attachment is not None:
            caption = split_text(text, CAPTION_LIMIT)
            photo = InputFile(reply.attachment.content, filename=reply.attachment.filename)
            fits = len(caption) == 1
            await self.app.bot.send_photo(
                chat_id,
                photo,
                caption=as_html(caption[0]) if fits else None,
                parse_mode=ParseMode.HTML,
                reply_markup=markup if fits else None,
            )
            if fits:
                return
        pieces = split_text(text)
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1
            await self.app.bot.send_message(
                chat_id, as_html(piece), parse_mode=ParseMode.HTML, reply_markup=markup if last else None
            )

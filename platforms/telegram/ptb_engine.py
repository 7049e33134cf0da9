"""The python-telegram-bot 22 engine: PTB's updates into ``TelegramCore``, its calls through PTB's bot.

``PtbEngine`` owns an ``Application`` for ``yibao run`` (polling, or webhooks fed by ``feed``);
``add_yibao_handlers`` puts Yibao into an operator's existing ``Application`` instead. Every request
goes through ``PtbRateLimiter``, PTB's rate-limiter hook on the shared ``SendSchedule``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any

from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    MenuButtonWebApp,
    Update,
    WebAppInfo,
)
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    BaseHandler,
    BaseRateLimiter,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.request import BaseRequest
from telegram.warnings import PTBDeprecationWarning

from dialogs.models import Button
from platforms.telegram.core import (
    ALLOWED_UPDATES,
    Blocked,
    ButtonIn,
    Link,
    MessageIn,
    Refused,
    SendTimedOut,
    TelegramCore,
    TelegramStartError,
    TokenRejected,
)
from platforms.telegram.options import Claims, TelegramOptions
from platforms.telegram.ptb_request import AiohttpRequest
from platforms.telegram.ratelimit import NETWORK, Classify, SendSchedule, Verdict
from platforms.telegram.ratelimit import RetryAfter as Retry

log = logging.getLogger(__name__)

JSON = bool | dict[str, Any] | list[dict[str, Any]]


def retry_seconds(error: RetryAfter) -> float:
    """``retry_after`` in seconds, whether PTB gives an int (22.x) or a timedelta (later)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def classify(error: Exception) -> Verdict:
    if isinstance(error, RetryAfter):
        return Retry(retry_seconds(error))
    if isinstance(error, TimedOut | BadRequest | Forbidden):
        return None
    if isinstance(error, NetworkError):
        return NETWORK
    return None


class PtbRateLimiter(BaseRateLimiter[int]):
    """PTB's hook: every request the bot makes, through the shared schedule and retry rules."""

    def __init__(self, schedule: SendSchedule, classify: Classify = classify) -> None:
        self.schedule = schedule
        self.classify = classify

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, JSON]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> JSON:
        return await self.schedule.call(
            lambda: callback(*args, **kwargs),
            endpoint=endpoint,
            chat_id=data.get("chat_id"),
            classify=self.classify,
            retries_429=rate_limit_args,
        )


def _link_button(link: Link) -> InlineKeyboardButton:
    if link.web_app:
        return InlineKeyboardButton(link.label, web_app=WebAppInfo(link.url))
    return InlineKeyboardButton(link.label, url=link.url)


def _markup(buttons: Sequence[Button], link: Link | None = None) -> InlineKeyboardMarkup | None:
    if not buttons and link is None:
        return None
    rows = [[_link_button(link)]] if link is not None else []
    rows += [[InlineKeyboardButton(b.label, callback_data=b.payload)] for b in buttons]
    return InlineKeyboardMarkup(rows)


async def _mapped(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except InvalidToken as e:
        raise TokenRejected(e.message) from None
    except Forbidden as e:
        raise Blocked(e.message) from None
    except BadRequest as e:
        raise Refused(e.message) from None
    except TimedOut as e:
        raise SendTimedOut(e.message) from None


class PtbCalls:
    """``BotCalls`` through a PTB ``Bot`` (the engine's own, or a host application's)."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def send_message(
        self, chat_id: int, html: str, buttons: Sequence[Button], link: Link | None = None
    ) -> None:
        markup = _markup(buttons, link)
        await _mapped(self.bot.send_message(chat_id, html, parse_mode=ParseMode.HTML, reply_markup=markup))

    async def send_photo(
        self,
        chat_id: int,
        content: bytes,
        filename: str,
        caption_html: str | None,
        buttons: Sequence[Button],
        link: Link | None = None,
    ) -> None:
        await _mapped(
            self.bot.send_photo(
                chat_id,
                InputFile(content, filename=filename),
                caption=caption_html,
                parse_mode=ParseMode.HTML,
                reply_markup=_markup(buttons, link),
            )
        )

    async def delete_message(self, chat_id: int, message_id: int) -> bool:
        return bool(await _mapped(self.bot.delete_message(chat_id, message_id)))

    async def answer_button(self, query_id: str) -> None:
        await _mapped(self.bot.answer_callback_query(query_id))

    async def clear_buttons(self, chat_id: int, message_id: int) -> None:
        await _mapped(self.bot.edit_message_reply_markup(chat_id, message_id, reply_markup=None))

    async def set_commands(self, commands: Sequence[tuple[str, str]], language_code: str | None) -> None:
        menu = [BotCommand(name, description) for name, description in commands]
        await _mapped(self.bot.set_my_commands(menu, language_code=language_code))

    async def set_menu_button(self, text: str, url: str) -> None:
        await _mapped(self.bot.set_chat_menu_button(menu_button=MenuButtonWebApp(text, WebAppInfo(url))))


def message_in(update: Update) -> MessageIn | None:
    message, user, chat = update.effective_message, update.effective_user, update.effective_chat
    if message is None or chat is None or update.edited_message is not None:
        return None
    text = message.text or ""
    return MessageIn(
        update_id=update.update_id,
        chat_id=chat.id,
        private=chat.type == "private",
        user_id=user.id if user else None,
        language_code=user.language_code if user else None,
        text=text,
        message_id=message.message_id,
        command=text.startswith("/"),
        location=(message.location.latitude, message.location.longitude) if message.location else None,
    )


def button_in(update: Update) -> ButtonIn | None:
    query = update.callback_query
    if query is None:
        return None
    message = query.message
    accessible = message is not None and message.is_accessible
    return ButtonIn(
        update_id=update.update_id,
        query_id=query.id,
        user_id=query.from_user.id,
        language_code=query.from_user.language_code,
        data=query.data,
        chat_id=message.chat.id if accessible and message is not None else None,
        message_id=message.message_id if accessible and message is not None else None,
    )


def _handlers(core: TelegramCore, claims: Claims | None) -> list[BaseHandler[Update, Any, Any]]:
    """Yibao's handlers. With ``claims`` (mounted in a host's application), an update Yibao does not
    claim is left to the host's handlers in later groups; one it handles stops them."""

    async def on_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        m = message_in(update)
        if m is None:
            return
        if claims is not None and (not m.private or m.user_id is None or not await claims(m.user_id, m.text)):
            return
        await core.on_message(m)
        if claims is not None:
            raise ApplicationHandlerStop

    async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        b = button_in(update)
        if b is None:
            return
        if claims is not None and not await claims(b.user_id, b.data or ""):
            return
        await core.on_button(b)
        if claims is not None:
            raise ApplicationHandlerStop

    message_filter = (filters.ChatType.PRIVATE | (filters.ChatType.GROUPS & filters.COMMAND)) & ~(
        filters.UpdateType.EDITED
    )
    return [MessageHandler(message_filter, on_message), CallbackQueryHandler(on_button)]


def add_yibao_handlers(
    application: Application[Any, Any, Any, Any, Any, Any],
    core: TelegramCore,
    claims: Claims,
    *,
    group: int = -1,
) -> None:
    """Mount Yibao into a host's PTB ``Application`` in handler ``group`` (default -1: before the
    host's group 0). Yibao answers its commands and buttons and the users in one of its flows; every
    other update goes on to the host's handlers. Replies and alerts go out through the host's bot."""
    core.attach(PtbCalls(application.bot))
    for handler in _handlers(core, claims):
        application.add_handler(handler, group=group)


class PtbEngine:
    """``yibao run`` on python-telegram-bot: its ``Application``, polling or fed by a webhook."""

    name = "ptb"

    def __init__(
        self, core: TelegramCore, options: TelegramOptions, *, request: BaseRequest | None = None
    ) -> None:
        """``request`` replaces PTB's HTTP transport (a benchmark's request object that makes no
        network call); the Bot API server is otherwise ``options.api_base_url``."""
        # PTB's documented opt-in to timedelta durations (``retry_after``), which its next major
        # version makes the default; without it, every 429 logs a deprecation warning.
        os.environ.setdefault("PTB_TIMEDELTA", "1")
        self.core = core
        self.options = options
        base = options.api_base_url.rstrip("/")
        schedule = SendSchedule(
            global_rate=options.global_rate,
            per_chat_rate=options.per_chat_rate,
            max_retries=options.max_retries,
            metrics=core.metrics,
            platform=core.platform,
        )
        builder = (
            ApplicationBuilder()
            .token(options.token)
            .base_url(f"{base}/bot")
            .base_file_url(f"{base}/file/bot")
            .rate_limiter(PtbRateLimiter(schedule))
            # The core keeps one user's updates in order and caps how many run at once; PTB only
            # has to hand them over as they come.
            .concurrent_updates(4096)
        )
        # Bot API calls over aiohttp (ptb_request.py) unless a request object is given; getUpdates
        # keeps PTB's own, whose long poll does not hold one of the pool's connections.
        builder = builder.request(request or AiohttpRequest())
        if options.webhook:
            builder = builder.updater(None)
        self.app = builder.build()
        core.attach(PtbCalls(self.app.bot))
        for handler in _handlers(core, None):
            self.app.add_handler(handler)
        self.app.add_error_handler(self._on_error)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        self.core.failed(
            update.update_id if isinstance(update, Update) else None, context.error or Exception()
        )

    async def initialize(self) -> None:
        """Connect and check the token (``getMe``)."""
        try:
            await self.app.initialize()
        except InvalidToken:
            raise TelegramStartError("Telegram does not accept telegram.token") from None
        except TelegramError as e:
            raise TelegramStartError(f"Telegram: {e.message}") from None
        self.core.token_ok = True

    async def start(self) -> None:
        await self.app.start()

    async def start_polling(self) -> None:
        assert self.app.updater is not None, "built for webhooks"
        try:
            await self.app.bot.delete_webhook()
            await self.app.updater.start_polling(allowed_updates=list(ALLOWED_UPDATES))
        except TelegramError as e:
            raise TelegramStartError(f"Telegram: {e.message}") from None

    async def register_webhook(self, url: str, secret: str) -> None:
        try:
            await self.app.bot.set_webhook(url, secret_token=secret, allowed_updates=list(ALLOWED_UPDATES))
        except TelegramError as e:
            raise TelegramStartError(f"Telegram: setWebhook: {e.message}") from None

    async def feed(self, data: dict[str, Any]) -> None:
        """One update from a webhook (already authenticated): handled before this returns."""
        await self.app.process_update(Update.de_json(data, self.app.bot))

    async def stop(self) -> None:
        """Stop taking updates, finish the ones in flight, then close."""
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.core.sequencer.drained()
        await self.app.shutdown()

    async def close(self) -> None:
        """For a send-only engine (``yibao worker``): close what ``initialize`` opened."""
        await self.app.shutdown()

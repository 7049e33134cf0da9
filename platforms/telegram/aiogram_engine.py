"""The aiogram 3 engine: aiogram's updates into ``TelegramCore``, its calls through aiogram's ``Bot``.

``AiogramEngine`` owns a ``Bot`` (aiohttp session) and a ``Dispatcher`` for ``yibao run`` (polling,
or webhooks fed by ``feed``); ``yibao_router`` builds a fresh ``Router`` to include in an operator's
existing ``Dispatcher`` instead (a ``Router`` can have only one parent, so one is built per call).
Every request goes through ``AiogramRateLimit``, a session middleware on the shared ``SendSchedule``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiogram import Bot, Dispatcher, Router, methods
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    AiogramError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MenuButtonWebApp,
    Message,
    Update,
    WebAppInfo,
)

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
from platforms.telegram.ratelimit import NETWORK, RetryAfter, SendSchedule, Verdict

log = logging.getLogger(__name__)

_TIMEOUT = "Request timeout error"  # aiogram's message for an aiohttp timeout

_USED = (
    methods.SendMessage,
    methods.SendPhoto,
    methods.DeleteMessage,
    methods.AnswerCallbackQuery,
    methods.EditMessageReplyMarkup,
    methods.SetMyCommands,
    methods.SetChatMenuButton,
    methods.GetMe,
    methods.GetUpdates,
    methods.SetWebhook,
    methods.DeleteWebhook,
)
_PINNED: list[object] = []


def pin_response_types() -> None:
    """Keep aiogram's ``Response[T]`` models alive. aiogram parses every answer as ``Response[T]``,
    which pydantic caches only weakly; a garbage collection drops the class and the next answer
    builds its schema again (about 18 % of a webhook update's CPU, measured with py-spy under
    bench/webhook_bench.py). Holding one reference to each makes that a dictionary lookup."""
    if not _PINNED:
        _PINNED.extend(Response[m.__returning__] for m in _USED)  # type: ignore[name-defined]


def classify(error: Exception) -> Verdict:
    if isinstance(error, TelegramRetryAfter):
        return RetryAfter(float(error.retry_after))
    if isinstance(error, TelegramNetworkError):
        return None if error.message == _TIMEOUT else NETWORK
    if isinstance(error, TelegramServerError):
        return NETWORK
    return None


class AiogramRateLimit(BaseRequestMiddleware):
    """aiogram's session middleware: every request the bot makes, through the shared schedule."""

    def __init__(self, schedule: SendSchedule) -> None:
        self.schedule = schedule

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        chat_id = getattr(method, "chat_id", None)
        return await self.schedule.call(
            lambda: make_request(bot, method),
            endpoint=method.__api_method__,
            chat_id=chat_id if isinstance(chat_id, int | str) else None,
            classify=classify,
        )


def _link_button(link: Link) -> InlineKeyboardButton:
    if link.web_app:
        return InlineKeyboardButton(text=link.label, web_app=WebAppInfo(url=link.url))
    return InlineKeyboardButton(text=link.label, url=link.url)


def _markup(buttons: Sequence[Button], link: Link | None = None) -> InlineKeyboardMarkup | None:
    if not buttons and link is None:
        return None
    rows = [[_link_button(link)]] if link is not None else []
    rows += [[InlineKeyboardButton(text=b.label, callback_data=b.payload)] for b in buttons]
    return InlineKeyboardMarkup(inline_keyboard=rows)


async def _mapped(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except TelegramUnauthorizedError as e:
        raise TokenRejected(e.message) from None
    except TelegramForbiddenError as e:
        raise Blocked(e.message) from None
    except (TelegramBadRequest, TelegramNotFound) as e:
        raise Refused(e.message) from None
    except TelegramNetworkError as e:
        if e.message == _TIMEOUT:
            raise SendTimedOut(e.message) from None
        raise


class AiogramCalls:
    """``BotCalls`` through an aiogram ``Bot`` (the engine's own, or a host's)."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def send_message(
        self, chat_id: int, html: str, buttons: Sequence[Button], link: Link | None = None
    ) -> None:
        markup = _markup(buttons, link)
        await _mapped(self.bot.send_message(chat_id, html, parse_mode="HTML", reply_markup=markup))

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
                BufferedInputFile(content, filename=filename),
                caption=caption_html,
                parse_mode="HTML",
                reply_markup=_markup(buttons, link),
            )
        )

    async def delete_message(self, chat_id: int, message_id: int) -> bool:
        return bool(await _mapped(self.bot.delete_message(chat_id, message_id)))

    async def answer_button(self, query_id: str) -> None:
        await _mapped(self.bot.answer_callback_query(query_id))

    async def clear_buttons(self, chat_id: int, message_id: int) -> None:
        await _mapped(
            self.bot.edit_message_reply_markup(chat_id=chat_id, message_id=message_id, reply_markup=None)
        )

    async def set_commands(self, commands: Sequence[tuple[str, str]], language_code: str | None) -> None:
        menu = [BotCommand(command=name, description=description) for name, description in commands]
        await _mapped(self.bot.set_my_commands(menu, language_code=language_code))

    async def set_menu_button(self, text: str, url: str) -> None:
        button = MenuButtonWebApp(text=text, web_app=WebAppInfo(url=url))
        await _mapped(self.bot.set_chat_menu_button(menu_button=button))


def message_in(message: Message, update_id: int) -> MessageIn:
    user = message.from_user
    text = message.text or ""
    return MessageIn(
        update_id=update_id,
        chat_id=message.chat.id,
        private=message.chat.type == "private",
        user_id=user.id if user else None,
        language_code=user.language_code if user else None,
        text=text,
        message_id=message.message_id,
        command=text.startswith("/"),
        location=(message.location.latitude, message.location.longitude) if message.location else None,
    )


def button_in(query: CallbackQuery, update_id: int) -> ButtonIn:
    message = query.message if isinstance(query.message, Message) else None
    return ButtonIn(
        update_id=update_id,
        query_id=query.id,
        user_id=query.from_user.id,
        language_code=query.from_user.language_code,
        data=query.data,
        chat_id=message.chat.id if message else None,
        message_id=message.message_id if message else None,
    )


def _router(core: TelegramCore, claims: Claims | None) -> Router:
    router = Router(name="yibao")

    async def guarded(update_id: int, step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except Exception as e:  # aiogram would log the error's text, which may quote the user
            core.failed(update_id, e)

    async def on_message(message: Message, event_update: Update) -> None:
        await guarded(
            event_update.update_id, lambda: core.on_message(message_in(message, event_update.update_id))
        )

    async def on_button(query: CallbackQuery, event_update: Update) -> None:
        await guarded(
            event_update.update_id, lambda: core.on_button(button_in(query, event_update.update_id))
        )

    if claims is None:

        async def ours(message: Message) -> bool:  # async: aiogram runs a plain function in a thread
            return message.chat.type == "private" or (message.text or "").startswith("/")

        router.message.register(on_message, ours)
        router.callback_query.register(on_button)
    else:

        async def claims_message(message: Message) -> bool:
            user = message.from_user
            return (
                message.chat.type == "private"
                and user is not None
                and await claims(user.id, message.text or "")
            )

        async def claims_button(query: CallbackQuery) -> bool:
            return await claims(query.from_user.id, query.data or "")

        router.message.register(on_message, claims_message)
        router.callback_query.register(on_button, claims_button)
    return router


def yibao_router(bot: Bot, core: TelegramCore, claims: Claims) -> Router:
    """A fresh ``Router`` for a host's ``Dispatcher`` (``dp.include_router(...)``), answering through
    the host's ``bot``. Yibao takes its commands and buttons and the users in one of its flows; every
    other update goes on to the host's handlers and FSM."""
    pin_response_types()
    core.attach(AiogramCalls(bot))
    return _router(core, claims)


class AiogramEngine:
    """``yibao run`` on aiogram: its ``Bot`` and ``Dispatcher``, polling or fed by a webhook."""

    name = "aiogram"

    def __init__(self, core: TelegramCore, options: TelegramOptions) -> None:
        self.core = core
        self.options = options
        logging.getLogger("aiogram.event").setLevel(logging.WARNING)  # a line per update otherwise
        pin_response_types()
        session = AiohttpSession(api=TelegramAPIServer.from_base(options.api_base_url), limit=256)
        schedule = SendSchedule(
            global_rate=options.global_rate,
            per_chat_rate=options.per_chat_rate,
            max_retries=options.max_retries,
            metrics=core.metrics,
            platform=core.platform,
        )
        session.middleware(AiogramRateLimit(schedule))
        try:
            self.bot = Bot(options.token, session=session)
        except AiogramError as e:
            raise TelegramStartError(f"telegram.token: {e}") from None
        # No FSM: the dialogs keep their state in Redis; the dispatcher only routes.
        self.dp = Dispatcher(disable_fsm=True)
        self.dp.include_router(_router(core, None))
        core.attach(AiogramCalls(self.bot))
        self._polling: asyncio.Task[None] | None = None

    async def initialize(self) -> None:
        try:
            await self.bot.get_me()
        except TelegramUnauthorizedError:
            raise TelegramStartError("Telegram does not accept telegram.token") from None
        except TelegramAPIError as e:
            raise TelegramStartError(f"Telegram: {e.message}") from None
        self.core.token_ok = True

    async def start(self) -> None:
        pass

    async def start_polling(self) -> None:
        try:
            await self.bot.delete_webhook()
        except TelegramAPIError as e:
            raise TelegramStartError(f"Telegram: {e.message}") from None
        self._polling = asyncio.create_task(
            self.dp.start_polling(
                self.bot,
                handle_signals=False,
                close_bot_session=False,
                allowed_updates=list(ALLOWED_UPDATES),
                tasks_concurrency_limit=4096,  # the core caps what runs; this only bounds the queue
            ),
            name="aiogram-polling",
        )

    async def register_webhook(self, url: str, secret: str) -> None:
        try:
            await self.bot.set_webhook(url, secret_token=secret, allowed_updates=list(ALLOWED_UPDATES))
        except TelegramAPIError as e:
            raise TelegramStartError(f"Telegram: setWebhook: {e.message}") from None

    async def feed(self, data: dict[str, Any]) -> None:
        """One update from a webhook (already authenticated): handled before this returns."""
        await self.dp.feed_update(self.bot, Update.model_validate(data, context={"bot": self.bot}))

    async def stop(self) -> None:
        """Stop polling, finish the updates in flight, tell Telegram they are done, close."""
        if self._polling is not None:
            with contextlib.suppress(RuntimeError):  # polling had already ended
                await self.dp.stop_polling()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._polling
        await self.core.sequencer.drained()
        if self._polling is not None and self.core.last_update_id:
            # getUpdates confirms what came before its offset: the next process starts after these.
            with contextlib.suppress(TelegramAPIError):
                await self.bot.get_updates(offset=self.core.last_update_id + 1, timeout=0, limit=1)
        await self.bot.session.close()

    async def close(self) -> None:
        await self.bot.session.close()

"""Yibao on Telegram, whatever library speaks to it: updates in as ``Inbound``, ``Reply`` out as calls.

An engine (``ptb_engine``: python-telegram-bot 22; ``aiogram_engine``: aiogram 3) turns its
library's updates into ``MessageIn`` / ``ButtonIn`` and hands them to ``TelegramCore``, and does the
calls ``TelegramCore`` asks for through the ``BotCalls`` it implements, raising ``Blocked``,
``Refused``, ``SendTimedOut`` or ``TokenRejected`` for Telegram's refusals. What the core owns, the same on both:

- private chats only: a message or a pressed button becomes an ``Inbound`` for ``tg:<user id>`` in
  the user's ``language_code``; in a group a command only points people to a private chat;
- **one user's updates in order**: they are handled one after the other in the order they reached
  the core (ascending ``update_id`` when polling), different users' at once, at most
  ``concurrency`` in all; every update is handled once;
- replies as HTML-escaped text split below 4096 characters, buttons as an inline keyboard (a pressed
  button is answered at once and its keyboard removed, so it cannot be pressed twice), a reply's
  ``web_link`` as a button that opens the page (a Mini App when it is https), files as photos;
- the chat's menu button opens the pages' Mini App entry (``set_menu_button``, at start-up);
- a message that held an ID number or an SMS code is deleted from the chat (bots may, in private
  chats, for 48 hours), with the reply's note about it when the dialogs give one;
- a 403 (the user blocked the bot or is gone) is reported through ``on_unreachable``;
- one bad update is logged, without its text, and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from dialogs.i18n import Catalogs
from dialogs.models import Button, Inbound, Location, Reply, UserKey
from dialogs.ports import NO_METRICS, ChatMetrics, Undeliverable
from platforms.sequencer import Sequencer
from platforms.telegram.render import CAPTION_LIMIT, as_html, split_text
from platforms.tencent.text import language_of

log = logging.getLogger(__name__)

Handler = Callable[[Inbound], Awaitable[Sequence[Reply]]]
Unreachable = Callable[[UserKey], Awaitable[None]]

COMMANDS = (
    "start",
    "balance",
    "history",
    "chart",
    "alert",
    "bind",
    "unbind",
    "mydata",
    "lang",
    "help",
    "cancel",
)
ALLOWED_UPDATES = ("message", "callback_query")


def user_key(user_id: int) -> UserKey:
    return UserKey(f"tg:{user_id}")


# -- what an engine raises from its calls -----------------------------------------------------------


class TelegramRefusal(Exception):
    """Telegram answered a call with a final no."""


class Blocked(TelegramRefusal):
    """403: the user blocked the bot, or is gone."""


class Refused(TelegramRefusal):
    """400: a request Telegram will never accept (the chat is gone, the text is malformed...)."""


class TokenRejected(Exception):
    """401: Telegram no longer accepts the token (revoked in @BotFather). Not the user's fault: an
    unprompted message stays to be tried again; ``/readyz`` says not ready until a call works."""


class TelegramStartError(Exception):
    """The engine could not start: the token is refused, the Bot API server cannot be reached..."""


class SendTimedOut(Exception):
    """No answer in time: the message may have arrived, so it is not sent again."""


# -- what an engine hands in -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageIn:
    update_id: int
    chat_id: int
    private: bool
    user_id: int | None
    language_code: str | None
    text: str
    message_id: int
    command: bool = False
    """The text starts with a ``/command`` (only those are answered in groups)."""
    location: tuple[float, float] | None = None
    """A shared location's latitude and longitude (the message then has no text)."""


@dataclass(frozen=True, slots=True)
class ButtonIn:
    update_id: int
    query_id: str
    user_id: int
    language_code: str | None
    data: str | None
    chat_id: int | None = None
    message_id: int | None = None
    """The message that carried the button, when Telegram still gives it."""


@dataclass(frozen=True, slots=True)
class Link:
    """A button that opens a page (a reply's ``web_link``): a Mini App (``web_app``) for an https
    page, which Telegram opens inside the chat (its ``initData`` says who), else a plain ``url``
    button (Telegram refuses ``web_app`` for anything but https)."""

    label: str
    url: str

    @property
    def web_app(self) -> bool:
        return self.url.startswith("https://")


class BotCalls(Protocol):
    """The Bot API calls the core makes; an engine implements them with its library. ``link``: a
    page's button, in a row of its own above the ``buttons``."""

    async def send_message(
        self, chat_id: int, html: str, buttons: Sequence[Button], link: Link | None = None
    ) -> None: ...

    async def send_photo(
        self,
        chat_id: int,
        content: bytes,
        filename: str,
        caption_html: str | None,
        buttons: Sequence[Button],
        link: Link | None = None,
    ) -> None: ...

    async def delete_message(self, chat_id: int, message_id: int) -> bool: ...

    async def answer_button(self, query_id: str) -> None: ...

    async def clear_buttons(self, chat_id: int, message_id: int) -> None: ...

    async def set_commands(self, commands: Sequence[tuple[str, str]], language_code: str | None) -> None: ...

    async def set_menu_button(self, text: str, url: str) -> None:
        """``setChatMenuButton`` for every private chat: a ``web_app`` button (``url`` is https)."""
        ...


def update_user(data: object) -> int | None:
    """The id of the person behind a raw update (a webhook's JSON), for ordering; None if none."""
    if not isinstance(data, dict):
        return None
    for kind in ("message", "edited_message", "callback_query"):
        part = data.get(kind)
        if isinstance(part, dict):
            sender = part.get("from")
            if isinstance(sender, dict) and isinstance(sender.get("id"), int):
                return int(sender["id"])
    return None


# -- the platform ------------------------------------------------------------------------------------


class TelegramCore:
    """What Yibao does on Telegram, over an engine's ``BotCalls``. Also the ``Outlet`` for alerts."""

    platform = "tg"

    def __init__(
        self,
        handle: Handler,
        *,
        catalogs: Catalogs,
        on_unreachable: Unreachable | None = None,
        default_locale: str = "zh",
        concurrency: int = 64,
        metrics: ChatMetrics = NO_METRICS,
    ) -> None:
        self.handle = handle
        self.metrics = metrics
        self.token_ok = False
        """The token was accepted (``getMe`` answered when the engine started): the readiness check."""
        self.catalogs = catalogs
        self.on_unreachable = on_unreachable
        self.default_locale = default_locale
        self.sequencer = Sequencer(concurrency)
        self.calls: BotCalls | None = None
        self.last_update_id = 0

    def attach(self, calls: BotCalls) -> None:
        self.calls = calls

    def _bot(self) -> BotCalls:
        if self.calls is None:
            raise RuntimeError("no engine attached")
        return self.calls

    # -- in ----------------------------------------------------------------------------------------

    async def on_message(self, m: MessageIn) -> None:
        self.last_update_id = max(self.last_update_id, m.update_id)
        if not m.private:
            if m.command:
                await self._point_to_private(m)
            return
        if m.user_id is None:
            return
        user_id = m.user_id
        await self.sequencer.run(str(user_id), lambda: self._message(m, user_id))

    async def _message(self, m: MessageIn, user_id: int) -> None:
        where = Location(lat=m.location[0], lon=m.location[1]) if m.location is not None else None
        inbound = Inbound(user=user_key(user_id), text=m.text, locale=m.language_code, location=where)
        replies = await self.handle(inbound)
        deleted = False
        if replies and replies[0].sensitive_input:
            deleted = await self._delete(m.chat_id, m.message_id)
        await self.send(m.chat_id, replies, note_deleted=deleted)

    async def on_button(self, b: ButtonIn) -> None:
        self.last_update_id = max(self.last_update_id, b.update_id)
        await self.sequencer.run(str(b.user_id), lambda: self._button(b))

    async def _button(self, b: ButtonIn) -> None:
        bot = self._bot()
        try:
            await bot.answer_button(b.query_id)
        except Exception as e:  # too late to answer (over 15 s): the press still counts
            log.info("could not answer a button press: %s", type(e).__name__)
        if not b.data:
            return
        if b.chat_id is not None and b.message_id is not None:  # one press: the buttons go once used
            try:
                await bot.clear_buttons(b.chat_id, b.message_id)
            except Exception as e:
                log.info("could not remove pressed buttons: %s", type(e).__name__)
        replies = await self.handle(Inbound(user=user_key(b.user_id), text=b.data, locale=b.language_code))
        await self.send(b.user_id, replies)

    async def _point_to_private(self, m: MessageIn) -> None:
        locale = m.language_code or self.default_locale
        t = self.catalogs.get("en" if locale.startswith("en") else "zh")
        text = t.gettext("Your insurance data is private: please talk to me in a private chat.")
        try:
            await self._bot().send_message(m.chat_id, as_html(text), ())
        except (TelegramRefusal, SendTimedOut) as e:
            log.info("could not answer in a group: %s", type(e).__name__)

    async def _delete(self, chat_id: int, message_id: int) -> bool:
        try:
            return await self._bot().delete_message(chat_id, message_id)
        except Exception as e:  # older than 48 h, or already gone
            log.info("could not delete a message with personal data: %s", type(e).__name__)
            return False

    def failed(self, update_id: int | None, error: BaseException) -> None:
        """An engine's last word on an update that raised: its type only (its text may quote the user)."""
        log.error("update %s failed: %s", update_id, type(error).__name__)

    # -- the command menu --------------------------------------------------------------------------

    def command_menu(self, lang: str) -> list[tuple[str, str]]:
        t = self.catalogs.get(lang)
        descriptions = {
            "start": t.gettext("What Yibao does and what it keeps"),
            "balance": t.gettext("What is left on my account"),
            "history": t.gettext("My latest payments"),
            "chart": t.gettext("The last 12 months as a picture"),
            "alert": t.gettext("Alert me when the balance is low"),
            "bind": t.gettext("Link my insurance account"),
            "unbind": t.gettext("Unlink and erase my data"),
            "mydata": t.gettext("What Yibao keeps about me"),
            "lang": t.gettext("Language: /lang zh or /lang en"),
            "help": t.gettext("All commands"),
            "cancel": t.gettext("Leave what I am doing"),
        }
        return [(name, descriptions[name]) for name in COMMANDS]

    async def set_commands(self) -> None:
        """The command menu in Chinese and English, and the default language's for everyone else."""
        bot = self._bot()
        for lang in ("zh", "en"):
            menu = self.command_menu(lang)
            await bot.set_commands(menu, lang)
            if lang == self.default_locale:
                await bot.set_commands(menu, None)

    async def set_menu_button(self, page_url: str) -> bool:
        """The chat's menu button (beside the text field) opens ``page_url`` (the Mini App entry,
        ``<public_url>/web/tg``) as a Mini App, labelled in the default language. Telegram opens only
        https pages so: False, and nothing set, for any other URL."""
        if not page_url.startswith("https://"):
            log.warning("the Telegram menu button needs an https page; web.public_url is not: not set")
            return False
        t = self.catalogs.get(self.default_locale)
        await self._bot().set_menu_button(t.gettext("Open the page"), page_url)
        return True

    # -- out ---------------------------------------------------------------------------------------

    async def deliver(self, user: UserKey, replies: tuple[Reply, ...]) -> None:
        """An unprompted message (the ``Outlet`` port), through the same rendering and rate limiter
        as replies. ``Undeliverable`` when Telegram refuses it for good (blocked, chat gone); a
        timed-out send counts as sent (it may have arrived: sending again could show it twice)."""
        try:
            await self.send(int(user.removeprefix("tg:")), replies, raise_refusals=True)
        except TelegramRefusal as e:
            raise Undeliverable(type(e).__name__) from None
        except SendTimedOut:
            self.metrics.sent(self.platform, "timeout")
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
        except TokenRejected:
            self.token_ok = False
            self.metrics.refused(self.platform, 401)
            self.metrics.sent(self.platform, "token_rejected")
            log.error("Telegram rejects the bot's token (401): nothing can be sent until it is replaced")
            if raise_refusals:
                raise
        except Blocked:
            self.metrics.refused(self.platform, 403)
            self.metrics.sent(self.platform, "blocked")
            log.info("tg:%s cannot be reached (blocked the bot, or gone)", chat_id)
            if self.on_unreachable is not None:
                await self.on_unreachable(user_key(chat_id))
            if raise_refusals:
                raise
        except Refused as e:
            self.metrics.refused(self.platform, 400)
            self.metrics.sent(self.platform, "refused")
            log.error("Telegram refused a reply to tg:%s: %s", chat_id, e)
            if raise_refusals:
                raise

    def _link(self, reply: Reply) -> Link | None:
        if not reply.web_link:
            return None
        t = self.catalogs.get(language_of(reply.text))
        return Link(t.gettext("Open the page"), reply.web_link)

    async def _send_one(self, chat_id: int, text: str, reply: Reply) -> None:
        bot = self._bot()
        link = self._link(reply)
        if reply.attachment is not None:
            caption = split_text(text, CAPTION_LIMIT)
            fits = len(caption) == 1
            await bot.send_photo(
                chat_id,
                reply.attachment.content,
                reply.attachment.filename,
                as_html(caption[0]) if fits else None,
                reply.buttons if fits else (),
                link if fits else None,
            )
            self._sent()
            if fits:
                return
        pieces = split_text(text)
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1
            if last:
                await bot.send_message(chat_id, as_html(piece), reply.buttons, link)
            else:
                await bot.send_message(chat_id, as_html(piece), ())
            self._sent()

    def _sent(self) -> None:
        self.metrics.sent(self.platform, "ok")
        self.token_ok = True  # a call went through: the token works (again)

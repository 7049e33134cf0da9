"""A Telegram Bot API server for tests: real HTTP on 127.0.0.1, Telegram's wire format, no Telegram.

The Telegram adapter is pointed at ``emulator.url`` (PTB: ``ApplicationBuilder().base_url(f"{url}/bot")``)
and talks to it as it would to ``api.telegram.org``: from the same process or from a ``yibao run``
subprocess. Tests play the people (``emulator.user(42).says("/balance")``) and read what the bot sent
(``user.wait_for("余额")``); ``fail_next`` scripts Telegram's refusals (429 with ``retry_after``, 403
for a blocked bot).

What is emulated, and how faithfully:

- ``/bot<token>/<method>``, GET or POST, parameters in the query string, a JSON body, a form
  (``application/x-www-form-urlencoded``) or ``multipart/form-data`` (file uploads); answers
  ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N, "description": "...",
  "parameters": {"retry_after": N}}``. A wrong token is 401 "Unauthorized", an unknown method 404.
- Updates by long polling (``getUpdates`` with ``offset``, ``limit``, ``timeout``,
  ``allowed_updates``) or by webhook (``setWebhook`` with a secret token, sent back in
  ``X-Telegram-Bot-Api-Secret-Token``). As on Telegram, a new ``getUpdates`` terminates one still
  waiting with 409, and ``getUpdates`` is 409 while a webhook is set.
- Text is checked as Telegram checks it: HTML parse mode parsed like TDLib does (the same tags, the
  same error texts with UTF-8 byte offsets), the length counted after parsing in UTF-16 code units,
  leading and trailing white space trimmed; inline buttons' ``callback_data`` 1-64 bytes, a
  ``web_app`` button's (and the menu button's, ``setChatMenuButton``/``getChatMenuButton``) URL
  https only. One thing
  is stricter than Telegram unless ``strict_html=False``: a ``&`` that does not start ``&lt;``,
  ``&gt;``, ``&amp;``, ``&quot;`` or a numeric reference (``&#...;``) is refused, where Telegram
  would show it as text, because in a bot's output it almost always means text was not escaped.
- A private chat per user, ``message_id`` counting up in it for both sides, as on Telegram. A bot
  cannot write to a user who never wrote to it (403), nor to a user who blocked it
  (``user.blocked = True``: 403 "bot was blocked by the user"), nor to an unknown chat (400).
- Markdown parse modes are accepted but not parsed (the text is kept as sent).

Blocking calls (``wait_for``, ``wait_count``, and ``says``/``presses``/``post_update`` while a
webhook is set, which POST to it and wait for the answer) must not run on the event loop that runs
the bot: from a coroutine there, use ``await asyncio.to_thread(user.wait_for, "...")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from email.message import Message as MimeHeaders
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

__all__ = [
    "SECRET_HEADER",
    "BotApiEmulator",
    "Call",
    "FakeUser",
    "HtmlError",
    "LoopbackServer",
    "Sent",
    "Upload",
    "WebhookInfo",
    "parse_html",
    "utf16_len",
]

log = logging.getLogger(__name__)

JSON = dict[str, Any]

SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"
MESSAGE_LIMIT: Final = 4096
CAPTION_LIMIT: Final = 1024
CALLBACK_DATA_LIMIT: Final = 64

TERMINATED: Final = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
)
WEBHOOK_ACTIVE: Final = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
BLOCKED: Final = "Forbidden: bot was blocked by the user"
NOT_STARTED: Final = "Forbidden: bot can't initiate conversation with a user"
QUERY_INVALID: Final = "Bad Request: query is too old and response timeout expired or query ID is invalid"
NOT_MODIFIED: Final = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)

_DEFAULT_DESCRIPTIONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: BLOCKED,
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
}
_DEFAULT_ALLOWED: Final = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
_CHAT_ACTIONS: Final = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_SCOPES: Final = frozenset(
    {
        "default",
        "all_private_chats",
        "all_group_chats",
        "all_chat_administrators",
        "chat",
        "chat_administrators",
        "chat_member",
    }
)
_INLINE_ACTIONS: Final = (
    "callback_data",
    "url",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)

# Form and query values are all strings; these are decoded before a method sees them.
_INT_FIELDS: Final = frozenset(
    {
        "chat_id",
        "message_id",
        "offset",
        "limit",
        "timeout",
        "max_connections",
        "cache_time",
        "reply_to_message_id",
        "message_thread_id",
        "user_id",
    }
)
_BOOL_FIELDS: Final = frozenset(
    {
        "drop_pending_updates",
        "show_alert",
        "disable_notification",
        "protect_content",
        "disable_web_page_preview",
        "allow_sending_without_reply",
        "allow_paid_broadcast",
        "has_spoiler",
        "show_caption_above_media",
    }
)
_JSON_FIELDS: Final = frozenset(
    {
        "reply_markup",
        "commands",
        "scope",
        "allowed_updates",
        "link_preview_options",
        "entities",
        "caption_entities",
        "reply_parameters",
        "message_ids",
        "menu_button",
    }
)


# -- what tests see ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request."""

    filename: str
    content: bytes
    content_type: str | None = None


@dataclass(frozen=True)
class Call:
    """One request to the Bot API.

    ``params`` are what the request carried, numbers, booleans and JSON-serialised fields
    (``reply_markup``, ``commands``, ``allowed_updates``...) decoded; an uploaded file is an
    :class:`Upload`. ``at`` is ``time.monotonic()`` when the request arrived; calls are listed in
    the order they were answered (a long poll is listed when it returns). ``status`` is the HTTP
    status answered, or 499 for a long poll terminated (409) after its client had gone, as PTB's
    does when it stops. ``encoding`` is how the parameters came: ``"query"``, ``"json"``,
    ``"form"`` or ``"multipart"``.
    """

    method: str
    params: JSON
    at: float
    status: int
    encoding: str = "query"


@dataclass(frozen=True)
class Sent:
    """A message the bot sent to a chat, as it stands now (an edit replaces it, ``edits`` counts up).

    ``text`` is what the person reads (entities resolved, trimmed; ``""`` for a photo) and
    ``raw_text`` what the bot sent; a photo's caption likewise in ``caption``/``raw_caption``.
    """

    message_id: int
    text: str
    parse_mode: str | None
    reply_markup: JSON | None
    photo: bytes | None = None
    caption: str | None = None
    raw_text: str = ""
    raw_caption: str | None = None
    entities: tuple[JSON, ...] = ()
    edits: int = 0

    @property
    def buttons(self) -> list[tuple[str, str]]:
        """The inline buttons, row by row, as ``(label, callback_data or url or the web_app's url)``."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [
            (
                str(b.get("text", "")),
                str(b.get("callback_data", b.get("url", (b.get("web_app") or {}).get("url", "")))),
            )
            for row in rows
            for b in row
        ]

    def shows(self, needle: str) -> bool:
        return needle in self.text or needle in (self.caption or "")


@dataclass(frozen=True)
class WebhookInfo:
    url: str
    secret_token: str | None
    allowed_updates: tuple[str, ...] | None
    max_connections: int = 40


class ApiError(Exception):
    """A Bot API refusal: answered as ``{"ok": false, ...}`` with ``status`` as the HTTP status."""

    def __init__(self, status: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def body(self) -> JSON:
        out: JSON = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            out["parameters"] = {"retry_after": self.retry_after}
        return out


class FakeUser:
    """A person in a private chat with the bot. Made by :meth:`BotApiEmulator.user`."""

    def __init__(
        self,
        emulator: BotApiEmulator,
        user_id: int,
        *,
        first_name: str,
        language_code: str | None,
        username: str | None = None,
    ) -> None:
        self.id = user_id
        self.first_name = first_name
        self.language_code = language_code
        self.username = username
        self.blocked = False
        """Set it to make every send to this chat answer 403 "bot was blocked by the user"."""
        self.started = False
        """Whether the user wrote to the bot yet; until then the bot may not write (403)."""
        self._emulator = emulator
        self._last_message_id = 0
        self._messages: dict[int, JSON] = {}  # the chat's messages still there, both sides
        self._from_bot: set[int] = set()
        self._inbox: list[Sent] = []
        self._deleted: set[int] = set()
        self._answered: list[str] = []

    def __repr__(self) -> str:
        return f"FakeUser({self.id}, {self.first_name!r})"

    # -- doing -------------------------------------------------------------------------------------

    def says(self, text: str) -> int:
        """Send the bot a message (``/commands`` carry ``bot_command`` entities); returns its message_id."""
        return self._emulator._user_says(self, text)

    def shares_location(self, latitude: float, longitude: float) -> int:
        """Send the bot a location (a Message with ``location`` and no ``text``); its message_id."""
        return self._emulator._user_says(self, "", location={"latitude": latitude, "longitude": longitude})

    def presses(self, callback_data: str, message_id: int, *, require_button: bool = True) -> str:
        """Press an inline button of one of the bot's messages; returns the callback query id.

        The message must still be there and show a button with that ``callback_data``, as a real
        person can press no other; ``require_button=False`` sends the press anyway (a stale tap).
        """
        return self._emulator._user_presses(self, callback_data, message_id, require_button)

    # -- seeing ------------------------------------------------------------------------------------

    @property
    def inbox(self) -> list[Sent]:
        """What the bot sent to this chat, in order (deleted messages stay listed)."""
        with self._emulator._lock:
            return list(self._inbox)

    @property
    def deleted(self) -> set[int]:
        """Message ids in this chat the bot deleted (the user's, or its own)."""
        with self._emulator._lock:
            return set(self._deleted)

    @property
    def answered_callbacks(self) -> list[str]:
        """Callback query ids the bot answered, in order."""
        with self._emulator._lock:
            return list(self._answered)

    def wait_for(
        self, needle: str | Callable[[Sent], bool], timeout: float = 10.0, *, after: int = 0
    ) -> Sent:
        """The first message from index ``after`` of the inbox that shows ``needle`` (in its text or
        caption) or satisfies it; waits up to ``timeout`` seconds, then fails with the inbox."""
        match: Callable[[Sent], bool] = _shows(needle) if isinstance(needle, str) else needle
        found: list[Sent] = []

        def arrived() -> bool:
            found[:] = [s for s in self._inbox[after:] if match(s)][:1]
            return bool(found)

        with self._emulator._changed:
            if self._emulator._changed.wait_for(arrived, timeout):
                return found[0]
            inbox = list(self._inbox)
        raise AssertionError(
            f"tg:{self.id} got no message matching {needle!r} (from index {after}) within {timeout} s"
            f"{_blocking_hint()}\n{_describe(inbox)}"
        )

    def wait_count(self, n: int, timeout: float = 10.0) -> list[Sent]:
        """The inbox, once it holds at least ``n`` messages."""
        with self._emulator._changed:
            if self._emulator._changed.wait_for(lambda: len(self._inbox) >= n, timeout):
                return list(self._inbox)
            inbox = list(self._inbox)
        raise AssertionError(
            f"tg:{self.id} got {len(inbox)} messages, not {n}, within {timeout} s{_blocking_hint()}\n"
            f"{_describe(inbox)}"
        )

    # -- wire objects --------------------------------------------------------------------------------

    def _user_json(self) -> JSON:
        out: JSON = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.username:
            out["username"] = self.username
        if self.language_code:
            out["language_code"] = self.language_code
        return out

    def _chat_json(self) -> JSON:
        out: JSON = {"id": self.id, "type": "private", "first_name": self.first_name}
        if self.username:
            out["username"] = self.username
        return out

    def _next_message_id(self) -> int:
        self._last_message_id += 1
        return self._last_message_id


def _shows(needle: str) -> Callable[[Sent], bool]:
    return lambda sent: sent.shows(needle)


def _describe(inbox: list[Sent]) -> str:
    if not inbox:
        return "inbox: (empty)"
    lines = ["inbox:"]
    for i, s in enumerate(inbox):
        shown = s.text if s.photo is None and s.caption is None else f"[photo] {s.caption or ''}"
        extra = f" buttons={s.buttons}" if s.buttons else ""
        lines.append(f"  [{i}] #{s.message_id}: {shown!r}{extra}")
    return "\n".join(lines)


def _blocking_hint() -> str:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return ""
    return (
        " (called on a running event loop: if the bot runs on that loop too it could not answer;"
        " use await asyncio.to_thread(...))"
    )


# -- the server ----------------------------------------------------------------------------------------


class LoopbackServer:
    """An ASGI app served by uvicorn on 127.0.0.1 at a free port, on its own thread and event loop."""

    def __init__(self, app: ASGIApp, *, name: str = "loopback-server") -> None:
        self.app = app
        self.name = name
        self.url = ""
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already started")
        # proto=IPPROTO_TCP, or asyncio leaves Nagle on for the accepted connections (40 ms a request).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=2
        )
        server = self._server = uvicorn.Server(config)

        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            await server.serve(sockets=[sock])

        def run() -> None:
            try:
                asyncio.run(serve())
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.005)

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the server's loop (from any thread); a stopped server ignores it."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback)

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s did not stop within %s s", self.name, timeout)
        self._thread = None


@dataclass
class _Failure:
    method: str
    status: int
    description: str
    retry_after: int | None
    remaining: int
    chat_id: int | None


@dataclass
class _Query:
    user_id: int
    answered: bool = False


@dataclass
class _Described:
    """A result Telegram answers with a ``description`` beside it (``setWebhook``...)."""

    result: Any
    description: str


_REGISTERED: Final[Any] = object()

Method = Callable[[JSON], Awaitable[Any]]


class BotApiEmulator:
    """One bot's Bot API on loopback. ``with BotApiEmulator() as api: ...`` or ``start()``/``stop()``."""

    def __init__(
        self,
        token: str = "123456:AAE-emulator-token-0123456789abcdefghij",
        *,
        username: str = "yibao_test_bot",
        first_name: str = "Yibao Test",
        strict_html: bool = True,
    ) -> None:
        bot_id, sep, _ = token.partition(":")
        if not sep or not bot_id.isdigit():
            raise ValueError("a bot token looks like '123456:secret'")
        self.token = token
        self.username = username
        self.bot_id = int(bot_id)
        self.first_name = first_name
        self.strict_html = strict_html
        self.webhook: WebhookInfo | None = None
        """What ``setWebhook`` registered; ``None`` when updates go to ``getUpdates``."""

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._users: dict[int, FakeUser] = {}
        self._calls: list[Call] = []
        self._failures: list[_Failure] = []
        self._updates: list[JSON] = []  # not yet confirmed by getUpdates
        self._last_update_id = 100_000
        self._allowed_updates: frozenset[str] = frozenset(_DEFAULT_ALLOWED)
        self._callbacks: dict[str, _Query] = {}
        self._files: dict[str, bytes | None] = {}
        self._commands: dict[tuple[str, str], list[JSON]] = {}
        self._menu_buttons: dict[int | None, JSON] = {}
        self._poller: object | None = None
        self._poll_wakeup: asyncio.Future[None] | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()

        methods: list[tuple[str, Method]] = [
            ("getMe", self._get_me),
            ("getUpdates", self._get_updates),
            ("setWebhook", self._set_webhook),
            ("deleteWebhook", self._delete_webhook),
            ("getWebhookInfo", self._get_webhook_info),
            ("setMyCommands", self._set_my_commands),
            ("getMyCommands", self._get_my_commands),
            ("deleteMyCommands", self._delete_my_commands),
            ("setChatMenuButton", self._set_chat_menu_button),
            ("getChatMenuButton", self._get_chat_menu_button),
            ("sendMessage", self._send_message),
            ("sendPhoto", self._send_photo),
            ("deleteMessage", self._delete_message),
            ("answerCallbackQuery", self._answer_callback_query),
            ("editMessageText", self._edit_message_text),
            ("editMessageReplyMarkup", self._edit_message_reply_markup),
            ("sendChatAction", self._send_chat_action),
            ("close", self._true),
            ("logOut", self._true),
        ]
        self._methods = {name.lower(): (name, fn) for name, fn in methods}
        app = Starlette(
            routes=[
                Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"]),
                Route("/{rest:path}", self._not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
            ]
        )
        self._server = LoopbackServer(app, name="botapi-emulator")

    # -- life ----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the adapter's ``api_base_url`` (empty until started)."""
        return self._server.url

    def start(self) -> None:
        with self._lock:
            self._closing = False
        self._server.start()

    def stop(self) -> None:
        with self._lock:
            self._closing = True
        self._server.call_soon(self._wake_poller)
        self._server.stop()

    def __enter__(self) -> BotApiEmulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- test controls -------------------------------------------------------------------------------

    def user(
        self, user_id: int, *, first_name: str = "测试用户", language_code: str | None = "zh-hans"
    ) -> FakeUser:
        """The user with this id (made on first use; later calls return the same one)."""
        with self._lock:
            user = self._users.get(user_id)
            if user is None:
                user = self._users[user_id] = FakeUser(
                    self, user_id, first_name=first_name, language_code=language_code
                )
            return user

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        name = method.lower()
        with self._lock:
            return [c for c in self._calls if c.method.lower() == name]

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int = 1,
        description: str | None = None,
        count: int = 1,
        chat_id: int | None = None,
    ) -> None:
        """Answer the next ``count`` calls to ``method`` (only those for ``chat_id``, if given) with
        an error, before looking at them. A 429 carries ``parameters.retry_after``."""
        if description is None:
            if status == 429:
                description = f"Too Many Requests: retry after {retry_after}"
            else:
                description = _DEFAULT_DESCRIPTIONS.get(status, f"Error {status}")
        with self._lock:
            self._failures.append(
                _Failure(
                    method=method.lower(),
                    status=status,
                    description=description,
                    retry_after=retry_after if status == 429 else None,
                    remaining=count,
                    chat_id=chat_id,
                )
            )

    def commands(self, language_code: str | None = None, *, scope: JSON | None = None) -> list[JSON]:
        """What ``setMyCommands`` stored for exactly this language (and scope, default: default)."""
        with self._lock:
            stored = self._commands.get((_scope_key(scope), language_code or ""), [])
            return [dict(c) for c in stored]

    def menu_button(self, chat_id: int | None = None) -> JSON:
        """The menu button a private chat shows (``setChatMenuButton`` for it, else the default)."""
        with self._lock:
            found = self._menu_buttons.get(chat_id) or self._menu_buttons.get(None)
            return dict(found) if found else {"type": "default"}

    @property
    def pending_updates(self) -> list[JSON]:
        """Updates ``getUpdates`` has not had confirmed yet."""
        with self._lock:
            return list(self._updates)

    def post_update(self, update: JSON, *, secret: str | None = _REGISTERED, url: str | None = None) -> int:
        """POST one update to the webhook (or to ``url``) as Telegram would; returns the HTTP status.

        ``secret`` goes in ``X-Telegram-Bot-Api-Secret-Token``: by default the registered one,
        ``None`` for no header. An update without ``update_id`` gets the next one.
        """
        with self._lock:
            hook = self.webhook
            if "update_id" not in update:
                update = {"update_id": self._next_update_id(), **update}
        if url is None:
            if hook is None:
                raise RuntimeError("no webhook is set: pass url=")
            url = hook.url
        if secret is _REGISTERED:
            secret = hook.secret_token if hook is not None else None
        return self._post_sync(url, update, secret).status_code

    # -- people's side -------------------------------------------------------------------------------

    def _next_update_id(self) -> int:
        self._last_update_id += 1
        return self._last_update_id

    def _user_says(self, user: FakeUser, text: str, location: JSON | None = None) -> int:
        with self._lock:
            message_id = user._next_message_id()
            message: JSON = {
                "message_id": message_id,
                "from": user._user_json(),
                "chat": user._chat_json(),
                "date": int(time.time()),
            }
            if location is not None:  # a Location message carries no text
                message["location"] = location
            else:
                message["text"] = text
            commands = _bot_command_entities(text)
            if commands:
                message["entities"] = commands
            user._messages[message_id] = message
            user.started = True
            update = {"update_id": self._next_update_id(), "message": message}
        self._deliver(update)
        return message_id

    def _user_presses(self, user: FakeUser, callback_data: str, message_id: int, require_button: bool) -> str:
        with self._lock:
            message = user._messages.get(message_id)
            if require_button:
                if message is None or message_id not in user._from_bot:
                    raise AssertionError(
                        f"tg:{user.id} has no message #{message_id} from the bot to press on"
                    )
                rows = message.get("reply_markup", {}).get("inline_keyboard", [])
                offered = [b.get("callback_data") for row in rows for b in row]
                if callback_data not in offered:
                    raise AssertionError(
                        f"message #{message_id} offers no button {callback_data!r}; its buttons: {offered}"
                    )
            query_id = str(secrets.randbelow(9 * 10**18) + 10**18)
            self._callbacks[query_id] = _Query(user.id)
            query: JSON = {
                "id": query_id,
                "from": user._user_json(),
                "chat_instance": str(-(user.id * 7919 + self.bot_id)),
                "data": callback_data,
            }
            if message is not None:
                query["message"] = json.loads(json.dumps(message))
            user.started = True
            update = {"update_id": self._next_update_id(), "callback_query": query}
        self._deliver(update)
        return query_id

    def _deliver(self, update: JSON) -> None:
        """Queue the update for getUpdates, or POST it to the webhook and wait for the answer."""
        with self._lock:
            hook = self.webhook
            if hook is None:
                self._updates.append(update)
        if hook is None:
            self._server.call_soon(self._wake_poller)
            return
        if _update_type(update) not in self._allowed_updates:
            return
        try:
            response = self._post_sync(hook.url, update, hook.secret_token)
        except httpx.HTTPError as e:
            raise AssertionError(
                f"the webhook at {hook.url} could not be reached: {e!r}{_blocking_hint()}"
            ) from e
        if not 200 <= response.status_code < 300:
            raise AssertionError(
                f"the webhook at {hook.url} answered {response.status_code}: {response.text[:300]!r}"
            )

    @staticmethod
    def _post_sync(url: str, update: JSON, secret: str | None) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[SECRET_HEADER] = secret
        body = json.dumps(update, ensure_ascii=False).encode()
        return httpx.post(url, content=body, headers=headers, timeout=30.0, trust_env=False)

    # -- HTTP ----------------------------------------------------------------------------------------

    async def _not_found(self, request: Request) -> JSONResponse:
        return JSONResponse(ApiError(404, "Not Found").body(), status_code=404)

    async def _endpoint(self, request: Request) -> JSONResponse:
        at = time.monotonic()
        token = request.path_params["token"]
        given_name = request.path_params["method"]
        name, method = self._methods.get(given_name.lower(), (given_name, None))
        params: JSON = {}
        encoding = "query"
        try:
            raw, encoding = await _read_params(request)
            params = raw
            params = _decode_params(raw)
            if token != self.token:
                raise ApiError(401, "Unauthorized")
            if method is None:
                raise ApiError(404, "Not Found")
            scripted = self._scripted_failure(name, params)
            if scripted is not None:
                raise scripted
            result = await method(params)
        except ApiError as e:
            status, body = e.status, e.body()
        else:
            status = 200
            if isinstance(result, _Described):
                body = {"ok": True, "result": result.result, "description": result.description}
            else:
                body = {"ok": True, "result": result}
        if status == 409 and await request.is_disconnected():
            status = 499  # nobody heard it: the client gave up on this long poll (nginx's code)
        with self._changed:
            self._calls.append(Call(name, params, at, status, encoding))
            self._changed.notify_all()
        if status >= 400:
            log.debug("%s -> %s %s", name, status, body.get("description"))
        return JSONResponse(body, status_code=status)

    def _scripted_failure(self, name: str, params: JSON) -> ApiError | None:
        with self._lock:
            for failure in self._failures:
                if failure.method != name.lower():
                    continue
                if failure.chat_id is not None and params.get("chat_id") != failure.chat_id:
                    continue
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return ApiError(failure.status, failure.description, retry_after=failure.retry_after)
        return None

    # -- chats ---------------------------------------------------------------------------------------

    def _chat(self, params: JSON) -> FakeUser:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise ApiError(400, "Bad Request: chat_id is empty")
        user = self._users.get(chat_id) if isinstance(chat_id, int) else None
        if user is None:
            raise ApiError(400, "Bad Request: chat not found")
        return user

    def _writable_chat(self, params: JSON) -> FakeUser:
        user = self._chat(params)
        if user.blocked:
            raise ApiError(403, BLOCKED)
        if not user.started:
            raise ApiError(403, NOT_STARTED)
        return user

    def _bot_json(self) -> JSON:
        return {"id": self.bot_id, "is_bot": True, "first_name": self.first_name, "username": self.username}

    def _new_message(self, user: FakeUser, content: JSON) -> JSON:
        message_id = user._next_message_id()
        message: JSON = {
            "message_id": message_id,
            "from": self._bot_json(),
            "chat": user._chat_json(),
            "date": int(time.time()),
        }
        message.update({k: v for k, v in content.items() if v is not None and v != []})
        user._messages[message_id] = message
        user._from_bot.add(message_id)
        return message

    def _own_message(self, user: FakeUser, params: JSON, verb: str) -> JSON:
        if params.get("inline_message_id"):
            raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
        message_id = params.get("message_id")
        if not isinstance(message_id, int):
            raise ApiError(400, "Bad Request: message identifier is not specified")
        message = user._messages.get(message_id)
        if message is None:
            raise ApiError(400, f"Bad Request: message to {verb} not found")
        if message_id not in user._from_bot:
            raise ApiError(400, "Bad Request: message can't be edited")
        return message

    def _replace_sent(self, user: FakeUser, message_id: int, **changes: Any) -> None:
        for i, sent in enumerate(user._inbox):
            if sent.message_id == message_id:
                user._inbox[i] = replace(sent, edits=sent.edits + 1, **changes)
                return

    def _formatted(
        self, raw: object, parse_mode: object, *, limit: int, too_long: str, empty: str | None
    ) -> tuple[str, list[JSON]]:
        """Text as Telegram stores it: parsed (HTML), trimmed, checked for length in UTF-16 units."""
        text = "" if raw is None else str(raw)
        mode = str(parse_mode or "")
        if mode == "HTML":
            try:
                text, entities = parse_html(text, strict=self.strict_html)
            except HtmlError as e:
                raise ApiError(400, f"Bad Request: can't parse entities: {e}") from None
        elif mode in ("", "Markdown", "MarkdownV2"):
            text, entities = _trim(text, [])
        else:
            raise ApiError(400, f"Bad Request: unsupported parse_mode {mode!r}")
        if not text and empty is not None:
            raise ApiError(400, f"Bad Request: {empty}")
        if utf16_len(text) > limit:
            raise ApiError(400, f"Bad Request: {too_long}")
        return text, entities

    # -- methods -------------------------------------------------------------------------------------

    async def _true(self, params: JSON) -> bool:
        return True

    async def _get_me(self, params: JSON) -> JSON:
        return {
            **self._bot_json(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, params: JSON) -> list[JSON]:
        offset = _int_param(params, "offset", 0)
        limit = min(max(_int_param(params, "limit", 100), 1), 100)
        timeout = max(_int_param(params, "timeout", 0), 0)
        allowed = params.get("allowed_updates")
        me = object()
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.webhook is not None:
                raise ApiError(409, WEBHOOK_ACTIVE)
            if allowed is not None:
                self._allowed_updates = _allowed_updates(allowed)
            if offset > 0:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            elif offset < 0:
                self._updates = self._updates[offset:]
            self._poller = me  # a getUpdates still waiting is answered 409, as Telegram does
        self._wake_poller()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._poller is not me:
                    raise ApiError(409, TERMINATED)
                if self.webhook is not None:
                    raise ApiError(409, WEBHOOK_ACTIVE)
                ready = [u for u in self._updates if _update_type(u) in self._allowed_updates][:limit]
                left = deadline - time.monotonic()
                if ready or left <= 0 or self._closing:
                    self._poller = None
                    return [json.loads(json.dumps(u)) for u in ready]
                wakeup = self._poll_wakeup = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup, left)

    def _wake_poller(self) -> None:
        """On the server's loop: make a waiting getUpdates look again."""
        wakeup = self._poll_wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _set_webhook(self, params: JSON) -> _Described:
        url = str(params.get("url") or "")
        if not url:
            return await self._delete_webhook(params)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(400, "Bad Request: bad webhook: invalid webhook URL specified")
        secret = params.get("secret_token")
        if secret is not None:
            secret = str(secret)
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
                raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        max_connections = _int_param(params, "max_connections", 40)
        if not 1 <= max_connections <= 100:
            raise ApiError(400, "Bad Request: bad webhook: max_connections must be between 1 and 100")
        allowed = params.get("allowed_updates")
        with self._lock:
            if allowed is not None:
                self._allowed_updates = _allowed_updates(allowed)
            if params.get("drop_pending_updates"):
                self._updates.clear()
            hook = self.webhook = WebhookInfo(
                url=url,
                secret_token=secret,
                allowed_updates=tuple(sorted(self._allowed_updates)) if allowed is not None else None,
                max_connections=max_connections,
            )
            pending = bool(self._updates)
        self._wake_poller()  # a waiting getUpdates now answers 409
        if pending:  # Telegram delivers what getUpdates left behind to the new webhook
            task = asyncio.get_running_loop().create_task(self._flush_to(hook))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return _Described(True, "Webhook was set")

    async def _flush_to(self, hook: WebhookInfo) -> None:
        async with httpx.AsyncClient(timeout=30.0, trust_env=False) as client:
            while True:
                with self._lock:
                    if self.webhook is not hook or self._closing or not self._updates:
                        return
                    update = self._updates[0]
                if _update_type(update) in self._allowed_updates:
                    headers = {"Content-Type": "application/json"}
                    if hook.secret_token is not None:
                        headers[SECRET_HEADER] = hook.secret_token
                    try:
                        response = await client.post(
                            hook.url, content=json.dumps(update).encode(), headers=headers
                        )
                    except httpx.HTTPError as e:
                        log.warning(
                            "pending update %s not delivered to %s: %r", update["update_id"], hook.url, e
                        )
                        return
                    if not 200 <= response.status_code < 300:
                        log.warning("the webhook answered %s to a pending update", response.status_code)
                        return
                with self._lock:
                    if self._updates and self._updates[0] is update:
                        self._updates.pop(0)

    async def _delete_webhook(self, params: JSON) -> _Described:
        with self._lock:
            had = self.webhook is not None
            self.webhook = None
            if params.get("drop_pending_updates"):
                self._updates.clear()
        return _Described(True, "Webhook was deleted" if had else "Webhook is already deleted")

    async def _get_webhook_info(self, params: JSON) -> JSON:
        with self._lock:
            hook = self.webhook
            info: JSON = {
                "url": "",
                "has_custom_certificate": False,
                "pending_update_count": len(self._updates),
            }
            if hook is not None:
                info.update(url=hook.url, max_connections=hook.max_connections, ip_address="127.0.0.1")
                if hook.allowed_updates is not None:
                    info["allowed_updates"] = list(hook.allowed_updates)
            return info

    def _commands_key(self, params: JSON) -> tuple[str, str]:
        scope = params.get("scope")
        if scope is not None and (not isinstance(scope, dict) or scope.get("type") not in _SCOPES):
            raise ApiError(400, "Bad Request: unsupported bot command scope type specified")
        if scope is not None and scope.get("type") in ("chat", "chat_administrators", "chat_member"):
            self._chat(scope)
        language_code = str(params.get("language_code") or "")
        if language_code and not re.fullmatch(r"[a-z]{2}", language_code):
            raise ApiError(400, "Bad Request: invalid language code specified")
        return _scope_key(scope), language_code

    async def _set_my_commands(self, params: JSON) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise ApiError(400, 'Bad Request: parameter "commands" is required')
        if len(commands) > 100:
            raise ApiError(400, "Bad Request: too many commands specified")
        stored: list[JSON] = []
        for command in commands:
            if not isinstance(command, dict):
                raise ApiError(400, "Bad Request: BotCommand must be an Object")
            name, description = command.get("command"), command.get("description")
            if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]{1,32}", name):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description.strip()) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
            stored.append({"command": name, "description": description})
        with self._lock:
            key = self._commands_key(params)
            if stored:
                self._commands[key] = stored
            else:
                self._commands.pop(key, None)
        return True

    async def _get_my_commands(self, params: JSON) -> list[JSON]:
        with self._lock:
            return [dict(c) for c in self._commands.get(self._commands_key(params), [])]

    async def _delete_my_commands(self, params: JSON) -> bool:
        with self._lock:
            self._commands.pop(self._commands_key(params), None)
        return True

    async def _set_chat_menu_button(self, params: JSON) -> bool:
        """``chat_id`` (a private chat) or none (the default for every chat); ``menu_button`` a
        MenuButton: ``commands``, ``default`` or ``web_app`` (``text``, ``web_app.url``: https only)."""
        button = params.get("menu_button", {"type": "default"})
        if not isinstance(button, dict):
            raise ApiError(400, "Bad Request: can't parse menu button: MenuButton must be an Object")
        kind = button.get("type")
        if kind == "web_app":
            text = button.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ApiError(400, "Bad Request: can't parse menu button: text must be non-empty")
            _check_web_app(button.get("web_app"), "menu button")
            stored: JSON = {"type": "web_app", "text": text, "web_app": {"url": button["web_app"]["url"]}}
        elif kind in ("commands", "default"):
            stored = {"type": kind}
        else:
            raise ApiError(400, "Bad Request: can't parse menu button: unsupported menu button type")
        with self._lock:
            chat_id = params.get("chat_id")
            if chat_id is not None:
                self._chat(params)
                chat_id = int(chat_id)
            self._menu_buttons[chat_id] = stored
        return True

    async def _get_chat_menu_button(self, params: JSON) -> JSON:
        chat_id = params.get("chat_id")
        with self._lock:
            if chat_id is not None:
                self._chat(params)
        return self.menu_button(int(chat_id) if chat_id is not None else None)

    async def _send_message(self, params: JSON) -> JSON:
        markup = _inline_markup(params.get("reply_markup"))
        if params.get("text") in (None, ""):
            raise ApiError(400, "Bad Request: message text is empty")
        with self._changed:
            user = self._writable_chat(params)
            text, entities = self._formatted(
                params.get("text"),
                params.get("parse_mode"),
                limit=MESSAGE_LIMIT,
                too_long="message is too long",
                empty="message text is empty",
            )
            content: JSON = {"text": text, "entities": entities, "reply_markup": markup}
            preview = params.get("link_preview_options")
            if isinstance(preview, dict) and preview:
                content["link_preview_options"] = preview
            message = self._new_message(user, content)
            user._inbox.append(
                Sent(
                    message_id=message["message_id"],
                    text=text,
                    parse_mode=_mode(params),
                    reply_markup=markup,
                    raw_text=str(params.get("text")),
                    entities=tuple(entities),
                )
            )
            self._changed.notify_all()
            return message

    async def _send_photo(self, params: JSON) -> JSON:
        markup = _inline_markup(params.get("reply_markup"))
        photo = params.get("photo")
        if isinstance(photo, str) and photo.startswith("attach://"):
            # "attach://<name>": the file is the multipart part of that name (the Bot API's way to
            # reference an upload, accepted for any file parameter; aiogram always sends files so).
            photo = params.get(photo.removeprefix("attach://"))
            if not isinstance(photo, Upload):
                raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        with self._changed:
            user = self._writable_chat(params)
            if isinstance(photo, Upload):
                content: bytes | None = photo.content
                if not photo.content:
                    raise ApiError(400, "Bad Request: file must be non-empty")
                size = image_size(photo.content)
                if size is None:
                    raise ApiError(400, "Bad Request: IMAGE_PROCESS_FAILED")
                width, height = size
                if width + height > 10_000 or max(width, height) > 20 * max(min(width, height), 1):
                    raise ApiError(400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
                file_id = "AgACAgUAAxkDAAI" + secrets.token_urlsafe(24)
                self._files[file_id] = content
            elif isinstance(photo, str) and photo:
                if photo in self._files:
                    file_id, content = photo, self._files[photo]
                elif photo.startswith(("http://", "https://")):
                    file_id, content = "AgACAgUAAxkDAAI" + secrets.token_urlsafe(24), None
                    self._files[file_id] = None
                else:
                    raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
                width, height = (image_size(content) if content else None) or (1280, 960)
            else:
                raise ApiError(400, "Bad Request: there is no photo in the request")
            caption: str | None = None
            entities: list[JSON] = []
            if params.get("caption") not in (None, ""):
                caption, entities = self._formatted(
                    params.get("caption"),
                    params.get("parse_mode"),
                    limit=CAPTION_LIMIT,
                    too_long="message caption is too long",
                    empty=None,
                )
            sizes = [
                {
                    "file_id": file_id,
                    "file_unique_id": "AQAD" + file_id[-12:],
                    "file_size": len(content) if content else 0,
                    "width": width,
                    "height": height,
                }
            ]
            message = self._new_message(
                user,
                {
                    "photo": sizes,
                    "caption": caption or None,
                    "caption_entities": entities,
                    "reply_markup": markup,
                },
            )
            user._inbox.append(
                Sent(
                    message_id=message["message_id"],
                    text="",
                    parse_mode=_mode(params),
                    reply_markup=markup,
                    photo=content,
                    caption=caption or None,
                    raw_caption=None if params.get("caption") is None else str(params.get("caption")),
                    entities=tuple(entities),
                )
            )
            self._changed.notify_all()
            return message

    async def _delete_message(self, params: JSON) -> bool:
        with self._changed:
            user = self._chat(params)
            message_id = params.get("message_id")
            if not isinstance(message_id, int):
                raise ApiError(400, "Bad Request: message identifier is not specified")
            if user._messages.pop(message_id, None) is None:
                raise ApiError(400, "Bad Request: message to delete not found")
            user._deleted.add(message_id)
            self._changed.notify_all()
        return True

    async def _answer_callback_query(self, params: JSON) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        with self._changed:
            query = self._callbacks.get(query_id)
            if query is None or query.answered:
                raise ApiError(400, QUERY_INVALID)
            if len(str(params.get("text") or "")) > 200:
                raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
            query.answered = True
            self._users[query.user_id]._answered.append(query_id)
            self._changed.notify_all()
        return True

    async def _edit_message_text(self, params: JSON) -> JSON:
        markup = _inline_markup(params.get("reply_markup"))
        if params.get("text") in (None, ""):
            raise ApiError(400, "Bad Request: message text is empty")
        with self._changed:
            user = self._writable_chat(params)
            message = self._own_message(user, params, "edit")
            if "text" not in message:
                raise ApiError(400, "Bad Request: there is no text in the message to edit")
            text, entities = self._formatted(
                params.get("text"),
                params.get("parse_mode"),
                limit=MESSAGE_LIMIT,
                too_long="message is too long",
                empty="message text is empty",
            )
            if (
                message["text"] == text
                and message.get("entities", []) == entities
                and message.get("reply_markup") == markup
            ):
                raise ApiError(400, NOT_MODIFIED)
            message["text"] = text
            _set_or_drop(message, "entities", entities)
            _set_or_drop(message, "reply_markup", markup)
            message["edit_date"] = int(time.time())
            self._replace_sent(
                user,
                message["message_id"],
                text=text,
                entities=tuple(entities),
                reply_markup=markup,
                raw_text=str(params.get("text")),
                parse_mode=_mode(params),
            )
            self._changed.notify_all()
            return json.loads(json.dumps(message))  # type: ignore[no-any-return]

    async def _edit_message_reply_markup(self, params: JSON) -> JSON:
        markup = _inline_markup(params.get("reply_markup"))
        with self._changed:
            user = self._writable_chat(params)
            message = self._own_message(user, params, "edit")
            if message.get("reply_markup") == markup:
                raise ApiError(400, NOT_MODIFIED)
            _set_or_drop(message, "reply_markup", markup)
            message["edit_date"] = int(time.time())
            self._replace_sent(user, message["message_id"], reply_markup=markup)
            self._changed.notify_all()
            return json.loads(json.dumps(message))  # type: ignore[no-any-return]

    async def _send_chat_action(self, params: JSON) -> bool:
        with self._lock:
            self._writable_chat(params)
        if params.get("action") not in _CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        return True


# -- request decoding ------------------------------------------------------------------------------------


async def _read_params(request: Request) -> tuple[JSON, str]:
    params: JSON = dict(request.query_params)
    encoding = "query"
    body = await request.body() if request.method == "POST" else b""
    if not body:
        return params, encoding
    content_type = request.headers.get("content-type", "")
    mime = content_type.split(";")[0].strip().lower()
    if mime == "application/json":
        try:
            data = json.loads(body)
        except ValueError:
            raise ApiError(400, "Bad Request: can't parse JSON encoded request") from None
        if not isinstance(data, dict):
            raise ApiError(400, "Bad Request: JSON encoded request must be an Object")
        params.update(data)
        encoding = "json"
    elif mime == "application/x-www-form-urlencoded":
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        encoding = "form"
    elif mime == "multipart/form-data":
        params.update(_parse_multipart(body, content_type))
        encoding = "multipart"
    else:
        raise ApiError(400, f"Bad Request: unsupported Content-Type {mime!r}")
    return params, encoding


def _parse_multipart(body: bytes, content_type: str) -> JSON:
    header = MimeHeaders()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ApiError(400, "Bad Request: multipart/form-data without a boundary")
    out: JSON = {}
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            continue
        content = content.removesuffix(b"\r\n")
        part = MimeHeaders()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                part[key.strip()] = value.strip()
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        filename = part.get_filename()
        if filename is None:
            out[name] = content.decode("utf-8", "replace")
        else:
            out[name] = Upload(filename, content, part.get("content-type"))
    return out


def _decode_params(raw: JSON) -> JSON:
    out: JSON = {}
    for key, value in raw.items():
        if isinstance(value, str):
            if key in _INT_FIELDS and re.fullmatch(r"\s*-?\d+\s*", value):
                value = int(value)
            elif key in _BOOL_FIELDS:
                value = value.strip().lower() in ("true", "1")
            elif key in _JSON_FIELDS:
                if not value:
                    continue
                try:
                    value = json.loads(value)
                except ValueError:
                    what = "reply keyboard markup" if key == "reply_markup" else key
                    raise ApiError(400, f"Bad Request: can't parse {what} JSON object") from None
        out[key] = value
    return out


def _int_param(params: JSON, name: str, default: int) -> int:
    value = params.get(name, default)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    try:
        return int(float(str(value)))
    except ValueError:
        raise ApiError(400, f'Bad Request: field "{name}" must be of type Integer') from None


def _mode(params: JSON) -> str | None:
    mode = params.get("parse_mode")
    return str(mode) if mode else None


def _set_or_drop(message: JSON, key: str, value: object) -> None:
    if value is None or value == []:
        message.pop(key, None)
    else:
        message[key] = value


def _scope_key(scope: JSON | None) -> str:
    return json.dumps(scope or {"type": "default"}, sort_keys=True)


def _allowed_updates(value: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "Bad Request: allowed_updates must be an Array of String")
    return frozenset(value) if value else frozenset(_DEFAULT_ALLOWED)


def _update_type(update: JSON) -> str:
    return next((k for k in update if k != "update_id"), "")


def _inline_markup(markup: object) -> JSON | None:
    """The reply markup, checked as Telegram checks it; an empty inline keyboard is no markup."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in markup:
        if any(k in markup for k in ("keyboard", "remove_keyboard", "force_reply")):
            return markup
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ApiError(
            400,
            'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays',
        )
    for row in rows:
        for button in row:
            if not isinstance(button, dict):
                raise ApiError(
                    400,
                    "Bad Request: can't parse inline keyboard button: InlineKeyboardButton should be an Object",
                )
            if not isinstance(button.get("text"), str):
                raise ApiError(
                    400,
                    'Bad Request: can\'t parse inline keyboard button: Field "text" must be of type String',
                )
            if "callback_data" in button:
                data = button["callback_data"]
                if not isinstance(data, str) or not 1 <= len(data.encode()) <= CALLBACK_DATA_LIMIT:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
            elif "url" in button:
                url = urlsplit(str(button["url"]))
                if url.scheme not in ("http", "https", "tg") or not (url.netloc or url.scheme == "tg"):
                    raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")
            elif "web_app" in button:
                _check_web_app(button["web_app"], "inline keyboard button")
            elif not any(k in button for k in _INLINE_ACTIONS):
                raise ApiError(
                    400,
                    "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard",
                )
    if not any(rows):
        return None
    return markup


def _check_web_app(info: object, what: str) -> None:
    """A ``WebAppInfo``: an ``https`` URL (Telegram opens nothing else as a Mini App)."""
    if not isinstance(info, dict) or not isinstance(info.get("url"), str):
        raise ApiError(400, f"Bad Request: can't parse {what}: WebAppInfo must be an Object with a url")
    url = urlsplit(info["url"])
    if url.scheme != "https" or not url.netloc:
        raise ApiError(
            400, f"Bad Request: {what} Web App URL '{info['url']}' is invalid: Only HTTPS links are allowed"
        )


_COMMAND = re.compile(r"(?<![\w/<>])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/])")


def _bot_command_entities(text: str) -> list[JSON]:
    return [
        {"type": "bot_command", "offset": utf16_len(text[: m.start()]), "length": utf16_len(m.group())}
        for m in _COMMAND.finditer(text)
    ]


def image_size(content: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, JPEG or GIF, else ``None`` (Telegram: IMAGE_PROCESS_FAILED)."""
    if content.startswith(b"\x89PNG\r\n\x1a\n") and content[12:16] == b"IHDR" and len(content) >= 24:
        width, height = struct.unpack(">II", content[16:24])
        return int(width), int(height)
    if content[:6] in (b"GIF87a", b"GIF89a") and len(content) >= 10:
        width, height = struct.unpack("<HH", content[6:10])
        return int(width), int(height)
    if content.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(content):
            if content[i] != 0xFF:
                return None
            marker = content[i + 1]
            if marker == 0xFF:
                i += 1
                continue
            if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            (length,) = struct.unpack(">H", content[i + 2 : i + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", content[i + 5 : i + 9])
                return int(width), int(height)
            i += 2 + length
    return None


# -- text ------------------------------------------------------------------------------------------------


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


class HtmlError(ValueError):
    """HTML that Telegram would refuse; the message is TDLib's (``Unsupported start tag "x" at byte offset 3``)."""


_TAGS: Final = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)
_SIMPLE_TAGS: Final = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
}
_SPACE: Final = frozenset(" \t\r\n\v\f\0")
_TRIM: Final = " \t\r\n\v\f"
_NAMED: Final = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


@dataclass
class _Open:
    tag: str
    attrs: dict[str, str]
    start: int  # where its text begins in the output
    language: str = ""


def _html_entity(text: str, i: int) -> tuple[str | None, int, bool]:
    """TDLib's ``decode_html_entity``: (the character or ``None``, where it ends, ended by ``;``)."""
    n = len(text)
    j = i + 1
    if j < n and text[j] == "#":
        j += 1
        digits = "0123456789"
        base = 10
        if j < n and text[j] in "xX":
            j += 1
            digits = "0123456789abcdefABCDEF"
            base = 16
        start = j
        while j < n and text[j] in digits and j - i < 10:
            j += 1
        if j == start or j - i >= 10:
            return None, i + 1, False
        code = int(text[start:j], base)
        if code == 0 or code >= 0x10FFFF:
            return None, i + 1, False
        if 0xD800 <= code <= 0xDFFF:
            raise HtmlError(
                "Text contains invalid Unicode characters after decoding HTML entities, "
                "check for unmatched surrogate code units"
            )
        char = chr(code)
    else:
        while j < n and text[j].isascii() and text[j].isalpha():
            j += 1
        named = _NAMED.get(text[i + 1 : j])
        if named is None:
            return None, i + 1, False
        char = named
    if j < n and text[j] == ";":
        return char, j + 1, True
    return char, j, False


def _decode_attribute(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "&":
            char, end, _ = _html_entity(value, i)
            if char is not None:
                out.append(char)
                i = end
                continue
        out.append(value[i])
        i += 1
    return "".join(out)


def parse_html(markup: str, *, strict: bool = True) -> tuple[str, list[JSON]]:
    """Telegram's HTML parse mode: (the text, its entities with UTF-16 offsets), trimmed as Telegram
    trims; raises :class:`HtmlError` with TDLib's words where Telegram would answer "can't parse
    entities". ``strict`` also refuses a ``&`` that is not a complete ``&lt;``/``&gt;``/``&amp;``/
    ``&quot;``/``&#...;`` (Telegram keeps such a ``&`` as text)."""
    out: list[str] = []
    stack: list[_Open] = []
    spans: list[tuple[int, int, JSON]] = []
    n = len(markup)

    def at(pos: int) -> int:
        return len(markup[:pos].encode())

    i = 0
    while i < n:
        c = markup[i]
        if c == "&":
            char, end, closed = _html_entity(markup, i)
            if strict and (char is None or not closed):
                raise HtmlError(
                    f'Unescaped "&" at byte offset {at(i)}: write &amp; (Telegram would show it as text;'
                    " this emulator insists)"
                )
            if char is None:
                out.append("&")
                i += 1
            else:
                out.append(char)
                i = end
            continue
        if c != "<":
            out.append(c)
            i += 1
            continue
        begin = i
        if i + 1 < n and markup[i + 1] == "/":
            if not stack:
                raise HtmlError(f"Unexpected end tag at byte offset {at(begin)}")
            j = i + 2
            while j < n and markup[j] not in _SPACE and markup[j] != ">":
                j += 1
            end_name = markup[i + 2 : j].lower()
            while j < n and markup[j] in _SPACE:
                j += 1
            if j >= n or markup[j] != ">":
                raise HtmlError(f"Unclosed end tag at byte offset {at(begin)}")
            opened = stack.pop()
            if end_name and end_name != opened.tag:
                raise HtmlError(
                    f'Unmatched end tag at byte offset {at(begin)}, expected "</{opened.tag}>", found "</{end_name}>"'
                )
            entity = _entity(opened, "".join(out[opened.start :]), stack)
            if entity is not None and len(out) > opened.start:
                spans.append((opened.start, len(out), entity))
            i = j + 1
            continue
        j = i + 1
        while j < n and markup[j] not in _SPACE and markup[j] != ">":
            j += 1
        if j >= n:
            raise HtmlError(f"Unclosed start tag at byte offset {at(begin)}")
        tag = markup[i + 1 : j].lower()
        if tag not in _TAGS:
            raise HtmlError(f'Unsupported start tag "{tag}" at byte offset {at(begin)}')
        attrs: dict[str, str] = {}
        while True:
            while j < n and markup[j] in _SPACE:
                j += 1
            if j >= n:
                raise HtmlError(f'Unclosed start tag "{tag}" at byte offset {at(begin)}')
            if markup[j] == ">":
                break
            name_start = j
            while j < n and markup[j] not in _SPACE and markup[j] not in "=>":
                j += 1
            name = markup[name_start:j].lower()
            if not name:
                raise HtmlError(f'Empty attribute name in the tag "{tag}" at byte offset {at(begin)}')
            while j < n and markup[j] in _SPACE:
                j += 1
            if j >= n:
                raise HtmlError(f'Unclosed start tag "{tag}" at byte offset {at(begin)}')
            if markup[j] != "=":
                attrs.setdefault(name, "")
                continue
            j += 1
            while j < n and markup[j] in _SPACE:
                j += 1
            if j >= n:
                raise HtmlError(f'Unclosed start tag "{tag}" at byte offset {at(begin)}')
            if markup[j] in "'\"":
                quote = markup[j]
                close = markup.find(quote, j + 1)
                if close < 0:
                    raise HtmlError(f"Unclosed start tag at byte offset {at(begin)}")
                value = _decode_attribute(markup[j + 1 : close])
                j = close + 1
            else:
                token_start = j
                while j < n and markup[j].isascii() and (markup[j].isalnum() or markup[j] in ".-"):
                    j += 1
                if j >= n or (markup[j] not in _SPACE and markup[j] != ">"):
                    raise HtmlError(f"Unexpected end of name token at byte offset {at(token_start)}")
                value = markup[token_start:j].lower()
            attrs[name] = value
        if tag == "span" and attrs.get("class") != "tg-spoiler":
            raise HtmlError(f'Tag "span" must have class "tg-spoiler" at byte offset {at(begin)}')
        if tag == "tg-emoji" and not attrs.get("emoji-id", "").isdigit():
            raise HtmlError(f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset {at(begin)}')
        stack.append(_Open(tag, attrs, len(out)))
        i = j + 1
    if stack:
        raise HtmlError(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
    return _trim("".join(out), spans)


def _entity(opened: _Open, inner: str, stack: list[_Open]) -> JSON | None:
    tag = opened.tag
    if tag in _SIMPLE_TAGS:
        return {"type": _SIMPLE_TAGS[tag]}
    if tag == "a":
        url = opened.attrs.get("href") or inner
        return {"type": "text_link", "url": url} if url and not url.isspace() else None
    if tag == "code":
        language = opened.attrs.get("class", "")
        parent = stack[-1] if stack else None
        if (
            parent is not None
            and parent.tag == "pre"
            and language.startswith("language-")
            and len(language) > 9
        ):
            parent.language = language[9:]
            return None
        return {"type": "code"}
    if tag == "pre":
        return {"type": "pre", "language": opened.language} if opened.language else {"type": "pre"}
    if tag == "blockquote":
        return {"type": "expandable_blockquote" if "expandable" in opened.attrs else "blockquote"}
    if tag == "tg-emoji":
        return {"type": "custom_emoji", "custom_emoji_id": opened.attrs["emoji-id"]}
    return None


def _trim(text: str, spans: list[tuple[int, int, JSON]]) -> tuple[str, list[JSON]]:
    """Leading and trailing white space goes, as on Telegram; entities move with the text."""
    lead = len(text) - len(text.lstrip(_TRIM))
    body = text.strip(_TRIM)
    entities: list[JSON] = []
    for start, end, entity in spans:
        first, last = max(start - lead, 0), min(end - lead, len(body))
        if last <= first:
            continue
        offset = utf16_len(body[:first])
        entities.append({**entity, "offset": offset, "length": utf16_len(body[first:last])})
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return body, entities

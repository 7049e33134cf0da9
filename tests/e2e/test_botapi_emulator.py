"""The Bot API emulator, driven by python-telegram-bot itself (a real ``telegram.Bot`` and a real polling
``Application``) over HTTP on loopback: what PTB sends arrives as Telegram would store it, and what
Telegram would refuse comes back as PTB's own exceptions."""

from __future__ import annotations

import asyncio
import datetime as dtm
import re
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from botapi_emulator import (
    SECRET_HEADER,
    TERMINATED,
    BotApiEmulator,
    HtmlError,
    LoopbackServer,
    WebhookInfo,
    parse_html,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MenuButtonCommands,
    MenuButtonDefault,
    MenuButtonWebApp,
    Update,
    WebAppInfo,
)
from telegram.error import BadRequest, Conflict, Forbidden, InvalidToken, RetryAfter
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)


@pytest.fixture
def api() -> Iterator[BotApiEmulator]:
    with BotApiEmulator() as emulator:
        yield emulator


@pytest.fixture
async def bot(api: BotApiEmulator) -> AsyncIterator[Bot]:
    async with Bot(api.token, base_url=f"{api.url}/bot") as client:
        yield client


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def refused(description: str) -> pytest.RaisesExc[BadRequest]:
    """PTB drops "Bad Request: " from a description and ``str.capitalize()``s the rest, lower-casing it."""
    return pytest.raises(BadRequest, match=re.compile(re.escape(description), re.IGNORECASE))


def seconds(retry_after: int | dtm.timedelta) -> float:
    return retry_after.total_seconds() if isinstance(retry_after, dtm.timedelta) else float(retry_after)


# -- HTML, as TDLib parses it ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markup", "text", "entities"),
    [
        ("<b>余额</b>: ¥1 &amp; 2", "余额: ¥1 & 2", [{"type": "bold", "offset": 0, "length": 2}]),
        ("🏟 🏟<i>🏟 &lt;🏟</i>", "🏟 🏟🏟 <🏟", [{"type": "italic", "offset": 5, "length": 6}]),
        ("  <b>hi</b> &#20313;\n\n", "hi 余", [{"type": "bold", "offset": 0, "length": 2}]),
        (
            '<a href="https://example.org/?a=1&amp;b=2">x</a>',
            "x",
            [{"type": "text_link", "offset": 0, "length": 1, "url": "https://example.org/?a=1&b=2"}],
        ),
        (
            '<pre><code class="language-python">x = 1</code></pre>',
            "x = 1",
            [{"type": "pre", "offset": 0, "length": 5, "language": "python"}],
        ),
        ("<b aba = caba>x</>", "x", [{"type": "bold", "offset": 0, "length": 1}]),
        ('<span class="tg-spoiler">s</span>', "s", [{"type": "spoiler", "offset": 0, "length": 1}]),
    ],
)
def test_html_is_parsed_like_telegram(markup: str, text: str, entities: list[dict[str, Any]]) -> None:
    assert parse_html(markup) == (text, entities)


@pytest.mark.parametrize(
    ("markup", "error"),
    [
        ("🏟 🏟&lt;<abac>", 'Unsupported start tag "abac" at byte offset 13'),
        ("a < b", 'Unsupported start tag "" at byte offset 2'),
        ("<b", "Unclosed start tag at byte offset 0"),
        ("<b>x", 'Can\'t find end tag corresponding to start tag "b"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<i>a</em   >", 'Unmatched end tag at byte offset 4, expected "</i>", found "</em>"'),
        ("<i =x>a</i>", 'Empty attribute name in the tag "i" at byte offset 0'),
        ('<span class="x">s</span>', 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ("&#xDFDF;", "Text contains invalid Unicode characters"),
        ("AT&T", 'Unescaped "&" at byte offset 2'),
        ("&lt", 'Unescaped "&" at byte offset 0'),
    ],
)
def test_html_telegram_refuses(markup: str, error: str) -> None:
    with pytest.raises(HtmlError) as refused:
        parse_html(markup)
    assert str(refused.value).startswith(error)


def test_lenient_html_keeps_a_stray_ampersand_as_telegram_does() -> None:
    assert parse_html("AT&T &Or; &lt &#12345678;", strict=False) == ("AT&T &Or; < &#12345678;", [])


# -- sending -------------------------------------------------------------------------------------------


async def test_a_message_arrives_as_telegram_stores_it(api: BotApiEmulator, bot: Bot) -> None:
    user = api.user(42)
    assert user.says("/start") == 1
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("查余额", callback_data="balance")]])

    message = await bot.send_message(42, "<b>余额</b>: ¥1 &amp; 2", parse_mode="HTML", reply_markup=markup)

    assert message.message_id == 2
    assert message.chat.id == 42
    assert message.from_user is not None
    assert message.from_user.username == "yibao_test_bot"
    assert message.text == "余额: ¥1 & 2"
    assert [e.type for e in message.entities] == ["bold"]
    assert message.reply_markup == markup
    sent = user.inbox[-1]
    assert (sent.message_id, sent.text, sent.raw_text) == (2, "余额: ¥1 & 2", "<b>余额</b>: ¥1 &amp; 2")
    assert sent.parse_mode == "HTML"
    assert sent.buttons == [("查余额", "balance")]
    call = api.calls_to("sendMessage")[-1]
    assert call.encoding == "form"  # PTB posts application/x-www-form-urlencoded, JSON fields as strings
    assert call.params["chat_id"] == 42
    assert call.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "查余额", "callback_data": "balance"}]]
    }
    assert await bot.send_chat_action(42, "typing")


async def test_what_telegram_refuses_surfaces_as_ptb_errors(api: BotApiEmulator, bot: Bot) -> None:
    api.user(42).says("hi")
    with refused('Unsupported start tag "div" at byte offset 0'):
        await bot.send_message(42, "<div>x</div>", parse_mode="HTML")
    with refused("Message is too long"):
        await bot.send_message(42, "a" * 4097)
    with refused("Message is too long"):  # 2049 emoji are 4098 UTF-16 units
        await bot.send_message(42, "😀" * 2049)
    assert (await bot.send_message(42, "😀" * 2048)).text == "😀" * 2048
    with refused("Message text is empty"):
        await bot.send_message(42, " <b> </b> ", parse_mode="HTML")
    too_much = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="余" * 21 + "ab")]])
    with refused("BUTTON_DATA_INVALID"):
        await bot.send_message(42, "x", reply_markup=too_much)
    just_fits = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="余" * 21 + "a")]])
    await bot.send_message(42, "x", reply_markup=just_fits)
    with refused("Chat not found"):
        await bot.send_message(999, "x")
    api.user(43)
    with pytest.raises(Forbidden, match="bot can't initiate conversation"):
        await bot.send_message(43, "x")
    blocked = api.user(44)
    blocked.says("hi")
    blocked.blocked = True
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(44, "x")
    with refused("Message to delete not found"):
        await bot.delete_message(42, 777)
    with pytest.raises(InvalidToken):  # initialising a Bot calls getMe
        async with Bot("123456:not-the-token", base_url=f"{api.url}/bot"):
            pass
    assert api.calls[-1].status == 401


@pytest.mark.filterwarnings("ignore:.*retry_after.*:DeprecationWarning")
async def test_scripted_refusals(api: BotApiEmulator, bot: Bot) -> None:
    api.user(42).says("hi")
    api.user(43).says("hi")
    api.fail_next("sendMessage", retry_after=3)
    with pytest.raises(RetryAfter) as flood:
        await bot.send_message(42, "x")
    assert seconds(flood.value.retry_after) == 3
    await bot.send_message(42, "x")

    api.fail_next("sendMessage", status=403, chat_id=43, count=2)
    await bot.send_message(42, "not this chat")
    for _ in range(2):
        with pytest.raises(Forbidden, match="bot was blocked by the user"):
            await bot.send_message(43, "x")
    await bot.send_message(43, "x")
    assert [c.status for c in api.calls_to("sendMessage")] == [429, 200, 200, 403, 403, 200]
    assert [s.text for s in api.user(43).inbox] == ["x"]


async def test_photos_upload_and_come_back_by_file_id(api: BotApiEmulator, bot: Bot) -> None:
    user = api.user(42)
    user.says("/chart")
    image = png(3, 2)

    message = await bot.send_photo(42, image, caption="<b>图</b> 12 个月", parse_mode="HTML")

    assert (message.photo[-1].width, message.photo[-1].height) == (3, 2)
    assert message.caption == "图 12 个月"
    sent = user.inbox[-1]
    assert (sent.photo, sent.caption, sent.raw_caption) == (image, "图 12 个月", "<b>图</b> 12 个月")
    upload = api.calls_to("sendPhoto")[-1]
    assert upload.encoding == "multipart"
    assert upload.params["photo"].content == image

    await bot.send_photo(42, message.photo[-1].file_id)
    assert user.inbox[-1].photo == image
    assert api.calls_to("sendPhoto")[-1].encoding == "form"
    with refused("IMAGE_PROCESS_FAILED"):
        await bot.send_photo(42, b"not an image")
    with refused("Message caption is too long"):
        await bot.send_photo(42, image, caption="x" * 1025)
    with refused("Wrong file identifier"):
        await bot.send_photo(42, "no-such-file-id")


async def test_commands_per_language(api: BotApiEmulator, bot: Bot) -> None:
    commands = [BotCommand("balance", "余额"), BotCommand("help", "帮助")]
    assert await bot.set_my_commands(commands, language_code="zh")
    assert await bot.set_my_commands(commands[:1])

    assert api.commands("zh") == [
        {"command": "balance", "description": "余额"},
        {"command": "help", "description": "帮助"},
    ]
    assert api.commands() == [{"command": "balance", "description": "余额"}]
    assert await bot.get_my_commands(language_code="zh") == tuple(commands)
    with refused("Invalid language code"):
        await bot.set_my_commands(commands, language_code="zh-hans")
    with refused("BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand("Balance", "余额")])
    assert await bot.delete_my_commands(language_code="zh")
    assert api.commands("zh") == []
    assert await bot.log_out()
    assert await bot.close()


async def test_the_menu_button_and_web_app_buttons_take_https_only(api: BotApiEmulator, bot: Bot) -> None:
    assert await bot.get_chat_menu_button() == MenuButtonDefault()
    page = "https://yibao.example.com/web/tg"
    assert await bot.set_chat_menu_button(menu_button=MenuButtonWebApp("打开网页", WebAppInfo(page)))
    assert api.menu_button() == {"type": "web_app", "text": "打开网页", "web_app": {"url": page}}
    assert await bot.get_chat_menu_button() == MenuButtonWebApp("打开网页", WebAppInfo(page))
    with refused("only https"):
        await bot.set_chat_menu_button(
            menu_button=MenuButtonWebApp("Open", WebAppInfo("http://127.0.0.1/web/tg"))
        )
    user = api.user(4242)
    user.says("/start")
    assert await bot.set_chat_menu_button(chat_id=user.id, menu_button=MenuButtonCommands())
    assert api.menu_button(user.id) == {"type": "commands"}
    assert api.menu_button() == {"type": "web_app", "text": "打开网页", "web_app": {"url": page}}
    with refused("chat not found"):
        await bot.set_chat_menu_button(chat_id=999_999, menu_button=MenuButtonCommands())
    button = InlineKeyboardButton("打开网页", web_app=WebAppInfo(page))
    sent = await bot.send_message(user.id, "页面", reply_markup=InlineKeyboardMarkup([[button]]))
    assert api.user(4242).inbox[-1].buttons == [("打开网页", page)]
    assert sent.reply_markup is not None
    http = InlineKeyboardButton("Open", web_app=WebAppInfo("http://127.0.0.1/web/l/x"))
    with refused("only https"):
        await bot.send_message(user.id, "page", reply_markup=InlineKeyboardMarkup([[http]]))


# -- receiving -----------------------------------------------------------------------------------------


async def test_a_polling_application_round_trips(api: BotApiEmulator) -> None:
    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(f"echo: {update.effective_message.text}")

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("再来", callback_data="again")]])
        await update.effective_message.reply_text("hi", reply_markup=keyboard)

    async def secret(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.delete()
        await update.effective_chat.send_message("deleted")  # type: ignore[union-attr]

    async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer("ok")
        await query.edit_message_text(f"pressed {query.data}")

    app = Application.builder().token(api.token).base_url(f"{api.url}/bot").build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("secret", secret))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    app.add_handler(CallbackQueryHandler(button))
    user = api.user(7)
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(timeout=5, allowed_updates=["message", "callback_query"])

        user.says("你好")
        await asyncio.to_thread(user.wait_for, "echo: 你好")
        user.says("/start")
        hi = await asyncio.to_thread(user.wait_for, "hi")
        query_id = user.presses("again", hi.message_id)
        pressed = await asyncio.to_thread(
            user.wait_for, lambda s: s.message_id == hi.message_id and s.edits > 0
        )
        assert (pressed.text, pressed.reply_markup) == ("pressed again", None)
        assert user.answered_callbacks == [query_id]
        with pytest.raises(AssertionError, match="offers no button"):
            user.presses("again", hi.message_id)
        secret_id = user.says("/secret 110101199003071234")
        await asyncio.to_thread(user.wait_for, "deleted")
        assert secret_id in user.deleted

        await app.updater.stop()
        await app.stop()
    assert api.pending_updates == []  # PTB confirmed what it took, on the way out
    assert 409 not in {c.status for c in api.calls_to("getUpdates")}  # 499: the poll PTB left behind
    assert api.calls_to("getUpdates")[0].params["allowed_updates"] == ["message", "callback_query"]
    assert [s.text for s in user.inbox] == ["echo: 你好", "pressed again", "deleted"]


async def test_get_updates_offset_limit_long_poll_and_conflict(api: BotApiEmulator) -> None:
    user = api.user(5)
    for i in range(3):
        user.says(f"m{i}")
    async with httpx.AsyncClient(base_url=f"{api.url}/bot{api.token}") as client:
        first_two = (await client.post("/getUpdates", data={"limit": "2"})).json()["result"]
        assert [u["message"]["text"] for u in first_two] == ["m0", "m1"]
        assert first_two[0]["message"]["from"]["language_code"] == "zh-hans"
        offset = first_two[0]["update_id"] + 1
        rest = (await client.post("/getUpdates", json={"offset": offset})).json()["result"]
        assert [u["message"]["text"] for u in rest] == ["m1", "m2"]
        last = (await client.get("/getUpdates", params={"offset": -1})).json()["result"]
        assert [u["message"]["text"] for u in last] == ["m2"]
        offset = last[0]["update_id"] + 1

        waiting = asyncio.create_task(
            client.post("/getUpdates", data={"offset": str(offset), "timeout": "5"})
        )
        await asyncio.sleep(0.2)
        began = time.monotonic()
        user.says("late")
        late = (await waiting).json()["result"]
        assert [u["message"]["text"] for u in late] == ["late"]
        assert time.monotonic() - began < 2
        offset = late[0]["update_id"] + 1

        waiting = asyncio.create_task(
            client.post("/getUpdates", data={"offset": str(offset), "timeout": "5"})
        )
        await asyncio.sleep(0.2)
        newer = await client.post("/getUpdates", data={"offset": str(offset)})
        older = await waiting
        assert newer.json() == {"ok": True, "result": []}
        assert older.status_code == 409
        assert older.json() == {"ok": False, "error_code": 409, "description": TERMINATED}

        unknown = await client.post("/getNothing")
        assert unknown.json() == {"ok": False, "error_code": 404, "description": "Not Found"}


async def test_webhook_delivery_secret_and_conflict(api: BotApiEmulator, bot: Bot) -> None:
    received: list[tuple[str | None, dict[str, Any]]] = []
    arrived = threading.Event()

    async def hook(request: Request) -> JSONResponse:
        secret = request.headers.get(SECRET_HEADER)
        received.append((secret, await request.json()))
        arrived.set()
        return JSONResponse({}, status_code=200 if secret == "s3cret" else 403)

    receiver = LoopbackServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])]), name="receiver")
    receiver.start()
    try:
        user = api.user(9)
        user.says("before")  # no webhook yet: waits for getUpdates
        assert await bot.set_webhook(
            f"{receiver.url}/hook", secret_token="s3cret", allowed_updates=["message", "callback_query"]
        )
        assert api.webhook == WebhookInfo(
            f"{receiver.url}/hook", "s3cret", ("callback_query", "message"), max_connections=40
        )
        assert await asyncio.to_thread(arrived.wait, 5)  # what was waiting goes to the webhook
        assert received[0][0] == "s3cret"
        assert received[0][1]["message"]["text"] == "before"
        assert (await bot.get_webhook_info()).url == f"{receiver.url}/hook"
        with pytest.raises(Conflict, match="can't use getUpdates method while webhook is active"):
            await bot.get_updates()

        await asyncio.to_thread(user.says, "after")  # POSTed and answered before says returns
        secret, update = received[-1]
        assert (secret, update["message"]["text"]) == ("s3cret", "after")
        assert await asyncio.to_thread(api.post_update, update) == 200
        assert await asyncio.to_thread(api.post_update, update, secret="wrong") == 403
        assert await asyncio.to_thread(api.post_update, update, secret=None) == 403
        assert [s for s, _ in received[-3:]] == ["s3cret", "wrong", None]

        assert await bot.delete_webhook()
        assert api.webhook is None
        user.says("polled")
        assert [u.message.text for u in await bot.get_updates() if u.message] == ["polled"]
    finally:
        receiver.stop()

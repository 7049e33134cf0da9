"""Telegram's ways into Yibao's pages, on both engines against the Bot API emulator over real HTTP:
a reply's ``web_link`` as a button under the message (a Mini App ``web_app`` button for https, a
plain ``url`` button otherwise) and the chat's menu button opening the Mini App entry. The updates
are the emulator's, fed to the engine's own dispatcher (as a webhook would), so the whole path runs:
the library's parsing, the core, the library's calls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from botapi_emulator import BotApiEmulator, FakeUser

from dialogs.i18n import Catalogs
from dialogs.models import Button, Inbound, Reply
from platforms import web
from platforms.telegram.core import Refused, TelegramCore
from platforms.telegram.engines import build_engine
from platforms.telegram.options import Engine, TelegramOptions

PUBLIC = "https://yibao.example.com"


@pytest.fixture(scope="module")
def emulator() -> Iterator[BotApiEmulator]:
    with BotApiEmulator() as emu:
        yield emu


async def answer(inbound: Inbound) -> tuple[Reply, ...]:
    """The conversation's side, as ``/web`` will answer (``platforms.web`` makes the link)."""
    if inbound.text == "/web":
        return (Reply(text="打开这个链接，10 分钟内有效。", web_link=f"{PUBLIC}/web/l/t0ken"),)
    if inbound.text == "/web en":
        return (
            Reply(
                text="Open the page within 10 minutes.",
                web_link="http://127.0.0.1:8080/web/l/t0ken",
                buttons=(Button(label="Cancel", payload="/cancel"),),
            ),
        )
    return (Reply(text="?"),)


@pytest.fixture(params=["aiogram", "ptb"])
async def bot(
    request: pytest.FixtureRequest, emulator: BotApiEmulator
) -> AsyncIterator[tuple[TelegramCore, Engine]]:
    core = TelegramCore(answer, catalogs=Catalogs())
    options = TelegramOptions(token=emulator.token, api_base_url=emulator.url, webhook=True)
    engine = build_engine(request.param, core, options)
    await engine.initialize()
    try:
        yield core, engine
    finally:
        await engine.close()


async def says(engine: Engine, emulator: BotApiEmulator, user: FakeUser, text: str) -> None:
    user.says(text)
    update = emulator.pending_updates[-1]
    await engine.feed(update)


async def test_an_https_web_link_is_a_mini_app_button(
    bot: tuple[TelegramCore, Engine], emulator: BotApiEmulator
) -> None:
    _core, engine = bot
    user = emulator.user(7101)
    before = len(user.inbox)
    await says(engine, emulator, user, "/web")
    sent = user.inbox[before]
    assert sent.text == "打开这个链接，10 分钟内有效。"
    assert sent.reply_markup == {
        "inline_keyboard": [[{"text": "打开网页", "web_app": {"url": f"{PUBLIC}/web/l/t0ken"}}]]
    }


async def test_a_plain_http_web_link_is_a_url_button_above_the_choices(
    bot: tuple[TelegramCore, Engine], emulator: BotApiEmulator
) -> None:
    _core, engine = bot
    user = emulator.user(7102, language_code="en")
    before = len(user.inbox)
    await says(engine, emulator, user, "/web en")
    sent = user.inbox[before]
    assert sent.buttons == [("Open the page", "http://127.0.0.1:8080/web/l/t0ken"), ("Cancel", "/cancel")]
    assert "web_app" not in sent.reply_markup["inline_keyboard"][0][0]  # type: ignore[index]


async def test_the_menu_button_opens_the_mini_app_only_over_https(
    bot: tuple[TelegramCore, Engine], emulator: BotApiEmulator
) -> None:
    core, _engine = bot
    entry = web.url(PUBLIC, web.TELEGRAM_ENTRY)
    assert await core.set_menu_button(entry)
    assert emulator.menu_button() == {"type": "web_app", "text": "打开网页", "web_app": {"url": entry}}
    assert emulator.calls_to("setChatMenuButton")[-1].params.get("chat_id") is None  # every chat
    assert not await core.set_menu_button("http://127.0.0.1:8080/web/tg")  # not even asked
    assert emulator.menu_button()["web_app"]["url"] == entry
    assert core.calls is not None
    with pytest.raises(Refused, match=r"(?i)only https"):  # and Telegram would refuse it
        await core.calls.set_menu_button("Open", "http://127.0.0.1:8080/web/tg")

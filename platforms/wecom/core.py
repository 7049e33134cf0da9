"""What Yibao does as a WeCom self-built app, over ``WecomApi`` and ``WecomState``.

**In.** A checked, decrypted callback (``callback.py``) for this corp and app becomes an ``Inbound``
for ``wecom:<corp id>:<userid>``:

- a text is the member's words, except that a number answers the choices last offered;
- a click on a template card (``template_card_event``) answers that card's choice once: the card is
  updated so its buttons cannot be clicked again (showing what was chosen), and a click on a card
  already answered, or replaced by a newer one, is told so and changes nothing;
- a click on the app's menu (``click``) is its command; ``subscribe`` (the app was opened for the
  first time) is ``/start``;
- ``change_contact`` with ``delete_user`` (the member left the company) erases everything kept about
  them, as ``/unbind`` does, and so does a send WeCom answers with the member as ``invaliduser``
  (outside the app's visible range);
- with ``prefill_name``, ``/bind`` comes with the member's name from the directory (``user/get``) so
  the bind proposes it;
- each message is handled once (``MsgId``, or the sender, time and event, kept 10 minutes in Redis):
  WeCom sends a callback again when it had no answer within 5 s.

**Out.** WeCom has no 48-hour window: every answer and every alert goes through ``message/send``,
after the HTTP response (answered within ``reply_within_seconds``, so WeCom does not try again).
Texts as text messages (2048 bytes each); choices as a ``button_interaction`` template card (up to 6
buttons; more are numbered in the text); pictures uploaded and sent as images. WeCom drops, without
a word, what passes its per-member limits (30 messages a minute, 1,000 an hour): every send first
waits its turn in the member's pace (``WecomState.pace``, shared by every instance), so nothing is
silently lost — the 31st message in a minute waits for the next minute.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from dialogs.i18n import Catalogs
from dialogs.models import Inbound, Location, Reply, UserKey
from dialogs.ports import Undeliverable
from platforms.sequencer import Sequencer
from platforms.tencent.text import Part, compose, language_of, numbered
from platforms.tencent.xmlmsg import XmlMessage
from platforms.wechat.menu import MENU_COMMANDS
from platforms.wechat.state import Choices
from platforms.wecom.api import ApiRefusal, ApiUnavailable, NoSuchMember, Unreachable, WecomApi
from platforms.wecom.state import WecomState

log = logging.getLogger(__name__)

Handler = Callable[[Inbound], Awaitable[Sequence[Reply]]]
Gone = Callable[[UserKey], Awaitable[None]]

PLATFORM = "wecom"
DEDUP_SECONDS = 600
MAX_BUTTONS = 6
CARD_TEXT = 112
"""Characters of a card's sub-title WeCom shows; a longer text goes as a text message before the card."""
_USERID = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_NOT_TEXT = frozenset({"image", "voice", "video", "link", "file"})


def user_key(corp_id: str, userid: str) -> UserKey:
    return UserKey(f"{PLATFORM}:{corp_id}:{userid}")


@dataclass(slots=True)
class Answer:
    """WeCom's callbacks are answered empty; what Yibao says goes by ``message/send``, in ``later``."""

    later: Callable[[], Awaitable[None]] | None = None
    passive: bytes | None = None


def _is_bind(text: str) -> bool:
    t = text.strip().lower()
    return t.startswith("/bind") or t in ("bind", "绑定")


@dataclass
class WecomCore:
    handle: Handler
    api: WecomApi
    state: WecomState
    catalogs: Catalogs
    on_gone: Gone | None = None
    default_locale: str = "zh"
    reply_within_seconds: float = 4.0
    prefill_name: bool = False
    concurrency: int = 64
    platform: str = PLATFORM
    sequencer: Sequencer = field(init=False)
    _background: set[asyncio.Task[Any]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.sequencer = Sequencer(self.concurrency)

    @property
    def corp_id(self) -> str:
        return self.api.corp_id

    async def aclose(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=10.0)
        await self.api.aclose()

    # -- in ----------------------------------------------------------------------------------------

    async def on_message(self, msg: XmlMessage, *, received: float | None = None) -> Answer:
        received = time.monotonic() if received is None else received
        kind = msg.get("MsgType").lower()
        if msg.get("ToUserName") != self.corp_id:
            log.warning("a WeCom callback for another corp was ignored (type %s)", kind or "?")
            return Answer()
        event = msg.get("Event").lower()
        if kind == "event" and event == "change_contact":
            await self._contact_change(msg)
            return Answer()
        userid = msg.get("FromUserName")
        if not _USERID.fullmatch(userid):
            log.warning("a WeCom message without a member was ignored (type %s)", kind or "?")
            return Answer()
        if msg.get("AgentID") and msg.get("AgentID") != str(self.api.agent_id):
            log.warning("a WeCom callback for another app was ignored")
            return Answer()
        dedup = msg.get("MsgId") or ":".join(
            (
                userid,
                msg.get("CreateTime"),
                event,
                msg.get("EventKey"),
                msg.get("TaskId"),
                msg.get("ResponseCode"),
            )
        )
        if not await self.state.first(f"wecom:msg:{self.corp_id}:{dedup}", DEDUP_SECONDS):
            log.info("a repeated WeCom callback (type %s) was answered and not handled again", kind)
            return Answer()
        user = user_key(self.corp_id, userid)
        where: Location | None = None
        if kind == "location":  # Location_X latitude, Location_Y longitude, as on WeChat
            try:
                where = Location(lat=float(msg.get("Location_X")), lon=float(msg.get("Location_Y")))
            except ValueError:
                return Answer()
            text = ""
        elif kind == "text":
            text = await self._chosen(user, msg.get("Content"))
        elif kind == "event":
            if event == "template_card_event":
                return await self._card_click(user, userid, msg, received)
            if event == "click":
                command = MENU_COMMANDS.get(msg.get("EventKey"))
                if command is None:
                    return Answer()
                text = command
            elif event == "subscribe":
                text = "/start"
            else:
                log.info("a WeCom event was answered and not handled: %s", event[:32] or "?")
                return Answer()
        elif kind in _NOT_TEXT:
            t = self.catalogs.get(self.default_locale)
            note = t.gettext("I understand text messages only. Send /help to see what I can do.")
            return self._say(user, userid, note)
        else:
            log.info("a WeCom message of an unknown type was answered: %s", kind[:32] or "?")
            return Answer()
        return await self._answer(user, userid, text, received, where)

    def _say(self, user: UserKey, userid: str, text: str) -> Answer:
        """An answer of one text, sent after the response."""

        async def later() -> None:
            try:
                await self._send_all(user, userid, [Part(text=text)], "")
            except (ApiRefusal, ApiUnavailable) as e:
                log.error("a message to %s failed: %s", user, e)

        return Answer(later=later)

    async def _contact_change(self, msg: XmlMessage) -> None:
        if msg.get("ChangeType") != "delete_user":
            return
        userid = msg.get("UserID")
        if not _USERID.fullmatch(userid):
            return
        user = user_key(self.corp_id, userid)
        log.warning("%s left the company (change_contact delete_user): erasing what is kept about them", user)
        if self.on_gone is not None:
            await self.on_gone(user)

    async def _chosen(self, user: UserKey, content: str) -> str:
        offered = await self.state.choices(user)
        number = content.strip()
        if offered is not None and number.isdigit() and 1 <= int(number) <= len(offered.payloads):
            return offered.payloads[int(number) - 1]
        return content

    async def _card_click(self, user: UserKey, userid: str, msg: XmlMessage, received: float) -> Answer:
        offered = await self.state.choices(user)
        task, key, code = msg.get("TaskId"), msg.get("EventKey"), msg.get("ResponseCode")
        if (
            offered is None
            or offered.gen != task
            or not key.isdigit()
            or not 1 <= int(key) <= len(offered.payloads)
        ):
            t = self.catalogs.get(self.default_locale)
            note = t.gettext("That card was answered already.")
            log.info("a click on a card answered already (or replaced) changed nothing")
            return self._say(user, userid, note)
        n = int(key) - 1
        label = offered.labels[n] if n < len(offered.labels) else ""
        await self.state.set_choices(user, None)  # one click per card, even before the answer is out
        if code:
            t = self.catalogs.get(language_of(label) if label else self.default_locale)
            shown = t.gettext("Chosen: {choice}").format(choice=label)[:24]
            try:
                await self.api.update_card(userid, code, shown)
            except (ApiRefusal, ApiUnavailable) as e:
                log.info("could not update a clicked card: %s", e)
        return await self._answer(user, userid, offered.payloads[n], received)

    async def _answer(
        self, user: UserKey, userid: str, text: str, received: float, location: Location | None = None
    ) -> Answer:
        name: SecretStr | None = None
        if self.prefill_name and _is_bind(text):
            name = await self._directory_name(user, userid)
        replies: list[Reply] = []

        async def run() -> None:
            replies.extend(
                await self.handle(Inbound(user=user, text=text, directory_name=name, location=location))
            )

        task = asyncio.create_task(self.sequencer.run(userid, run))
        left = self.reply_within_seconds - (time.monotonic() - received)
        done, _ = await asyncio.wait({task}, timeout=max(0.0, left))
        if task not in done:
            self._keep(asyncio.create_task(self._late(task, user, userid, replies)))
            return Answer()
        if task.exception() is not None:
            log.error("a WeCom message could not be handled: %s", type(task.exception()).__name__)
            return Answer()

        async def later() -> None:
            await self._deliver_replies(user, userid, replies)

        return Answer(later=later)

    async def _directory_name(self, user: UserKey, userid: str) -> SecretStr | None:
        try:
            name = await self.api.member_name(userid)
        except NoSuchMember:
            await self._gone(user)
            return None
        except (ApiRefusal, ApiUnavailable) as e:
            log.info("the directory did not give %s's name: %s", user, e)
            return None
        return SecretStr(name) if name else None

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _late(self, task: asyncio.Task[None], user: UserKey, userid: str, replies: list[Reply]) -> None:
        try:
            await task
        except Exception as e:
            log.error("a WeCom message could not be handled: %s", type(e).__name__)
            return
        await self._deliver_replies(user, userid, replies)

    async def _deliver_replies(self, user: UserKey, userid: str, replies: Sequence[Reply]) -> None:
        try:
            await self._send_replies(user, userid, replies)
        except Unreachable:
            await self._gone(user)
        except (ApiRefusal, ApiUnavailable) as e:
            log.error("a message to %s failed: %s", user, e)

    # -- out ---------------------------------------------------------------------------------------

    def _messages(self, replies: Sequence[Reply]) -> list[Part]:
        return compose(replies, merge_into_choices=False)

    async def _send_replies(self, user: UserKey, userid: str, replies: Sequence[Reply]) -> None:
        messages = self._messages(replies)
        offered = next((m.choices for m in reversed(messages) if m.choices), ())
        gen = secrets.token_hex(8)
        choices = (
            Choices(gen, tuple(b.payload for b in offered), tuple(b.label for b in offered))
            if offered
            else None
        )
        await self.state.set_choices(user, choices)
        await self._send_all(user, userid, messages, gen)

    async def _send_all(self, user: UserKey, userid: str, messages: Sequence[Part], gen: str) -> None:
        for m in messages:
            if m.image is not None:
                media_id = await self.api.upload_image(m.image.content, m.image.filename)
                await self._paced(user)
                await self.api.send(userid, {"msgtype": "image", "image": {"media_id": media_id}})
                continue
            for payload in self._payloads(m, gen):
                await self._paced(user)
                await self.api.send(userid, payload)

    async def _paced(self, user: UserKey) -> None:
        while True:
            wait = await self.state.pace(user)
            if wait <= 0:
                return
            log.info("%s reached WeCom's per-member limit: the next message waits %.1f s", user, wait)
            self.api.metrics.waited(self.platform, wait)
            await asyncio.sleep(wait)

    def _payloads(self, m: Part, gen: str) -> list[dict[str, Any]]:
        if not m.choices:
            return [{"msgtype": "text", "text": {"content": m.text}}]
        if len(m.choices) > MAX_BUTTONS:
            return [{"msgtype": "text", "text": {"content": numbered(self.catalogs, m.text, m.choices)}}]
        t = self.catalogs.get(language_of(m.text))
        out: list[dict[str, Any]] = []
        card: dict[str, Any] = {
            "card_type": "button_interaction",
            "task_id": gen,
            "button_list": [{"text": b.label, "style": 1, "key": str(n)} for n, b in enumerate(m.choices, 1)],
        }
        if len(m.text) <= CARD_TEXT:
            card["main_title"] = {"title": t.gettext("Yibao")}
            card["sub_title_text"] = m.text
        else:
            out.append({"msgtype": "text", "text": {"content": m.text}})
            card["main_title"] = {"title": t.gettext("Please choose")}
        out.append({"msgtype": "template_card", "template_card": card})
        return out

    async def _gone(self, user: UserKey) -> None:
        log.warning("%s is outside the app's visible range or gone: erasing what is kept about them", user)
        if self.on_gone is not None:
            await self.on_gone(user)

    async def deliver(self, user: UserKey, replies: tuple[Reply, ...]) -> None:
        """An alert (the ``Outlet`` port): WeCom has no window, so it goes now, paced per member."""
        userid = user.rsplit(":", 1)[-1]
        try:
            await self._send_replies(user, userid, replies)
        except Unreachable:
            await self._gone(user)
            raise Undeliverable("outside the app's visible range") from None
        except ApiUnavailable:
            raise
        except ApiRefusal as e:
            raise Undeliverable(f"WeCom {e.errcode}") from None

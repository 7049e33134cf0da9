"""What Yibao does on a WeChat Official Account, over ``WechatApi`` and ``WechatState``.

**In.** A checked callback message (``callback.py``) becomes an ``Inbound`` for ``wx:<openid>``:

- a text is the user's words, except that a number answers the choices last offered (``1``, ``2``…)
  and a click on a menu message's option (``bizmsgmenuid``) answers that option;
- following the account (``subscribe``) is ``/start``; a click on the custom menu (``CLICK``) is
  its command (``menu.py``); unfollowing (``unsubscribe``) marks the user unreachable, as Telegram's
  403 does, and is not answered;
- the subscription-message events record what the user accepted or rejected;
- a location message (Location_X latitude, Location_Y longitude) asks for the nearest designated
  institutions;
- voice, pictures, links and the like get "I understand text" (they open the window all the same);
- each message is handled once: WeChat sends a callback again when it had no answer within 5 s, and
  the id (``MsgId``; for events the sender, ``CreateTime`` and event) is kept in Redis for 10 minutes,
  so a repeat, on any instance, is answered ``success`` and not handled.

**Out: which path a reply takes, and why.** WeChat waits 5 s for the HTTP response, and a reply in
the response (*passive*) is free, but it is one message, text only. Customer-service messages
(``message/custom/send``) can be menus and pictures and come at any time, but only within the user's
window: **5 within 48 hours** of their last message (3 within a minute of a menu click or a follow),
counted in Redis so Yibao knows before it sends. So:

1. If the answer is ready within ``reply_within_seconds`` (4 s, leaving a second for the network),
   the leading text of it is the passive reply (what one message can hold, 2048 bytes).
2. What follows it (a message with choices, a picture, the rest of a long text) goes as
   customer-service messages right after the response, if the window has room for *all* of them:
   choices as a menu message, so they can be clicked. If it has not, the choices are numbered in the
   text and as much as fits goes passively; a picture is then left out with a word about it.
3. An answer that is not ready in time is answered ``success`` at once (WeChat would otherwise try
   again and show the user an error) and sent as customer-service messages when it is; if the window
   has no room by then, it is held and given with the user's next answer.

**Alerts** (``deliver``, the ``Outlet``): inside the window, a menu message (the alert with
*Balance* and *Turn the alert off*); else a subscription message with the operator's template, to a
user who accepted it; else it is held (``Held``), recorded as ``deferred``, and given with the user's
next answer ("while you were away…").
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

from dialogs.i18n import Catalogs
from dialogs.models import Inbound, Location, Reply, UserKey
from dialogs.ports import Held, Undeliverable
from platforms.sequencer import Sequencer
from platforms.tencent.text import Part, compose, split_bytes
from platforms.tencent.xmlmsg import XmlMessage, element
from platforms.wechat.api import NotSubscribed, OutOfWindow, WechatApi, WechatError, WechatUnavailable
from platforms.wechat.menu import MENU_COMMANDS
from platforms.wechat.render import (
    image_message,
    language_of,
    menu_message,
    numbered,
    text_message,
)
from platforms.wechat.state import Choices, WechatState

log = logging.getLogger(__name__)

Handler = Callable[[Inbound], Awaitable[Sequence[Reply]]]
Unreachable = Callable[[UserKey], Awaitable[None]]

PLATFORM = "wx"
DEDUP_SECONDS = 600
"""Longer than WeChat's three retries (about 5 s apart) by far."""
_OPENID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NOT_TEXT = frozenset({"image", "voice", "video", "shortvideo", "link", "file"})


def user_key(openid: str) -> UserKey:
    return UserKey(f"{PLATFORM}:{openid}")


@dataclass(frozen=True, slots=True)
class AlertTemplate:
    """The operator's subscription-message template for alerts: its id and which of its keys take
    Yibao's ``balance``, ``threshold``, ``time`` and ``note`` (``{"balance": "amount1", ...}``)."""

    template_id: str
    fields: dict[str, str]
    long_term: bool = False
    """Long-term subscription (public services such as medical insurance may have it): one accept
    lasts. Otherwise each accept allows one message."""

    def data(self, facts: dict[str, str]) -> dict[str, str]:
        out = {}
        for name, key in self.fields.items():
            value = facts.get(name, "")
            if key.startswith("thing"):
                value = value[:20]
            elif key.startswith("phrase"):
                value = value[:5]
            out[key] = value
        return out


@dataclass(slots=True)
class Answer:
    """What a callback is answered: ``passive`` (the reply XML, not yet sealed), or ``success``;
    ``later``: sends to make once the response is out."""

    passive: bytes | None = None
    later: Callable[[], Awaitable[None]] | None = None


@dataclass
class _Turn:
    user: UserKey
    openid: str
    account: str
    replies: tuple[Reply, ...] = ()
    held: str | None = None


@dataclass
class WechatCore:
    handle: Handler
    api: WechatApi
    state: WechatState
    catalogs: Catalogs
    on_unreachable: Unreachable | None = None
    template: AlertTemplate | None = None
    default_locale: str = "zh"
    reply_within_seconds: float = 4.0
    concurrency: int = 64
    platform: str = PLATFORM
    sequencer: Sequencer = field(init=False)
    _background: set[asyncio.Task[Any]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.sequencer = Sequencer(self.concurrency)

    async def aclose(self) -> None:
        """Waits for the sends still under way (late answers), then closes the API client."""
        if self._background:
            await asyncio.wait(self._background, timeout=10.0)
        await self.api.aclose()

    # -- in ----------------------------------------------------------------------------------------

    async def on_message(self, msg: XmlMessage, *, received: float | None = None) -> Answer:
        """``received``: when the request came (``time.monotonic()``); WeChat's 5 s count from then."""
        received = time.monotonic() if received is None else received
        openid, account = msg.get("FromUserName"), msg.get("ToUserName")
        kind = msg.get("MsgType").lower()
        if not _OPENID.fullmatch(openid) or not account:
            log.warning("a WeChat message without a sender was ignored (type %s)", kind or "?")
            return Answer()
        event = msg.get("Event")
        dedup = msg.get("MsgId") or f"{openid}:{msg.get('CreateTime')}:{event}:{msg.get('EventKey')}"
        if not await self.state.first(f"wx:msg:{dedup}", DEDUP_SECONDS):
            log.info("a repeated WeChat callback (type %s) was answered and not handled again", kind)
            return Answer()
        user = user_key(openid)
        text: str | None = None
        where: Location | None = None
        if kind == "location":
            await self.state.opened(user, event=False)
            try:
                where = Location(lat=float(msg.get("Location_X")), lon=float(msg.get("Location_Y")))
            except ValueError:
                log.info("a WeChat location without coordinates was answered success")
                return Answer()
            text = ""
        elif kind == "text":
            await self.state.opened(user, event=False)
            text = await self._chosen(user, msg.get("Content"), msg.get("bizmsgmenuid"))
        elif kind == "event":
            text = await self._event(user, event.lower(), msg)
        elif kind in _NOT_TEXT:
            await self.state.opened(user, event=False)
            t = self.catalogs.get(self.default_locale)
            note = t.gettext("I understand text messages only. Send /help to see what I can do.")
            return Answer(passive=self._passive(openid, account, note))
        else:
            log.info("a WeChat message of an unknown type was answered success: %s", kind[:32] or "?")
        if text is None:
            return Answer()
        return await self._answer(_Turn(user, openid, account), text, received, where)

    async def _event(self, user: UserKey, event: str, msg: XmlMessage) -> str | None:
        if event == "subscribe":
            await self.state.opened(user, event=True)
            return "/start"
        if event == "unsubscribe":
            log.info("%s unfollowed the account: unreachable until they write again", user)
            if self.on_unreachable is not None:
                await self.on_unreachable(user)
            return None
        if event == "click":
            await self.state.opened(user, event=True)
            command = MENU_COMMANDS.get(msg.get("EventKey"))
            if command is None:
                log.info("a click on an unknown menu key was ignored")
            return command
        if event in ("subscribe_msg_popup_event", "subscribe_msg_change_event"):
            await self._subscriptions(user, msg)
            return None
        log.info("a WeChat event was answered success and not handled: %s", event[:32] or "?")
        return None

    async def _subscriptions(self, user: UserKey, msg: XmlMessage) -> None:
        """Accepts and rejects of subscription messages (an event may hold several templates)."""
        for item in msg.root.iter("List"):
            template_id = (item.findtext("TemplateId") or "").strip()
            status = (item.findtext("SubscribeStatusString") or "").strip()
            if not template_id or not status:
                continue
            accepted = status.startswith("accept")  # accept, acceptWithAlert, acceptWithAudio...
            long_term = self.template is not None and self.template.long_term
            await self.state.subscribed(user, template_id, accepted=accepted, long_term=long_term)
            log.info(
                "%s %s subscription template %s", user, "accepted" if accepted else "rejected", template_id
            )

    async def _chosen(self, user: UserKey, content: str, menu_id: str) -> str:
        """The payload of the choice a number or a menu click names, else the text as it is."""
        offered = await self.state.choices(user)
        if offered is None:
            return content
        number: str | None = None
        if menu_id:
            gen, _, n = menu_id.rpartition("-")
            number = n if gen == offered.gen else None
        elif content.strip().isdigit() and len(content.strip()) <= 2:
            number = content.strip()
        if number is not None and number.isdigit() and 1 <= int(number) <= len(offered.payloads):
            return offered.payloads[int(number) - 1]
        return content

    # -- the turn and its answer ----------------------------------------------------------------

    async def _answer(
        self, turn: _Turn, text: str, received: float, location: Location | None = None
    ) -> Answer:
        async def run() -> None:
            turn.replies = tuple(await self.handle(Inbound(user=turn.user, text=text, location=location)))
            turn.held = await self.state.take_held(turn.user)

        task = asyncio.create_task(self.sequencer.run(turn.openid, run))
        left = self.reply_within_seconds - (time.monotonic() - received)
        done, _ = await asyncio.wait({task}, timeout=max(0.0, left))
        if task not in done:
            log.info("the answer to %s is not ready in time: it goes as customer-service messages", turn.user)
            self._keep(asyncio.create_task(self._late(task, turn)))
            return Answer()
        if task.exception() is not None:
            log.error("a WeChat message could not be handled: %s", type(task.exception()).__name__)
            return Answer()
        return await self._in_time(turn)

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _messages(self, turn: _Turn) -> list[Part]:
        """The replies as WeChat messages: a held alert first, texts that fit merged into one."""
        lead: tuple[str, ...] = ()
        if turn.held:
            t = self.catalogs.get(language_of(turn.held))
            lead = (t.gettext("While you were away:") + "\n" + turn.held,)
        return compose(turn.replies, lead=lead)

    async def _in_time(self, turn: _Turn) -> Answer:
        messages = self._messages(turn)
        if not messages:
            await self.state.set_choices(turn.user, None)
            return Answer()
        first, rest = messages[0], messages[1:]
        passive_first = first.image is None and not first.choices
        custom = rest if passive_first else messages
        if custom and await self.state.take_quota(turn.user, len(custom)):
            gen = await self._offer(turn.user, custom)
            passive = self._passive(turn.openid, turn.account, first.text) if passive_first else None

            async def later() -> None:
                await self._send_all(turn, custom, gen)

            return Answer(passive=passive, later=later)
        # No room for customer-service messages: everything that can be text, in one passive reply.
        await self._offer(turn.user, messages)
        parts: list[str] = []
        for m in messages:
            if m.image is not None:
                t = self.catalogs.get(language_of(first.text))
                parts.append(t.gettext("(The picture cannot be sent here now; ask again later.)"))
            elif m.choices:
                parts.append(numbered(self.catalogs, m.text, m.choices))
            else:
                parts.append(m.text)
        text = split_bytes("\n\n".join(parts))[0]
        return Answer(passive=self._passive(turn.openid, turn.account, text))

    async def _offer(self, user: UserKey, messages: Sequence[Part]) -> str:
        """Record the choices of the last message that has any (or none): what a number answers."""
        gen = secrets.token_hex(3)
        offered = next((m.choices for m in reversed(messages) if m.choices), ())
        await self.state.set_choices(
            user, Choices(gen, tuple(b.payload for b in offered)) if offered else None
        )
        return gen

    async def _late(self, task: asyncio.Task[None], turn: _Turn) -> None:
        try:
            await task
        except Exception as e:
            log.error("a WeChat message could not be handled: %s", type(e).__name__)
            return
        messages = self._messages(turn)
        if not messages:
            return
        if not await self.state.take_quota(turn.user, len(messages)):
            text = "\n\n".join(m.text for m in messages if m.text)
            await self.state.hold(turn.user, text)
            log.warning(
                "a late answer to %s found no room in the window: held for their next message", turn.user
            )
            return
        gen = await self._offer(turn.user, messages)
        await self._send_all(turn, messages, gen)

    async def _send_all(self, turn: _Turn, messages: Sequence[Part], gen: str) -> None:
        try:
            for m in messages:
                await self._send(turn.openid, m, gen)
        except OutOfWindow:
            await self.state.close_window(turn.user)
            log.warning("WeChat says the window of %s is closed; the rest of the answer is lost", turn.user)
        except (WechatError, WechatUnavailable) as e:
            log.error("a customer-service message to %s failed: %s", turn.user, e)

    async def _send(self, openid: str, m: Part, gen: str) -> None:
        if m.image is not None:
            media_id = await self.api.upload_image(m.image.content, m.image.filename)
            await self.api.send_custom(image_message(openid, media_id))
        elif m.choices:
            await self.api.send_custom(menu_message(openid, m.text, m.choices, gen))
        else:
            await self.api.send_custom(text_message(openid, m.text))

    def _passive(self, openid: str, account: str, text: str) -> bytes:
        return element(
            {
                "ToUserName": openid,
                "FromUserName": account,
                "CreateTime": int(time.time()),
                "MsgType": "text",
                "Content": text,
            }
        )

    # -- alerts ------------------------------------------------------------------------------------

    async def deliver(self, user: UserKey, replies: tuple[Reply, ...]) -> None:
        """An alert (the ``Outlet`` port): in the window as messages, else a subscription message,
        else held for the user's next answer (``Held``)."""
        openid = user.removeprefix(f"{PLATFORM}:")
        turn = _Turn(user, openid, "", replies)
        messages = self._messages(turn)
        try:
            if messages and await self.state.take_quota(user, len(messages)):
                try:
                    gen = await self._offer(user, messages)
                    for m in messages:
                        await self._send(openid, m, gen)
                    return
                except OutOfWindow:
                    await self.state.close_window(user)
            template = self.template
            # The template is the low-balance alert's (balance, threshold, time, note): other kinds
            # (no ``fields``) are held rather than squeezed into it.
            fitting = bool(replies and replies[0].fields)
            if (
                template is not None
                and fitting
                and await self.state.take_subscription(user, template.template_id)
            ):
                facts = dict(replies[0].fields) if replies else {}
                try:
                    await self.api.send_subscription(openid, template.template_id, template.data(facts))
                    return
                except NotSubscribed:
                    await self.state.drop_subscription(user, template.template_id)
        except WechatUnavailable:
            raise
        except WechatError as e:
            raise Undeliverable(f"WeChat {e.errcode}") from None
        await self.state.hold(user, "\n\n".join(r.text for r in replies))
        raise Held("outside the 48-hour window, and no subscription message accepted")

"""The conversation: ``(UserState, Inbound) -> Outcome``, over the ports in ``ports.py``.

``Conversation.handle`` is what a platform adapter calls for every message. It runs ``step`` under
the store's per-user guard, so the state a step sees is the latest and what it decides is saved
before the next message from the same user is looked at. ``dialogs/states.mmd`` draws the states.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from functools import partial

from dialogs.account import AccountFlow
from dialogs.alerts import AlertFlow
from dialogs.binding import FACE_POLL_FIRST_SECONDS, FACE_POLL_MAX_SECONDS, BindingFlow
from dialogs.i18n import Catalogs, normalize_locale
from dialogs.intents import Command, Intent, normalize, parse_command, understand
from dialogs.masking import mask_id_number
from dialogs.member_info import MemberInfoFlow
from dialogs.models import (
    Button,
    Event,
    EventKind,
    Inbound,
    Outcome,
    Reply,
    Session,
    State,
    UserKey,
    UserState,
)
from dialogs.notices import AlertKind
from dialogs.places import PlacesFlow
from dialogs.ports import (
    LINK_MINUTES,
    ChartPort,
    Clock,
    DataInventory,
    EventSink,
    FaceCheckState,
    Followups,
    HeldItem,
    InsurancePort,
    InsuranceProblem,
    Offer,
    OtpPort,
    QrPort,
    StoreUnavailable,
    UserStore,
    WebLinks,
)
from dialogs.turn import BIND_STATES, DialogSettings, NeedsGuard

__all__ = ["Conversation", "DialogSettings"]

log = logging.getLogger(__name__)

_ANYTIME = frozenset({"cancel", "help", "start", "lang", "bind", "mydata", "web"})
_FLOW_COMMANDS = {State.BIND_CODE: "resend", State.BIND_PLATFORM: "platform", State.BIND_FACE: "facecheck"}
_YES = frozenset({"yes", "y", "ok", "confirm", "确认", "确定", "是", "是的", "好", "好的", "对"})
_LOOKS_LIKE_ID = re.compile(r"\d{17}[\dXx]")
_COMMANDS = frozenset(
    {
        "start",
        "help",
        "bind",
        "resend",
        "balance",
        "history",
        "chart",
        "platform",
        "alert",
        "unbind",
        "cancel",
        "lang",
        "mydata",
        "hospitals",
        "pharmacies",
        "drug",
        "voucher",
        "contributions",
        "family",
        "facecheck",
        "web",
    }
)

KNOWN_COMMANDS = _COMMANDS
"""Every command the conversation answers (the runtime counts updates by them)."""

_MOUNTED_COMMANDS = _COMMANDS - {"start", "help", "cancel", "lang"}
"""What Yibao answers in a host's bot whatever the user is doing; the rest is the host's unless the
user is in one of Yibao's flows."""


class Conversation:
    def __init__(
        self,
        *,
        store: UserStore,
        insurance: InsurancePort,
        otp: OtpPort,
        clock: Clock,
        catalogs: Catalogs,
        settings: DialogSettings | None = None,
        charts: ChartPort | None = None,
        events: EventSink | None = None,
        inventory: DataInventory | None = None,
        qr: QrPort | None = None,
        followups: Followups | None = None,
        web: WebLinks | None = None,
    ) -> None:
        self.store = store
        self.web = web
        self.events = events
        self.inventory = inventory
        self.charts = charts
        self.qr = qr
        self.followups = followups
        self.insurance = insurance
        self.otp = otp
        self.clock = clock
        self.catalogs = catalogs
        self.settings = settings or DialogSettings()

    async def handle(self, inbound: Inbound) -> tuple[Reply, ...]:
        """The replies to one message. Never raises: a failure becomes an apology, and is logged."""
        try:
            outcome = await self._read_only(inbound)
            if outcome is None:
                outcome = await self.store.update(inbound.user, partial(self.step, inbound=inbound))
        except Exception as e:
            unavailable = isinstance(e, StoreUnavailable)
            if unavailable:  # said once by the store, not once per message
                log.debug("update for %s not handled: the store is unavailable", inbound.user)
            else:
                log.exception("update failed for %s", inbound.user)
            if self.events is not None:
                cause = "store_unavailable" if unavailable else "error"
                await self.events.record(inbound.user, (Event(kind=EventKind.ANSWER_FAILED, reason=cause),))
            t = self.catalogs.get(normalize_locale(inbound.locale) or self.settings.default_locale)
            return (
                Reply(
                    text=t.gettext("Sorry, something went wrong on my side. Please try again in a moment.")
                ),
            )
        if outcome.events and self.events is not None:
            await self.events.record(inbound.user, outcome.events)
        return outcome.replies

    async def step(self, state: UserState, inbound: Inbound) -> Outcome:
        return await _Turn(self, state, inbound).run()

    async def claims(self, inbound: Inbound) -> bool:
        """Mounted in an operator's own bot: is this message Yibao's to answer? Its own commands
        (``/balance``, ``/bind``…, and the buttons, which send commands) always; anything else,
        the host's ``/start``, ``/help`` and ``/cancel`` included, only from a user who is in one of
        Yibao's flows. One Redis read when it is not a command of Yibao's."""
        cmd = parse_command(normalize(inbound.text))
        if cmd is not None and cmd.name in _MOUNTED_COMMANDS and (cmd.name != "web" or self.web is not None):
            return True
        state = await self.store.peek(inbound.user)
        return state.session.state is not State.IDLE

    async def _read_only(self, inbound: Inbound) -> Outcome | None:
        """Answer without the guard when the message only reads (a cached /balance, /help): the
        step runs dry, with ports that stop it at the first call, on a peek at the state; if it
        finishes and changes nothing, that is the answer (one round trip instead of two). Anything
        else returns None and runs again under the guard, from a fresh read."""
        state = await self.store.peek(inbound.user)
        if state.unreachable or state.session != Session():
            return None
        try:
            outcome = await _Turn(self, state, inbound, dry=True).run()
        except NeedsGuard:
            return None
        return outcome if outcome.changes_nothing(state) else None

    async def follow_face_check(self, user: UserKey, ticket: str) -> tuple[Reply, ...]:
        """The background half of the face step: ask the platform where the check stands, 2 s
        after the link went out, then at doubling intervals up to 15 s, without the user's guard
        (so the user, and everyone else, is answered meanwhile); once it is decided, or the wait
        (``verification_wait_seconds``) is over, continue the bind under the guard, as the user's
        next message would have. Nothing when the user moved on first (wrote again, cancelled)."""
        wait = self.settings.verification_wait_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        delay = FACE_POLL_FIRST_SECONDS
        while True:
            await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))
            delay = min(delay * 2, FACE_POLL_MAX_SECONDS)
            state = await self.store.peek(user)
            pending = state.session.pending
            if state.session.state is not State.BIND_FACE or pending is None or pending.ticket != ticket:
                return ()
            assert pending.platform is not None
            started = pending.face_since or self.clock.now()
            over = loop.time() >= deadline or (self.clock.now() - started).total_seconds() >= wait
            if not over:
                try:
                    decided, _ = await self.insurance.face_check(pending.platform, ticket)
                except InsuranceProblem:
                    continue  # the platform is busy or down: ask again later, within the wait
                if decided is FaceCheckState.PENDING:
                    continue
            outcome = await self.store.update(
                user, partial(self._resume_face, user=user, ticket=ticket, over=over)
            )
            return outcome.replies

    async def _resume_face(self, state: UserState, *, user: UserKey, ticket: str, over: bool) -> Outcome:
        pending = state.session.pending
        if state.session.state is not State.BIND_FACE or pending is None or pending.ticket != ticket:
            return Outcome(replies=(), session=state.session)  # the user's own message came first
        turn = _Turn(self, state, Inbound(user=user, text="", locale=pending.locale))
        answer = await turn.face_answer(pending, quiet=True, over=over)
        return answer if answer is not None else Outcome(replies=(), session=state.session)


class _Turn(BindingFlow, AccountFlow, AlertFlow, PlacesFlow, MemberInfoFlow):
    """One message being answered: the dispatch, and the commands that belong to no one flow."""

    async def run(self) -> Outcome:
        if self.location is not None:
            if self.session.state in BIND_STATES:  # not an answer to the step: restate it
                return self.in_flow()
            return await self.on_location(self.location.lat, self.location.lon)
        cmd = parse_command(self.text)
        if cmd is not None:
            return await self.command(cmd)
        match self.session.state:
            case State.BIND_NAME:
                return await self.on_name()
            case State.BIND_ID:
                return await self.on_id_number()
            case State.BIND_PLATFORM:
                return await self.on_platform(self.text)
            case State.BIND_CODE:
                return await self.on_code()
            case State.BIND_CARD:
                return await self.on_card()
            case State.BIND_FACE:
                return await self.on_face()
            case State.UNBIND_CONFIRM:
                return self.on_unbind_answer()
            case State.ALERT_AMOUNT if any(ch.isdigit() for ch in self.text):
                return await self.set_alert(self.text, checked=True)
            case _:
                return await self.free_text()

    async def command(self, cmd: Command) -> Outcome:
        state = self.session.state
        if state in BIND_STATES and cmd.name not in _ANYTIME and cmd.name != _FLOW_COMMANDS.get(state):
            # Nothing else works before the binding does: say so, and what the step waits for.
            known = cmd.name in _COMMANDS
            return self.in_flow(
                self.t.gettext(
                    "You are in the middle of binding, so /{name} has to wait until it is done."
                ).format(name=cmd.name)
                if known
                else self.t.gettext("I don't know the command /{name}.").format(name=cmd.name)
            )
        if state is State.UNBIND_CONFIRM and cmd.name == "unbind" and cmd.arg.lower() in _YES:
            return self.unbind_now()
        handlers: dict[str, Callable[[str], Awaitable[Outcome]]] = {
            "start": self.cmd_start,
            "help": self.cmd_help,
            "bind": self.cmd_bind,
            "resend": self.cmd_resend,
            "balance": self.cmd_balance,
            "history": self.cmd_history,
            "chart": self.cmd_chart,
            "platform": self.on_platform,
            "alert": self.cmd_alert,
            "unbind": self.cmd_unbind,
            "cancel": self.cmd_cancel,
            "lang": self.cmd_lang,
            "mydata": self.cmd_mydata,
            "hospitals": self.cmd_hospitals,
            "pharmacies": self.cmd_pharmacies,
            "drug": self.cmd_drug,
            "voucher": self.cmd_voucher,
            "contributions": self.cmd_contributions,
            "family": self.cmd_family,
            "facecheck": self.cmd_facecheck,
            "web": self.cmd_web,
        }
        handler = handlers.get(cmd.name)
        if handler is None:
            return self.out(
                self.t.gettext("I don't know the command /{name}. /help lists what I can do.").format(
                    name=cmd.name
                )
            )
        return await handler(cmd.arg)

    async def cmd_facecheck(self, _arg: str = "") -> Outcome:
        if self.session.state is not State.BIND_FACE:
            return self.out(
                self.bound_note()
                or self.t.gettext("There is no face check waiting. Send /bind to start binding.")
            )
        return await self.on_face()

    async def cmd_web(self, _arg: str = "") -> Outcome:
        """A single-use link into Yibao's own pages, as this user (when the operator serves them)."""
        web = self.conv.web
        if web is None:
            return self.out(
                self.t.gettext("I don't know the command /{name}. /help lists what I can do.").format(
                    name="web"
                )
            )
        if self.from_page:
            return self.out(self.t.gettext("You are on Yibao's page already."))
        if self.dry:
            raise NeedsGuard  # a link is a write (the token)
        link = await web.link(self.user)
        text = self.t.gettext(
            "Your Yibao page: bind, your account, the alert and unbind, without your ID number in this "
            "chat. The link opens once, within {minutes} minutes; don't pass it on."
        ).format(minutes=LINK_MINUTES)
        return Outcome(replies=(Reply(text=text, web_link=link),), session=self.keep_flow())

    async def offered(self) -> frozenset[Offer]:
        """What the user's platform offers beyond the balance (unbound: what any platform offers)."""
        binding = self.profile.binding
        if binding is not None:
            return (await self.insurance.offers(binding.platform)).features
        found: frozenset[Offer] = frozenset()
        for info in self.insurance.platforms():
            found |= (await self.insurance.offers(info.name)).features
        return found

    def offer_lines(self, offered: frozenset[Offer]) -> tuple[str, ...]:
        t = self.t
        lines = {
            Offer.INSTITUTIONS: t.gettext(
                "/hospitals [place or name] · /pharmacies [place] — designated institutions (or share "
                "your location for the nearest)"
            ),
            Offer.DRUGS: t.gettext("/drug 阿莫西林 — is a drug on the reimbursement list, and how"),
            Offer.VOUCHER: t.gettext("/voucher — your medical-insurance e-voucher"),
            Offer.CONTRIBUTIONS: t.gettext("/contributions — this month's credit into your account, and why"),
            Offer.FAMILY: t.gettext("/family — who may use your personal account, and what they spent"),
        }
        return tuple(text for offer, text in lines.items() if offer in offered)

    def can_alert(self) -> bool:
        """Alerts are offered unless the bound member is known to have no personal account."""
        binding = self.profile.binding
        return binding is None or binding.personal_account is not False

    def flow_status(self) -> str:
        """The status line: a bind in progress says so, with its step, rather than "not bound"."""
        if self.session.state in BIND_STATES:
            return self.t.gettext("Status: not bound yet; binding is in progress, at {step}.").format(
                step=self.step_of(self.session.state)
            )
        status = self.status()
        if not self.can_alert():
            status += "\n" + self.t.gettext(
                "Your insurance has no personal account, so there is no balance alert; /balance shows "
                "the pooled fund."
            )
        return status

    def with_flow(self, *replies: Reply, set_lang: str | None = None) -> Outcome:
        """Replies to /start, /help or /lang: a bind in progress goes on, and its step is restated."""
        in_bind = self.session.state in BIND_STATES
        tail = (self.prompt(),) if in_bind else ()
        return Outcome(replies=(*replies, *tail), session=self.keep_flow(), set_lang=set_lang)

    async def cmd_start(self, _arg: str = "") -> Outcome:
        t = self.t
        if self.can_alert():
            intro = t.gettext(
                "Hi, I'm Yibao. I check your medical-insurance (医保) account for you, right here in the chat:\n"
                "• /bind — link your insurance account (real name + ID number + SMS code)\n"
                '• /balance — personal account and pooled fund (or just ask "how much is left?")\n'
                "• /history — your latest payments · /chart — the last 12 months in a picture\n"
                "• /alert 100 — hear from me when the balance drops below ¥100\n"
                "• /unbind — unlink and erase everything I keep about you\n"
                "• /lang zh — 切换到中文 · /help — all commands · /cancel — leave what you are doing"
            )
        else:
            intro = t.gettext(
                "Hi, I'm Yibao. I check your medical-insurance (医保) account for you, right here in the chat:\n"
                '• /balance — this year\'s pooled fund (or just ask "how much is left?")\n'
                "• /history — your latest payments · /chart — the last 12 months in a picture\n"
                "• /unbind — unlink and erase everything I keep about you\n"
                "• /lang zh — 切换到中文 · /help — all commands · /cancel — leave what you are doing"
            )
        privacy = t.gettext(
            "What I keep: your binding (your ID number and the phone number on file, both encrypted), "
            "your alert amount and your language, only to answer you and to alert you. A conversation "
            "in progress is forgotten after {minutes} minutes of silence. /unbind erases all of it at once."
        ).format(minutes=self.cfg.session_idle_minutes)
        return self.with_flow(Reply(text=intro), Reply(text=privacy + "\n\n" + self.flow_status()))

    async def cmd_help(self, _arg: str = "") -> Outcome:
        if self.can_alert():
            text = self.t.gettext(
                "Commands:\n"
                "/bind — link your insurance account\n"
                "/balance — see what is left\n"
                "/history — latest payments (/history 30 for more) · /chart — the last 12 months\n"
                "/alert 100 — alert me below ¥100 · /alert — show · /alert off — turn off\n"
                "/unbind — unlink and erase my data\n"
                "/mydata — what I keep about you\n"
                "/lang zh or /lang en — language\n"
                "/cancel — leave the current step\n"
                'You can also just ask: "how much is left?", "how much did I spend last month?", '
                '"alert me below 100".'
            )
        else:
            text = self.t.gettext(
                "Commands:\n"
                "/balance — this year's pooled fund\n"
                "/history — latest payments (/history 30 for more) · /chart — the last 12 months\n"
                "/unbind — unlink and erase my data\n"
                "/mydata — what I keep about you\n"
                "/lang zh or /lang en — language\n"
                "/cancel — leave the current step\n"
                'You can also just ask: "how much is left?", "how much did the pooled fund pay this year?".'
            )
        if self.conv.web is not None:
            text += "\n" + self.t.gettext(
                "/web — Yibao's page: bind, account, alert and unbind in your browser"
            )
        extra = self.offer_lines(await self.offered())
        for kind in await self.offered_kinds():
            extra += (
                (self.t.gettext("/alert credit on — tell me when the monthly credit arrives"),)
                if kind is AlertKind.CREDIT
                else (
                    self.t.gettext("/alert family on — tell me when a family member spends from my account"),
                )
            )
        if extra:
            text += "\n" + self.t.gettext("Your insurance platform also offers:") + "\n" + "\n".join(extra)
        return self.with_flow(Reply(text=text))

    async def free_text(self) -> Outcome:
        if _LOOKS_LIKE_ID.search(self.text):
            return self.out(
                self.t.gettext(
                    "That looks like an ID number. Please don't send it unless I ask for it while binding "
                    "(/bind). Keep your ID number, passwords and SMS codes to yourself."
                ),
                sensitive=True,
            )
        understood = understand(self.text)
        match understood.intent:
            case Intent.BALANCE:
                return await self.cmd_balance()
            case Intent.SPENDING:
                return await self.spending(understood.period, understood.fund)
            case Intent.HISTORY:
                return await self.cmd_history()
            case Intent.CHART:
                return await self.cmd_chart()
            case Intent.ALERT:
                return await self.set_alert(understood.arg)
            case Intent.AMOUNT:
                suggested = await self.suggest_alert(understood.arg)
                if suggested is not None:
                    return suggested
            case Intent.BIND:
                return await self.cmd_bind()
            case Intent.HELP:
                return await self.cmd_help()
            case Intent.INSTITUTIONS:
                return await self.institutions(understood.arg or None, "")
            case Intent.DRUG:
                return await self.cmd_drug(understood.arg)
            case Intent.VOUCHER:
                return await self.cmd_voucher()
            case Intent.CONTRIBUTIONS:
                return await self.cmd_contributions()
            case Intent.FAMILY:
                return await self.cmd_family()
            case Intent.GREETING:
                return await self.cmd_start()
        return self.out(
            self.t.gettext(
                "I can tell you what is left on your medical-insurance account. Try /balance, ask "
                '"how much is left?", or send /help.'
            )
        )

    async def cmd_lang(self, arg: str) -> Outcome:
        wanted = {"中文": "zh", "chinese": "zh", "english": "en", "英文": "en"}.get(arg.lower()) or (
            normalize_locale(arg)
        )
        if wanted is None:
            return self.with_flow(
                Reply(text=self.t.gettext("Send /lang zh for Chinese or /lang en for English."))
            )
        self.t = self.conv.catalogs.get(wanted)  # the step, if any, is restated in the new language
        return self.with_flow(Reply(text=self.t.gettext("Language set to English.")), set_lang=wanted)

    async def cmd_cancel(self, _arg: str = "") -> Outcome:
        if self.session.state is State.IDLE:
            return self.out(self.t.gettext("There is nothing to cancel. /help lists what I can do."))
        if self.session.state is State.BIND_CODE:
            await self.otp.discard(self.user)
        return self.out(self.t.gettext("Cancelled. What else can I do? /help lists the commands."))

    async def cmd_unbind(self, _arg: str = "") -> Outcome:
        binding = self.profile.binding
        if binding is None:
            nothing = self.out(
                self.t.gettext("You are not bound, and now I keep nothing else about you either."), erase=True
            )
            return self.noted(nothing, Event(kind=EventKind.UNBOUND))
        question = Reply(
            text=self.t.gettext(
                "This unbinds ID {id} and erases everything I keep about you: the binding, your alert and "
                'your settings. Are you sure? Reply "yes" to confirm; anything else keeps it.'
            ).format(id=mask_id_number(binding.id_number.get_secret_value())),
            buttons=(
                Button(label=self.t.gettext("Yes, unbind and erase"), payload="/unbind yes"),
                Button(label=self.t.gettext("No, keep it"), payload="/cancel"),
            ),
        )
        return Outcome(replies=(question,), session=Session(state=State.UNBIND_CONFIRM))

    def on_unbind_answer(self) -> Outcome:
        if self.text.lower() in _YES:
            return self.unbind_now()
        return self.out(self.t.gettext("OK, your binding stays."))

    def unbind_now(self) -> Outcome:
        return self.noted(self.erased(), Event(kind=EventKind.UNBOUND))

    def erased(self) -> Outcome:
        return self.out(
            self.t.gettext(
                "Done. Your binding and everything I kept about you are erased. Send /bind if you want to "
                "use Yibao again."
            ),
            erase=True,
        )

    async def cmd_mydata(self, _arg: str = "") -> Outcome:
        """Everything kept about the user, masked, and how long each part is kept (PIPL art. 44-45)."""
        inventory = self.conv.inventory
        items = await inventory.held(self.user) if inventory is not None else ()
        t = self.t
        if not items:
            return self.with_flow(Reply(text=t.gettext("I keep nothing about you.")))
        lines = [t.gettext("What I keep about you (masked), and for how long:")]
        lines += [f"• {self.held_label(item.what)}: {item.value} ({self.held_kept(item)})" for item in items]
        lines.append(
            t.gettext(
                "/unbind erases all of it at once. The operator's records of what happened (binds, "
                "erasures) name you only by a keyed hash."
            )
        )
        return self.with_flow(Reply(text="\n".join(lines)))

    def held_label(self, what: str) -> str:
        t = self.t
        labels = {
            "binding.platform": t.gettext("insurance platform"),
            "binding.member_id": t.gettext("member number on that platform"),
            "binding.id_number": t.gettext("ID number (encrypted)"),
            "binding.phone": t.gettext("phone number on file (encrypted)"),
            "binding.bound_at": t.gettext("bound since"),
            "binding.personal_account": t.gettext("has a personal account"),
            "alert.threshold": t.gettext("alert below"),
            "alert.state": t.gettext("alert state"),
            "alert.language": t.gettext("language of alerts"),
            "alert.credit": t.gettext("alert when the monthly credit arrives"),
            "alert.family": t.gettext("alert when a family member spends from your account"),
            "alert.family_seen": t.gettext(
                "relatives' spending this year when last told (amounts only, no names)"
            ),
            "settings.language": t.gettext("language"),
            "session": t.gettext("conversation in progress"),
            "session.name": t.gettext("name being bound"),
            "session.id_number": t.gettext("ID number being bound"),
            "session.phone": t.gettext("phone number for the code"),
            "balance": t.gettext("last balance fetched"),
            "otp.code": t.gettext("SMS code waiting (only its keyed hash)"),
            "otp.sends": t.gettext("SMS codes sent in the last hour"),
            "otp.failures": t.gettext("failed bind attempts lately"),
            "otp.locked_until": t.gettext("binding paused until"),
            "unreachable": t.gettext("the chat platform said you cannot be reached"),
            "alert.sending": t.gettext("an alert being sent"),
            "schedule": t.gettext("next balance check"),
            "outbox": t.gettext("alerts waiting to be sent"),
            "alerts.dropped": t.gettext("records of alerts not sent"),
            "channel.window": t.gettext("when you last wrote (for this chat app's message window)"),
            "channel.choices": t.gettext("the choices last offered to you"),
            "channel.subscriptions": t.gettext("subscription messages you accepted"),
            "channel.held": t.gettext("an alert kept for your next message"),
            "web.sessions": t.gettext("sessions open on Yibao's page"),
        }
        return labels.get(what, what)

    def held_kept(self, item: HeldItem) -> str:
        t = self.t
        if item.kept == "expires" and item.expires_in is not None:
            minutes = max(1, (item.expires_in + 59) // 60)
            return t.ngettext("deleted in {n} minute", "deleted in {n} minutes", minutes).format(n=minutes)
        return {
            "until_unbind": t.gettext("until /unbind"),
            "until_sent": t.gettext("until it is sent or dropped"),
            "until_written": t.gettext("until you write again"),
            "capped": t.gettext("until newer records push it out"),
        }.get(item.kept, item.kept)

"""The conversation: ``(UserState, Inbound) -> Outcome``, over the ports in ``ports.py``.

``Conversation.handle`` is what a platform adapter calls for every message. It runs ``step`` under
the store's per-user guard, so the state a step sees is the latest and what it decides is saved
before the next message from the same user is looked at. ``dialogs/states.mmd`` draws the states.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from dialogs.amounts import AmountProblem, parse_amount
from dialogs.i18n import Catalogs, Translator, normalize_locale
from dialogs.identity import IdProblem, NameProblem, check_id_number, check_name, id_length
from dialogs.intents import Command, Fund, Intent, Period, normalize, parse_command, understand
from dialogs.masking import mask_id_number
from dialogs.models import (
    Attachment,
    BalanceView,
    Binding,
    Button,
    CachedBalance,
    Inbound,
    Outcome,
    PendingBind,
    PlatformName,
    Reply,
    Session,
    State,
    UserState,
)
from dialogs.ports import (
    ChartData,
    ChartPort,
    Clock,
    CodeRefused,
    CodeSent,
    InsurancePort,
    InsuranceProblem,
    OtpPort,
    PlatformInfo,
    ProblemCode,
    Refusal,
    TransactionView,
    UserStore,
    Verdict,
)
from dialogs.spending import (
    SPENDING_CATEGORIES,
    at_midnight,
    balance_series,
    month_start,
    monthly_spending,
    period_bounds,
    totals,
)

log = logging.getLogger(__name__)

_BIND_STATES = frozenset({State.BIND_NAME, State.BIND_ID, State.BIND_PLATFORM, State.BIND_CODE})
_ANYTIME = frozenset({"cancel", "help", "start", "lang", "bind"})
_FLOW_COMMANDS = {State.BIND_CODE: "resend", State.BIND_PLATFORM: "platform"}
_MORE = frozenset({"more", "next", "更多", "下一页"})
_MAX_PAGES = 20
"""Pages of transactions read for one answer (at 100 a page, more than a year of them)."""
_YES = frozenset({"yes", "y", "ok", "confirm", "确认", "确定", "是", "是的", "好", "好的", "对"})
_OFF = frozenset({"off", "stop", "none", "关闭", "关", "取消", "停止", "不用了"})
_CODE = re.compile(r"^\d{4,8}$")
_LOOKS_LIKE_ID = re.compile(r"\d{17}[\dXx]")


@dataclass(frozen=True, slots=True)
class DialogSettings:
    default_locale: str = "zh"
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    max_threshold: Decimal = Decimal("50000")
    session_idle_minutes: int = 30
    code_ttl_minutes: int = 5
    hotline: str = "12393"
    balance_cache_seconds: int = 60
    history_page: int = 10
    history_max: int = 50


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
    ) -> None:
        self.store = store
        self.charts = charts
        self.insurance = insurance
        self.otp = otp
        self.clock = clock
        self.catalogs = catalogs
        self.settings = settings or DialogSettings()

    async def handle(self, inbound: Inbound) -> tuple[Reply, ...]:
        """The replies to one message. Never raises: a failure becomes an apology, and is logged."""
        try:
            outcome = await self.store.update(inbound.user, partial(self.step, inbound=inbound))
        except Exception:
            log.exception("update failed for %s", inbound.user)
            t = self.catalogs.get(normalize_locale(inbound.locale) or self.settings.default_locale)
            return (
                Reply(
                    text=t.gettext("Sorry, something went wrong on my side. Please try again in a moment.")
                ),
            )
        return outcome.replies

    async def step(self, state: UserState, inbound: Inbound) -> Outcome:
        return await _Turn(self, state, inbound).run()


class _Turn:
    """One message being answered: the state it found, the user's language, the time."""

    def __init__(self, conv: Conversation, state: UserState, inbound: Inbound) -> None:
        self.conv = conv
        self.cfg = conv.settings
        self.user = inbound.user
        self.session = state.session
        self.profile = state.profile
        self.cached = state.balance
        self.locale = state.profile.lang or normalize_locale(inbound.locale) or conv.settings.default_locale
        self.t: Translator = conv.catalogs.get(self.locale)
        self.now = conv.clock.now()
        self.text = normalize(inbound.text)

    # -- plumbing ------------------------------------------------------------------------------

    def out(
        self,
        *texts: str,
        session: Session | None = None,
        sensitive: bool = False,
        set_binding: Binding | None = None,
        set_threshold: Decimal | None = None,
        clear_threshold: bool = False,
        set_lang: str | None = None,
        cache_balance: CachedBalance | None = None,
        erase: bool = False,
    ) -> Outcome:
        """An outcome with plain-text replies; the session falls back to idle unless one is given."""
        replies = tuple(Reply(text=x, sensitive_input=sensitive and i == 0) for i, x in enumerate(texts))
        return Outcome(
            replies=replies,
            session=session or Session(),
            set_binding=set_binding,
            set_threshold=set_threshold,
            clear_threshold=clear_threshold,
            set_lang=set_lang,
            cache_balance=cache_balance,
            erase=erase,
        )

    def at(self, when: datetime) -> str:
        local = when.astimezone(self.cfg.timezone)
        if local.date() == self.now.astimezone(self.cfg.timezone).date():
            return local.strftime("%H:%M")
        return local.strftime("%Y-%m-%d %H:%M")

    def stamp(self, when: datetime) -> str:
        return when.astimezone(self.cfg.timezone).strftime("%Y-%m-%d %H:%M")

    @staticmethod
    def money(amount: Decimal) -> str:
        return f"¥{amount:,.2f}"

    async def run(self) -> Outcome:
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
            case State.UNBIND_CONFIRM:
                return self.on_unbind_answer()
            case State.ALERT_AMOUNT if any(ch.isdigit() for ch in self.text):
                return self.set_alert(self.text)
            case _:
                return await self.free_text()

    async def command(self, cmd: Command) -> Outcome:
        state = self.session.state
        if state in _BIND_STATES and cmd.name not in _ANYTIME and cmd.name != _FLOW_COMMANDS.get(state):
            return self.out(
                self.t.gettext(
                    "You are in the middle of binding. Send what I asked for, or /cancel to stop."
                ),
                session=self.session,
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
        }
        handler = handlers.get(cmd.name)
        if handler is None:
            return self.out(
                self.t.gettext("I don't know the command /{name}. /help lists what I can do.").format(
                    name=cmd.name
                ),
                session=self.session if state in _BIND_STATES else None,
            )
        return await handler(cmd.arg)

    # -- information ---------------------------------------------------------------------------

    async def cmd_start(self, _arg: str = "") -> Outcome:
        t = self.t
        intro = t.gettext(
            "Hi, I'm Yibao. I check your medical-insurance (医保) account for you, right here in the chat:\n"
            "• /bind — link your insurance account (real name + ID number + SMS code)\n"
            '• /balance — personal account and pooled fund (or just ask "how much is left?")\n'
            "• /history — your latest payments · /chart — the last 12 months in a picture\n"
            "• /alert 100 — hear from me when the balance drops below ¥100\n"
            "• /unbind — unlink and erase everything I keep about you\n"
            "• /lang zh — 切换到中文 · /help — all commands · /cancel — leave what you are doing"
        )
        privacy = t.gettext(
            "What I keep: your binding (your ID number and the phone number on file, both encrypted), "
            "your alert amount and your language, only to answer you and to alert you. A conversation "
            "in progress is forgotten after {minutes} minutes of silence. /unbind erases all of it at once."
        ).format(minutes=self.cfg.session_idle_minutes)
        return self.out(intro, privacy + "\n\n" + self.status(), session=self.keep_flow())

    async def cmd_help(self, _arg: str = "") -> Outcome:
        text = self.t.gettext(
            "Commands:\n"
            "/bind — link your insurance account\n"
            "/balance — see what is left\n"
            "/history — latest payments (/history 30 for more) · /chart — the last 12 months\n"
            "/alert 100 — alert me below ¥100 · /alert — show · /alert off — turn off\n"
            "/unbind — unlink and erase my data\n"
            "/lang zh or /lang en — language\n"
            "/cancel — leave the current step\n"
            'You can also just ask: "how much is left?", "how much did I spend last month?", '
            '"alert me below 100".'
        )
        return self.out(text, session=self.keep_flow())

    def keep_flow(self) -> Session:
        """Help and start do not throw away a bind in progress."""
        return self.session if self.session.state in _BIND_STATES else Session()

    def status(self) -> str:
        binding = self.profile.binding
        if binding is None:
            return self.t.gettext("Status: not bound yet. Send /bind to start.")
        return self.t.gettext("Status: bound to ID {id} since {date}.").format(
            id=mask_id_number(binding.id_number.get_secret_value()),
            date=binding.bound_at.astimezone(self.cfg.timezone).strftime("%Y-%m-%d"),
        )

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
                return self.set_alert(understood.arg)
            case Intent.BIND:
                return await self.cmd_bind()
            case Intent.HELP:
                return await self.cmd_help()
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
            return self.out(
                self.t.gettext("Send /lang zh for Chinese or /lang en for English."), session=self.keep_flow()
            )
        t = self.conv.catalogs.get(wanted)
        return self.out(t.gettext("Language set to English."), session=self.keep_flow(), set_lang=wanted)

    async def cmd_cancel(self, _arg: str = "") -> Outcome:
        if self.session.state is State.IDLE:
            return self.out(self.t.gettext("There is nothing to cancel. /help lists what I can do."))
        if self.session.state is State.BIND_CODE:
            await self.conv.otp.discard(self.user)
        return self.out(self.t.gettext("Cancelled. What else can I do? /help lists the commands."))

    # -- binding -------------------------------------------------------------------------------

    def locked_out(self, until: datetime) -> Outcome:
        return self.out(
            self.t.gettext(
                "Too many failed attempts. To protect your account, binding is paused until {until}. "
                "Questions: call the medical-insurance hotline {hotline}."
            ).format(until=self.at(until), hotline=self.cfg.hotline)
        )

    async def cmd_bind(self, _arg: str = "") -> Outcome:
        if self.profile.binding is not None:
            return self.out(
                self.t.gettext(
                    "You are already bound to ID {id}. To bind another account, /unbind first."
                ).format(id=mask_id_number(self.profile.binding.id_number.get_secret_value()))
            )
        if self.session.state is State.BIND_CODE:
            await self.conv.otp.discard(self.user)
        until = await self.conv.otp.locked_until(self.user)
        if until is not None:
            return self.locked_out(until)
        return self.out(
            self.t.gettext(
                "Let's link your medical-insurance account. I need your real name and ID number to find "
                "you on the insurance platform; the SMS code goes to the phone number the platform has on "
                "file, not to one you type. Your ID number is stored encrypted, and /unbind erases it at "
                "any time. By continuing you agree to this."
            ),
            self.t.gettext("Step 1 of 3: your real name, as on your ID card (or /cancel):"),
            session=Session(state=State.BIND_NAME),
        )

    async def on_name(self) -> Outcome:
        name = check_name(self.text)
        if isinstance(name, NameProblem):
            message = {
                NameProblem.TOO_SHORT: self.t.gettext(
                    "That name is too short. Please send your full real name as on your ID card, e.g. 张伟."
                ),
                NameProblem.TOO_LONG: self.t.gettext(
                    "That name is too long. Please send your real name as on your ID card, e.g. 张伟."
                ),
                NameProblem.CHARACTERS: self.t.gettext(
                    "A name holds only Chinese characters, the middle dot · or Latin letters. Please send "
                    "your real name as on your ID card, e.g. 张伟 or 阿依古丽·买买提."
                ),
                NameProblem.LOOKS_LIKE_ID: self.t.gettext(
                    "That looks like an ID number. Your name first, please, e.g. 张伟; the ID number comes next."
                ),
            }[name]
            return self.out(message, session=self.session, sensitive=name is NameProblem.LOOKS_LIKE_ID)
        return self.out(
            self.t.gettext(
                "Step 2 of 3: your 18-character Resident ID number (居民身份证号), e.g. 11010519491231002X:"
            ),
            session=Session(state=State.BIND_ID, pending=PendingBind(name=SecretStr(name))),
        )

    async def on_id_number(self) -> Outcome:
        pending = self.session.pending
        if pending is None or pending.name is None:  # the session lost its pending part: start over
            return await self.cmd_bind()
        checked = check_id_number(self.text, today=self.now.astimezone(self.cfg.timezone).date())
        if isinstance(checked, IdProblem):
            return self.out(self.id_problem(checked), session=self.session, sensitive=True)
        platforms = self.ranked_platforms(checked)
        if len(platforms) == 1:
            return await self.look_up(pending.name, checked, platforms[0].name)
        return self.ask_platform(
            Session(
                state=State.BIND_PLATFORM,
                pending=PendingBind(name=pending.name, id_number=SecretStr(checked)),
            ),
            platforms,
            sensitive=True,
        )

    def ranked_platforms(self, id_number: str) -> list[PlatformInfo]:
        """The platforms, those serving the ID number's region first (most specific first)."""
        return sorted(self.conv.insurance.platforms(), key=lambda p: -p.serves(id_number))

    def ask_platform(
        self, session: Session, platforms: list[PlatformInfo], *, sensitive: bool = False
    ) -> Outcome:
        best = platforms[0] if platforms[0].serves(self.id_of(session)) else None
        buttons = tuple(
            Button(
                label=(
                    self.t.gettext("{platform} (matches your ID number)").format(platform=p.label)
                    if p is best
                    else p.label
                ),
                payload=f"/platform {p.name}",
            )
            for p in platforms
        )
        text = self.t.gettext("Which insurance platform are you insured on? Choose one:")
        return Outcome(
            replies=(Reply(text=text, buttons=buttons, sensitive_input=sensitive),), session=session
        )

    @staticmethod
    def id_of(session: Session) -> str:
        pending = session.pending
        return pending.id_number.get_secret_value() if pending and pending.id_number else ""

    async def on_platform(self, answer: str) -> Outcome:
        pending = self.session.pending
        if self.session.state is not State.BIND_PLATFORM or pending is None or pending.name is None:
            return self.out(
                self.t.gettext("There is no platform to choose right now. Send /bind to start binding.")
            )
        id_number = self.id_of(self.session)
        platforms = self.ranked_platforms(id_number)
        wanted = answer.strip().lower()
        chosen = next((p for p in platforms if wanted in (p.name.lower(), p.label.lower())), None)
        if chosen is None and wanted.isdigit() and 1 <= int(wanted) <= len(platforms):
            chosen = platforms[int(wanted) - 1]
        if chosen is None:
            return self.ask_platform(self.session, platforms)
        return await self.look_up(pending.name, id_number, chosen.name)

    async def look_up(self, name: SecretStr, id_number: str, platform: PlatformName) -> Outcome:
        try:
            match = await self.conv.insurance.find_member(platform, name.get_secret_value(), id_number)
        except InsuranceProblem as problem:
            return await self.lookup_failed(problem, name)
        sent = await self.conv.otp.send(self.user, match.phone, self.locale)
        at_code_step = Session(
            state=State.BIND_CODE,
            pending=PendingBind(
                name=name,
                id_number=SecretStr(id_number),
                member_id=match.member_id,
                platform=match.platform,
                phone=match.phone,
                masked_phone=sent.masked_phone,
            ),
        )
        if isinstance(sent, CodeRefused):
            # A code went to this phone moments ago: wait at the code step, where /resend works.
            keep = at_code_step if sent.reason is Refusal.TOO_SOON else None
            return self.refused(sent, sensitive=True, session=keep)
        return self.out(self.code_sent(sent), session=at_code_step, sensitive=True)

    def id_problem(self, problem: IdProblem) -> str:
        t = self.t
        return {
            IdProblem.LENGTH: t.gettext(
                "An ID number has 18 characters; you sent {n}. Please check it and send it again."
            ).format(n=id_length(self.text)),
            IdProblem.FORMAT: t.gettext(
                "An ID number is 17 digits followed by a digit or X. Please check it and send it again."
            ),
            IdProblem.BIRTH_DATE: t.gettext(
                "The birth date in that ID number (characters 7 to 14, e.g. 19900307) is not a possible "
                "date. Please check it and send it again."
            ),
            IdProblem.CHECKSUM: t.gettext(
                "The last character of that ID number does not match the others, so a character was "
                "probably mistyped. Please check it and send it again."
            ),
            IdProblem.REGION: t.gettext(
                "The first six digits of that ID number are not a known region code. Please check it "
                "and send it again."
            ),
        }[problem]

    async def lookup_failed(self, problem: InsuranceProblem, name: SecretStr) -> Outcome:
        t = self.t
        if problem.code in (ProblemCode.MEMBER_NOT_FOUND, ProblemCode.IDENTITY_MISMATCH):
            until = await self.conv.otp.record_failure(self.user)
            if until is not None:
                return self.locked_out(until)
        if problem.code is ProblemCode.MEMBER_NOT_FOUND:
            return self.out(
                t.gettext(
                    "I could not find insurance records for that ID number. Please check it and send it "
                    "again. If you enrolled recently, your records may not be online yet: try again later "
                    "or call {hotline}."
                ).format(hotline=self.cfg.hotline),
                session=Session(state=State.BIND_ID, pending=PendingBind(name=name)),
                sensitive=True,
            )
        if problem.code is ProblemCode.IDENTITY_MISMATCH:
            return self.out(
                t.gettext(
                    "The name does not match that ID number on the insurance platform. Please send your "
                    "name exactly as on your ID card (with the middle dot · if it has one):"
                ),
                session=Session(state=State.BIND_NAME),
                sensitive=True,
            )
        return self.out(self.platform_problem(problem), sensitive=True)

    def platform_problem(self, problem: InsuranceProblem) -> str:
        """What to tell the user when the platform cannot answer; never a figure that may be wrong."""
        t, hotline = self.t, self.cfg.hotline
        match problem.code:
            case ProblemCode.ACCOUNT_LOCKED if problem.until is not None:
                return t.gettext(
                    "Your account on the insurance platform is locked after too many wrong password "
                    "attempts. It unlocks at {until}; you can also reset your password in the National "
                    "Medical Insurance Service app (国家医保服务平台), or call {hotline}."
                ).format(until=self.at(problem.until), hotline=hotline)
            case ProblemCode.ACCOUNT_LOCKED:
                return t.gettext(
                    "Your account on the insurance platform is locked after too many wrong password "
                    "attempts. Reset your password in the National Medical Insurance Service app "
                    "(国家医保服务平台) to unlock it, or call {hotline}."
                ).format(hotline=hotline)
            case ProblemCode.MAINTENANCE if problem.retry_after:
                back = self.now.timestamp() + problem.retry_after
                return t.gettext(
                    "The insurance platform is under maintenance. Please try again after {time}. I won't "
                    "show figures that might be wrong."
                ).format(time=self.at(datetime.fromtimestamp(math.ceil(back), tz=self.cfg.timezone)))
            case ProblemCode.MAINTENANCE:
                return t.gettext(
                    "The insurance platform is under maintenance. Please try again later. I won't show "
                    "figures that might be wrong."
                )
            case ProblemCode.RATE_LIMITED:
                return t.gettext("The insurance platform is busy. Please try again in a minute.")
            case _:
                return t.gettext(
                    "I can't reach the insurance platform right now. Please try again in a few minutes. "
                    "I won't show figures that might be wrong."
                )

    def code_sent(self, sent: CodeSent) -> str:
        return self.t.gettext(
            "Step 3 of 3: I sent a 6-digit code by SMS to {phone}, the number the insurance platform has "
            "on file. It is valid for {minutes} minutes. Send it here (/resend for a new one, /cancel to "
            "stop)."
        ).format(phone=sent.masked_phone, minutes=self.cfg.code_ttl_minutes)

    def refused(
        self, refusal: CodeRefused, *, sensitive: bool = False, session: Session | None = None
    ) -> Outcome:
        t = self.t
        retry = refusal.retry_at
        if refusal.reason is Refusal.LOCKED_OUT and retry is not None:
            return self.locked_out(retry)
        if refusal.reason is Refusal.TOO_SOON and retry is not None:
            text = t.gettext(
                "Please wait: a new code can be sent at {time} (in {seconds} s); then send /resend."
            ).format(
                time=retry.astimezone(self.cfg.timezone).strftime("%H:%M:%S"),
                seconds=max(1, math.ceil((retry - self.now).total_seconds())),
            )
        elif refusal.reason is Refusal.HOURLY_LIMIT and retry is not None:
            text = t.gettext(
                "Too many codes for this account or phone in the last hour. You can ask for a new one at {time}."
            ).format(time=self.at(retry))
        elif refusal.reason is Refusal.NO_CODE:
            return self.out(t.gettext("There is no code to resend. Send /bind to start binding."))
        else:
            text = t.gettext("The SMS could not be sent. Please try /resend in a minute.")
        keep = session or (self.session if self.session.state is State.BIND_CODE else Session())
        return self.out(text, session=keep, sensitive=sensitive)

    async def cmd_resend(self, _arg: str = "") -> Outcome:
        if self.session.state is not State.BIND_CODE:
            return self.out(self.t.gettext("There is no code to resend. Send /bind to start binding."))
        sent = await self.conv.otp.resend(self.user, self.locale)
        if isinstance(sent, CodeRefused):
            return self.refused(sent)
        return self.out(self.code_sent(sent), session=self.session)

    async def on_code(self) -> Outcome:
        t = self.t
        code = self.text.replace(" ", "")
        pending = self.session.pending
        if not _CODE.match(code):
            return self.out(
                t.gettext(
                    "Please send the 6-digit code from the SMS (/resend for a new one, /cancel to stop)."
                ),
                session=self.session,
            )
        if (
            pending is None
            or pending.id_number is None
            or pending.member_id is None
            or pending.platform is None
            or pending.phone is None
        ):  # the session lost its pending part: start over
            return await self.cmd_bind()
        check = await self.conv.otp.verify(self.user, code)
        match check.verdict:
            case Verdict.OK:
                binding = Binding(
                    member_id=pending.member_id,
                    platform=pending.platform,
                    id_number=pending.id_number,
                    phone=pending.phone,
                    bound_at=self.now,
                )
                return self.out(
                    t.gettext(
                        "Done! Your account is bound (ID {id}). Try /balance, or /alert 100 to hear from me "
                        "when the balance drops below ¥100."
                    ).format(id=mask_id_number(binding.id_number.get_secret_value())),
                    sensitive=True,
                    set_binding=binding,
                )
            case Verdict.WRONG:
                return self.out(
                    t.ngettext(
                        "That code is not right. {n} try left.",
                        "That code is not right. {n} tries left.",
                        check.tries_left,
                    ).format(n=check.tries_left),
                    session=self.session,
                    sensitive=True,
                )
            case Verdict.VOID if check.locked_until is not None:
                return self.locked_out(check.locked_until)
            case Verdict.VOID:
                text = t.gettext(
                    "That code was wrong too many times and no longer works. Send /resend for a new one."
                )
            case Verdict.EXPIRED:
                text = t.gettext("That code has expired. Send /resend for a new one.")
            case Verdict.LOCKED_OUT if check.locked_until is not None:
                return self.locked_out(check.locked_until)
            case _:
                text = t.gettext("There is no active code. Send /resend for a new one, or /cancel.")
        return self.out(text, session=self.session, sensitive=True)

    # -- balance -------------------------------------------------------------------------------

    async def cmd_balance(self, _arg: str = "") -> Outcome:
        binding = self.profile.binding
        if binding is None:
            return self.not_bound()
        try:
            view, fresh = await self.current_balance(binding)
        except InsuranceProblem as problem:
            return self.out(self.account_problem(problem))
        return self.out(*self.balance_texts(view), cache_balance=fresh)

    async def current_balance(self, binding: Binding) -> tuple[BalanceView, CachedBalance | None]:
        """The balance, from the cache while it is young; else from the platform, with what to cache."""
        cached, ttl = self.cached, self.cfg.balance_cache_seconds
        if cached is not None and (self.now - cached.fetched_at).total_seconds() < ttl:
            return cached.view, None
        view = await self.conv.insurance.balance(binding.platform, binding.member_id)
        return view, (CachedBalance(view=view, fetched_at=self.now) if ttl > 0 else None)

    def account_problem(self, problem: InsuranceProblem) -> str:
        if problem.code is ProblemCode.MEMBER_NOT_FOUND:
            return self.t.gettext(
                "The insurance platform no longer finds the account you bound (perhaps your "
                "insurance moved to another region). Please /unbind and bind again, or call {hotline}."
            ).format(hotline=self.cfg.hotline)
        return self.platform_problem(problem)

    def not_bound(self) -> Outcome:
        return self.out(
            self.t.gettext("You haven't bound your insurance account yet. Send /bind — it takes a minute.")
        )

    # -- history, spending, chart --------------------------------------------------------------

    def category(self, name: str, t: Translator | None = None) -> str:
        t = t or self.t
        return {
            "pharmacy": t.gettext("pharmacy"),
            "outpatient": t.gettext("outpatient"),
            "inpatient": t.gettext("inpatient"),
            "credit": t.gettext("credit"),
        }.get(name, name)

    def tx_line(self, tx: TransactionView) -> str:
        t = self.t
        day = tx.at.astimezone(self.cfg.timezone).strftime("%Y-%m-%d")
        if tx.category == "credit":
            return t.gettext("{date} {place}: +{amount} to the personal account").format(
                date=day, place=tx.place, amount=self.money(tx.personal)
            )
        parts = []
        if tx.personal:
            parts.append(t.gettext("personal account {amount}").format(amount=self.money(-tx.personal)))
        if tx.pooled:
            parts.append(t.gettext("pooled fund {amount}").format(amount=self.money(-tx.pooled)))
        return t.gettext("{date} {place} ({category}): {total}, paid by {parts}").format(
            date=day,
            place=tx.place,
            category=self.category(tx.category),
            total=self.money(-(tx.personal + tx.pooled)),
            parts=" + ".join(parts),
        )

    async def cmd_history(self, arg: str = "") -> Outcome:
        binding = self.profile.binding
        if binding is None:
            return self.not_bound()
        cursor = None
        limit = self.cfg.history_page
        if arg.lower() in _MORE:
            cursor = self.session.history_cursor
            if cursor is None:
                return self.out(
                    self.t.gettext("There are no more transactions to show. /history starts again.")
                )
        elif arg:
            if not arg.isdigit() or not 1 <= int(arg) <= self.cfg.history_max:
                return self.out(
                    self.t.gettext("Give a number of transactions from 1 to {max}, e.g. /history 30.").format(
                        max=self.cfg.history_max
                    )
                )
            limit = int(arg)
        try:
            page = await self.conv.insurance.transactions(
                binding.platform, binding.member_id, cursor=cursor, limit=limit
            )
        except InsuranceProblem as problem:
            return self.out(self.account_problem(problem))
        if not page.items:
            return self.out(self.t.gettext("No transactions in the last 12 months."))
        n = len(page.items)
        header = (
            self.t.gettext("More transactions:")
            if cursor
            else self.t.ngettext("Your latest {n} transaction:", "Your latest {n} transactions:", n).format(
                n=n
            )
        )
        text = "\n".join([header, *(self.tx_line(tx) for tx in page.items)])
        if page.next_cursor is None:
            return self.out(text)
        more = Button(label=self.t.gettext("More ▸"), payload="/history more")
        return Outcome(
            replies=(Reply(text=text, buttons=(more,)),), session=Session(history_cursor=page.next_cursor)
        )

    async def transactions_since(
        self, binding: Binding, start: datetime, end: datetime
    ) -> list[TransactionView]:
        items: list[TransactionView] = []
        cursor = None
        for _ in range(_MAX_PAGES):
            page = await self.conv.insurance.transactions(
                binding.platform, binding.member_id, start=start, end=end, cursor=cursor, limit=100
            )
            items += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        return items

    def period_label(self, period: Period, first: date) -> str:
        t = self.t
        month = first.strftime("%Y-%m")
        return {
            Period.THIS_MONTH: t.gettext("this month ({month})").format(month=month),
            Period.LAST_MONTH: t.gettext("last month ({month})").format(month=month),
            Period.THIS_YEAR: t.gettext("this year ({year})").format(year=first.year),
            Period.LAST_YEAR: t.gettext("last year ({year})").format(year=first.year),
        }[period]

    async def spending(self, period: Period, fund: Fund) -> Outcome:
        binding = self.profile.binding
        if binding is None:
            return self.not_bound()
        start, end, first = period_bounds(period, self.now, self.cfg.timezone)
        try:
            items = await self.transactions_since(binding, start, end)
        except InsuranceProblem as problem:
            return self.out(self.account_problem(problem))
        t, sums, when = self.t, totals(items), self.period_label(period, first)
        if sums.count == 0:
            return self.out(t.gettext("No medical spending {period}.").format(period=when))
        if fund is Fund.POOLED:
            head = t.gettext("{period}: the pooled fund paid {amount} for you.").format(
                period=when, amount=self.money(sums.pooled)
            )
        elif fund is Fund.PERSONAL:
            head = t.gettext("{period}: you paid {amount} from your personal account.").format(
                period=when, amount=self.money(sums.personal)
            )
        else:
            head = t.gettext(
                "{period}: you spent {total}, {personal} from your personal account and {pooled} from the pooled fund."
            ).format(
                period=when,
                total=self.money(sums.total),
                personal=self.money(sums.personal),
                pooled=self.money(sums.pooled),
            )
        split = " · ".join(
            f"{self.category(c)} {self.money(sums.by_category[c])}"
            for c in SPENDING_CATEGORIES
            if c in sums.by_category
        )
        count = t.ngettext("{n} payment", "{n} payments", sums.count).format(n=sums.count)
        return self.out(f"{head[:1].upper()}{head[1:]}\n{split} ({count})")

    async def cmd_chart(self, _arg: str = "") -> Outcome:
        binding = self.profile.binding
        if binding is None:
            return self.not_bound()
        charts = self.conv.charts
        if charts is None:
            return self.out(self.t.gettext("Charts are not available here."))
        tz = self.cfg.timezone
        today = self.now.astimezone(tz).date()
        months = tuple(month_start(today, back) for back in range(11, -1, -1))
        try:
            view, fresh = await self.current_balance(binding)
            items = await self.transactions_since(binding, at_midnight(months[0], tz), self.now)
        except InsuranceProblem as problem:
            return self.out(self.account_problem(problem))
        # Without a CJK font the picture is labelled in English rather than with empty boxes.
        t = self.t if charts.can_draw_chinese() else self.conv.catalogs.get("en")
        per_month = monthly_spending(items, months, tz)
        balance = (
            ()
            if view.personal_account is None
            else balance_series(view.personal_account, items, months[0], today, tz)
        )
        data = ChartData(
            title=t.gettext("Medical insurance, {start} to {end}").format(
                start=months[0].strftime("%Y-%m"), end=today.strftime("%Y-%m")
            ),
            balance_label=t.gettext("Personal account balance (¥)"),
            spending_label=t.gettext("Spending per month (¥)"),
            balance=balance,
            months=months,
            spending=tuple((self.category(c, t), tuple(v)) for c, v in per_month.items()),
        )
        png = await charts.render(data)
        caption = self.t.gettext(
            "Your personal account and spending over the last 12 months, as of {as_of}."
        ).format(as_of=self.stamp(view.as_of))
        image = Attachment(filename=f"yibao-chart-{today:%Y%m%d}.png", content=png)
        return Outcome(
            replies=(Reply(text=caption, attachment=image),), session=Session(), cache_balance=fresh
        )

    def balance_texts(self, view: BalanceView) -> tuple[str, ...]:
        t = self.t
        if view.personal_account is None:
            personal = t.gettext(
                "Personal account (个人账户): none — residents' insurance usually has no personal account"
            )
        else:
            personal = t.gettext("Personal account (个人账户): {amount}").format(
                amount=self.money(view.personal_account)
            )
        body = "\n".join(
            (
                t.gettext("Your medical-insurance account, as of {as_of}:").format(
                    as_of=self.stamp(view.as_of)
                ),
                personal,
                t.gettext("Pooled fund (统筹基金) {year}: used {used}, remaining {remaining}").format(
                    year=view.pooled_year,
                    used=self.money(view.pooled_used),
                    remaining=self.money(view.pooled_remaining),
                ),
            )
        )
        if not view.stale:
            return (body,)
        warning = t.gettext(
            "⚠️ The insurance platform is still syncing. These are the last known figures, from {as_of}, "
            "and may not include recent spending. Check again later, or call {hotline} to confirm."
        ).format(as_of=self.stamp(view.as_of), hotline=self.cfg.hotline)
        return (warning + "\n\n" + body,)

    # -- alerts --------------------------------------------------------------------------------

    async def cmd_alert(self, arg: str) -> Outcome:
        if self.profile.binding is None:
            return self.out(
                self.t.gettext("Bind your insurance account first (/bind), then I can watch its balance.")
            )
        if arg.lower() in _OFF:
            if self.profile.threshold is None:
                return self.out(self.t.gettext("No alert was set."))
            return self.out(self.t.gettext("Alert turned off."), clear_threshold=True)
        if arg:
            return self.set_alert(arg)
        if self.profile.threshold is None:
            text = self.t.gettext(
                "No alert is set. Send an amount, e.g. 100, and I'll tell you when your personal account "
                "drops below it."
            )
        else:
            text = self.t.gettext(
                "I'll alert you when your personal account drops below {amount}. Send a new amount to "
                "change it, or /alert off to turn it off."
            ).format(amount=self.money(self.profile.threshold))
        return self.out(text, session=Session(state=State.ALERT_AMOUNT))

    def set_alert(self, text: str) -> Outcome:
        t = self.t
        if self.profile.binding is None:
            return self.out(
                t.gettext("Bind your insurance account first (/bind), then I can watch its balance.")
            )
        amount = parse_amount(text, maximum=self.cfg.max_threshold)
        if isinstance(amount, AmountProblem):
            message = {
                AmountProblem.EMPTY: t.gettext("Please give an amount, e.g. /alert 100."),
                AmountProblem.NOT_A_NUMBER: t.gettext(
                    '"{text}" is not an amount I can read. Write it in digits, e.g. /alert 100 or /alert 100.50.'
                ).format(text=text[:20]),
                AmountProblem.ZERO: t.gettext(
                    "The amount must be more than zero, e.g. /alert 100. To turn alerts off, send /alert off."
                ),
                AmountProblem.NEGATIVE: t.gettext("The amount can't be negative. Try e.g. /alert 100."),
                AmountProblem.TOO_PRECISE: t.gettext(
                    "Amounts go down to the fen (two decimals), e.g. /alert 100.50."
                ),
                AmountProblem.TOO_LARGE: t.gettext(
                    "That is more than {max}, higher than a personal account balance gets. Try e.g. /alert 100."
                ).format(max=self.money(self.cfg.max_threshold)),
            }[amount]
            keep = self.session if self.session.state is State.ALERT_AMOUNT else Session()
            return self.out(message, session=keep)
        return self.out(
            t.gettext(
                "OK: I'll tell you when your personal account drops below {amount}. /alert off turns it off."
            ).format(amount=self.money(amount)),
            set_threshold=amount,
        )

    # -- unbinding -----------------------------------------------------------------------------

    async def cmd_unbind(self, _arg: str = "") -> Outcome:
        binding = self.profile.binding
        if binding is None:
            return self.out(
                self.t.gettext("You are not bound, and now I keep nothing else about you either."), erase=True
            )
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
        return self.out(
            self.t.gettext(
                "Done. Your binding and everything I kept about you are erased. Send /bind if you want to "
                "use Yibao again."
            ),
            erase=True,
        )

"""One message being answered: what every flow shares (the state found, the user's language, the
time, how replies and outcomes are made, how platform problems are said)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from dialogs.amounts import format_money
from dialogs.i18n import Catalogs, Translator, normalize_locale
from dialogs.intents import normalize
from dialogs.masking import mask_id_number
from dialogs.models import (
    BalanceView,
    Binding,
    CachedBalance,
    Event,
    EventKind,
    Inbound,
    MemberId,
    Outcome,
    PlatformName,
    Reply,
    Session,
    State,
    UserKey,
    UserState,
)
from dialogs.ports import (
    ChartPort,
    Clock,
    CodeCheck,
    CodeRefused,
    CodeSent,
    ContributionView,
    DataInventory,
    DrugView,
    FaceCheckState,
    Failures,
    Followups,
    IdLookup,
    IdPaused,
    InstitutionView,
    InsurancePort,
    InsuranceProblem,
    MemberMatch,
    Offers,
    OtpPort,
    PlatformInfo,
    ProblemCode,
    QrPort,
    RelativeView,
    TransactionsPage,
    VoucherView,
    WebLinks,
)


class NeedsGuard(Exception):
    """A dry run reached a port: the step must run under the user's guard."""


class _DryInsurance:
    """Stands in for the insurance port during a dry run: nothing is asked but the configured
    platforms and their capabilities, which the port caches and which change nothing (so /help
    stays a dry answer)."""

    def __init__(self, real: InsurancePort) -> None:
        self._real = real

    def platforms(self) -> tuple[PlatformInfo, ...]:
        return self._real.platforms()

    async def offers(self, platform: PlatformName) -> Offers:
        return await self._real.offers(platform)

    async def find_member(
        self, platform: PlatformName, name: str, id_number: str, *, card_number: str | None = None
    ) -> MemberMatch:
        raise NeedsGuard

    async def face_check(
        self, platform: PlatformName, ticket: str
    ) -> tuple[FaceCheckState, MemberMatch | None]:
        raise NeedsGuard

    async def institutions(
        self,
        platform: PlatformName,
        *,
        kind: str | None = None,
        query: str | None = None,
        near: tuple[float, float] | None = None,
        limit: int = 5,
    ) -> tuple[InstitutionView, ...]:
        raise NeedsGuard

    async def drugs(
        self, platform: PlatformName, query: str, *, member_id: MemberId | None = None, limit: int = 5
    ) -> tuple[DrugView, ...]:
        raise NeedsGuard

    async def voucher(self, platform: PlatformName, member_id: MemberId) -> VoucherView:
        raise NeedsGuard

    async def contributions(
        self, platform: PlatformName, member_id: MemberId
    ) -> tuple[ContributionView, ...]:
        raise NeedsGuard

    async def family(self, platform: PlatformName, member_id: MemberId) -> tuple[RelativeView, ...]:
        raise NeedsGuard

    async def balance(self, platform: PlatformName, member_id: MemberId) -> BalanceView:
        raise NeedsGuard

    async def transactions(
        self,
        platform: PlatformName,
        member_id: MemberId,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> TransactionsPage:
        raise NeedsGuard


class _DryOtp:
    """Stands in for the SMS-code port during a dry run: every call has an effect, so none is made."""

    async def locked_until(self, user: UserKey) -> datetime | None:
        raise NeedsGuard

    async def start_lookup(self, id_number: SecretStr) -> IdLookup | IdPaused:
        raise NeedsGuard

    async def end_lookup(self, lookup: IdLookup) -> None:
        raise NeedsGuard

    async def record_failure(self, user: UserKey, lookup: IdLookup | None = None) -> Failures:
        raise NeedsGuard

    async def send(self, user: UserKey, phone: SecretStr, locale: str) -> CodeSent | CodeRefused:
        raise NeedsGuard

    async def resend(self, user: UserKey, locale: str) -> CodeSent | CodeRefused:
        raise NeedsGuard

    async def verify(self, user: UserKey, code: str) -> CodeCheck:
        raise NeedsGuard

    async def discard(self, user: UserKey) -> None:
        raise NeedsGuard


_DRY_OTP = _DryOtp()

BIND_STATES = frozenset(
    {State.BIND_NAME, State.BIND_ID, State.BIND_PLATFORM, State.BIND_CARD, State.BIND_FACE, State.BIND_CODE}
)


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
    verification_wait_seconds: int = 300
    """How long a bind waits for the platform's face check to pass (``insurance.verification_wait_seconds``)."""
    nearby_limit: int = 5
    """Institutions listed by /hospitals and a shared location."""
    kept_in_history: frozenset[str] = frozenset({"wx", "wecom"})
    """Chat platforms (user-key prefixes) where Yibao cannot delete the user's messages: the bind
    consent says the ID number stays in the chat history, and how to delete it there."""


class Services(Protocol):
    """What a turn uses of the conversation it runs in (``machine.Conversation`` is one): its ports,
    catalogs and settings. Declared here so that the flows need not import the machine that combines
    them."""

    @property
    def insurance(self) -> InsurancePort: ...
    @property
    def otp(self) -> OtpPort: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def catalogs(self) -> Catalogs: ...
    @property
    def charts(self) -> ChartPort | None: ...
    @property
    def qr(self) -> QrPort | None: ...
    @property
    def followups(self) -> Followups | None: ...
    @property
    def settings(self) -> DialogSettings: ...
    @property
    def inventory(self) -> DataInventory | None: ...
    @property
    def web(self) -> WebLinks | None: ...

    async def follow_face_check(self, user: UserKey, ticket: str) -> tuple[Reply, ...]:
        """Follow a face check in the background until it is decided or the wait is over; the
        replies that continue the bind (see ``machine.Conversation.follow_face_check``)."""
        ...


class Turn:
    """The base of the flows (``binding``, ``account``, ``alerts``) that ``machine._Turn`` combines."""

    def __init__(self, conv: Services, state: UserState, inbound: Inbound, *, dry: bool = False) -> None:
        self.conv = conv
        self.insurance: InsurancePort = _DryInsurance(conv.insurance) if dry else conv.insurance
        self.otp: OtpPort = _DRY_OTP if dry else conv.otp
        self.cfg = conv.settings
        self.user = inbound.user
        self.session = state.session
        self.profile = state.profile
        self.cached = state.balance
        self.locale = state.profile.lang or normalize_locale(inbound.locale) or conv.settings.default_locale
        self.t: Translator = conv.catalogs.get(self.locale)
        self.now = conv.clock.now()
        self.text = normalize(inbound.text)
        self.location = inbound.location
        self.directory_name = inbound.directory_name
        self.from_page = inbound.from_page
        self.dry = dry

    def out(
        self,
        *texts: str,
        session: Session | None = None,
        sensitive: bool = False,
        set_binding: Binding | None = None,
        set_threshold: Decimal | None = None,
        clear_threshold: bool = False,
        keep_checking: bool = False,
        set_lang: str | None = None,
        cache_balance: CachedBalance | None = None,
        erase: bool = False,
    ) -> Outcome:
        """An outcome with plain-text replies; the session falls back to idle unless one is given."""
        note = self.deletion_note(sensitive)
        replies = tuple(
            Reply(
                text=x,
                sensitive_input=sensitive and i == 0,
                deleted_note=note if i == 0 else "",
                erased=erase,
            )
            for i, x in enumerate(texts)
        )
        return Outcome(
            replies=replies,
            session=session or Session(),
            set_binding=set_binding,
            set_threshold=set_threshold,
            alert_locale=self.locale if set_threshold is not None else None,
            clear_threshold=clear_threshold,
            keep_checking=keep_checking,
            set_lang=set_lang,
            cache_balance=cache_balance,
            erase=erase,
        )

    @staticmethod
    def noted(outcome: Outcome, *events: Event) -> Outcome:
        """The outcome, with these events for the operator's counts and audit trail."""
        return outcome.model_copy(update={"events": (*outcome.events, *events)})

    def failed(self, outcome: Outcome, reason: str, *, insurer: str = "", locked: bool = False) -> Outcome:
        """A bind attempt that failed, for this reason (a closed word); ``locked``: it paused binding."""
        events = [Event(kind=EventKind.BIND_FAILED, reason=reason, insurer=insurer)]
        if locked:
            events.append(Event(kind=EventKind.LOCKED_OUT, reason=reason, insurer=insurer))
        return self.noted(outcome, *events)

    def deletion_note(self, sensitive: bool) -> str:
        """Said when a platform deletes the user's message with personal data: once a bind, with
        the ID number; the code step's message goes silently."""
        if not sensitive or self.session.state is State.BIND_CODE:
            return ""
        return self.t.gettext(
            "🔒 I deleted your message from this chat, so your ID number does not stay in it."
        )

    def at(self, when: datetime) -> str:
        local = when.astimezone(self.cfg.timezone)
        if local.date() == self.now.astimezone(self.cfg.timezone).date():
            return local.strftime("%H:%M")
        return local.strftime("%Y-%m-%d %H:%M")

    def stamp(self, when: datetime) -> str:
        return when.astimezone(self.cfg.timezone).strftime("%Y-%m-%d %H:%M")

    money = staticmethod(format_money)

    def keep_flow(self) -> Session:
        """Help and start do not throw away a bind in progress."""
        return self.session if self.session.state in BIND_STATES else Session()

    def status(self) -> str:
        binding = self.profile.binding
        if binding is None:
            return self.t.gettext("Status: not bound yet. Send /bind to start.")
        return self.t.gettext("Status: bound to ID {id} since {date}.").format(
            id=mask_id_number(binding.id_number.get_secret_value()),
            date=binding.bound_at.astimezone(self.cfg.timezone).strftime("%Y-%m-%d"),
        )

    def locked_out(self, until: datetime, *, sensitive: bool = False) -> Outcome:
        return self.out(
            self.t.gettext(
                "Too many failed attempts. To protect your account, binding is paused until {until}. "
                "Questions: call the medical-insurance hotline {hotline}."
            ).format(until=self.at(until), hotline=self.cfg.hotline),
            sensitive=sensitive,
        )

    def id_paused(self, until: datetime) -> Outcome:
        """The limit per ID number: the same answer whichever chat account tries that ID number (in
        answer to the message that held it)."""
        return self.out(
            self.t.gettext(
                "Too many failed attempts with this ID number. To protect the account, binding with it "
                "is paused until {until}, whoever tries. Questions: call the medical-insurance hotline "
                "{hotline}."
            ).format(until=self.at(until), hotline=self.cfg.hotline),
            sensitive=True,
        )

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

    def account_problem(self, problem: InsuranceProblem) -> str:
        binding = self.profile.binding
        if problem.code is ProblemCode.PLATFORM_GONE:
            return self.t.gettext(
                'Your account was bound on the insurance platform "{platform}", which this service no '
                "longer connects to, so I can't show anything from it. Send /bind to bind again (your "
                "old binding is then replaced)."
            ).format(platform=binding.platform if binding else "?")
        if problem.code is ProblemCode.MEMBER_NOT_FOUND:
            return self.t.gettext(
                "The insurance platform no longer finds the account you bound (perhaps your "
                "insurance moved to another region). Please /unbind and bind again, or call {hotline}."
            ).format(hotline=self.cfg.hotline)
        return self.platform_problem(problem)

    async def current_balance(self, binding: Binding) -> tuple[BalanceView, CachedBalance | None]:
        """The balance, from the cache while it is young; else from the platform, with what to cache."""
        cached, ttl = self.cached, self.cfg.balance_cache_seconds
        if cached is not None and (self.now - cached.fetched_at).total_seconds() < ttl:
            return cached.view, None
        view = await self.insurance.balance(binding.platform, binding.member_id)
        return view, (CachedBalance(view=view, fetched_at=self.now) if ttl > 0 else None)

    def not_bound(self) -> Outcome:
        return self.out(
            self.t.gettext("You haven't bound your insurance account yet. Send /bind — it takes a minute.")
        )

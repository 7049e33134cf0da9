"""The ports the conversation core talks through. Adapters in ``bot/`` implement them.

Each port is a small ``Protocol``; the core never imports an implementation. The values crossing a
port are defined here too, in the core's own words, so a change in an insurance platform's wire
format or in Redis never reaches the dialogs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from pydantic import SecretStr

from dialogs.models import BalanceView, Event, MemberId, Outcome, PlatformName, Reply, UserKey, UserState

# --- insurance ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberMatch:
    """A member found by real name + ID number, with the phone the platform has on file."""

    member_id: MemberId
    platform: PlatformName
    phone: SecretStr


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """An insurance platform a user can bind on."""

    name: PlatformName
    label: str
    regions: tuple[str, ...] = ()
    """Leading digits of the area codes (行政区划代码) it serves: "11" (Beijing), "3101", "440305"."""

    def serves(self, id_number: str) -> int:
        """How specifically this platform serves the ID number's region (0: not at all)."""
        return max((len(r) for r in self.regions if id_number.startswith(r)), default=0)


@dataclass(frozen=True, slots=True)
class TransactionView:
    at: datetime
    place: str
    category: str
    """``pharmacy``, ``outpatient``, ``inpatient`` or ``credit``."""
    personal: Decimal
    """Paid from (negative) or credited to (positive) the personal account."""
    pooled: Decimal
    """Paid by the pooled fund (zero or negative)."""


@dataclass(frozen=True, slots=True)
class TransactionsPage:
    items: tuple[TransactionView, ...]
    next_cursor: str | None = None


class ProblemCode(StrEnum):
    MEMBER_NOT_FOUND = "member_not_found"
    IDENTITY_MISMATCH = "identity_mismatch"
    ACCOUNT_LOCKED = "account_locked"
    MAINTENANCE = "maintenance"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    PLATFORM_GONE = "platform_gone"
    """The binding names an insurance platform that is no longer configured: only a new bind helps."""
    VERIFICATION_REQUIRED = "verification_required"
    """``find_member``: the platform's face check comes first (``InsuranceProblem.face_check``)."""
    NOT_SUPPORTED = "not_supported"
    """The platform does not serve this."""
    INVALID_INPUT = "invalid_input"
    """The platform refused the request as asked (a card number it needs, say, was missing)."""


@dataclass(frozen=True, slots=True)
class FaceCheck:
    """Where the person does the platform's own face check, and the ticket that follows it."""

    url: str
    ticket: str


class InsuranceProblem(Exception):
    """The insurance platform could not give what was asked, for a reason the user must hear."""

    def __init__(
        self,
        code: ProblemCode,
        *,
        until: datetime | None = None,
        retry_after: float | None = None,
        face_check: FaceCheck | None = None,
    ) -> None:
        super().__init__(code.value)
        self.code = code
        self.until = until
        self.retry_after = retry_after
        self.face_check = face_check


class Offer(StrEnum):
    """What a platform may serve beyond the balance (its capabilities, in the core's words)."""

    INSTITUTIONS = "institutions"
    DRUGS = "drugs"
    VOUCHER = "voucher"
    CONTRIBUTIONS = "contributions"
    FAMILY = "family"


@dataclass(frozen=True, slots=True)
class Offers:
    """A platform's capabilities. The default is a platform that serves nothing extra."""

    features: frozenset[Offer] = frozenset()
    card_number: bool = False
    """The bind needs the local social-security card number."""
    face_check: bool = False
    """The bind may go through the platform's face check."""
    voucher_qr: bool = False
    credit_alerts: bool = False
    family_alerts: bool = False


@dataclass(frozen=True, slots=True)
class InstitutionView:
    name: str
    kind: str
    """``hospital`` or ``pharmacy``."""
    level: str | None
    address: str
    phone: str
    cross_region: bool
    distance_m: int | None = None


@dataclass(frozen=True, slots=True)
class DrugView:
    generic_name: str
    dosage_form: str
    drug_class: str
    """``A`` (甲), ``B`` (乙) or ``C`` (丙)."""
    restriction: str | None
    self_pay_share: Decimal | None = None


@dataclass(frozen=True, slots=True)
class VoucherView:
    deep_link: str
    qr_payload: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ContributionView:
    month: str
    """``YYYY-MM``."""
    paid: bool
    employer: str | None
    base: Decimal | None
    rate: Decimal | None
    credit: Decimal
    credited_at: datetime | None


@dataclass(frozen=True, slots=True)
class RelativeView:
    masked_name: str
    relation: str
    """``spouse``, ``child``, ``parent`` or ``other``."""
    since: date
    spent_this_year: Decimal


class FaceCheckState(StrEnum):
    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"
    EXPIRED = "expired"


class InsurancePort(Protocol):
    """Every configured insurance platform. Calls raise ``InsuranceProblem``."""

    def platforms(self) -> tuple[PlatformInfo, ...]: ...

    async def find_member(
        self, platform: PlatformName, name: str, id_number: str, *, card_number: str | None = None
    ) -> MemberMatch:
        """Raises ``verification_required`` with ``face_check`` where the platform checks faces."""
        ...

    async def offers(self, platform: PlatformName) -> Offers:
        """What the platform serves beyond the balance; never raises (unknown: nothing extra)."""
        ...

    async def face_check(
        self, platform: PlatformName, ticket: str
    ) -> tuple[FaceCheckState, MemberMatch | None]:
        """Where a face check stands; with ``passed``, the member it found."""
        ...

    async def institutions(
        self,
        platform: PlatformName,
        *,
        kind: str | None = None,
        query: str | None = None,
        near: tuple[float, float] | None = None,
        limit: int = 5,
    ) -> tuple[InstitutionView, ...]: ...

    async def drugs(
        self, platform: PlatformName, query: str, *, member_id: MemberId | None = None, limit: int = 5
    ) -> tuple[DrugView, ...]: ...

    async def voucher(self, platform: PlatformName, member_id: MemberId) -> VoucherView: ...

    async def contributions(
        self, platform: PlatformName, member_id: MemberId
    ) -> tuple[ContributionView, ...]:
        """Newest first."""
        ...

    async def family(self, platform: PlatformName, member_id: MemberId) -> tuple[RelativeView, ...]: ...

    async def balance(self, platform: PlatformName, member_id: MemberId) -> BalanceView: ...

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
        """Newest first."""
        ...


@dataclass(frozen=True, slots=True)
class ChartData:
    """What ``/chart`` draws, with every label already in the user's language."""

    title: str
    balance_label: str
    spending_label: str
    balance: tuple[tuple[date, Decimal], ...]
    """The personal-account balance at the end of each day that changed it, oldest first."""
    months: tuple[date, ...]
    """The first day of each month shown, oldest first (12 of them)."""
    spending: tuple[tuple[str, tuple[Decimal, ...]], ...]
    """Per category label, the amount spent (a positive number) in each month of ``months``."""
    balance_note: str = ""
    """Said in the balance panel: why it is empty (no personal account), or that the figures are
    the last known ones (the platform is still syncing)."""


class QrPort(Protocol):
    def render(self, payload: str) -> bytes:
        """A PNG of the QR code that encodes ``payload`` exactly (the platform's voucher payload)."""
        ...


class Followups(Protocol):
    """Work the conversation leaves running after its answer (following a face check), whose
    replies reach the user unprompted. The runtime keeps each task and bounds it."""

    def start(self, user: UserKey, key: str, work: Callable[[], Awaitable[tuple[Reply, ...]]]) -> None:
        """Run ``work`` in the background, once per ``key`` at a time, and deliver its replies."""
        ...


class ChartPort(Protocol):
    def can_draw_chinese(self) -> bool:
        """False when no CJK font is available: labels should then be English."""
        ...

    async def render(self, data: ChartData) -> bytes:
        """A PNG image."""
        ...


# --- SMS codes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodeSent:
    masked_phone: str
    expires_at: datetime


class Refusal(StrEnum):
    TOO_SOON = "too_soon"
    """A resend inside the minimum interval."""
    HOURLY_LIMIT = "hourly_limit"
    """Too many codes this hour for this user or this phone."""
    LOCKED_OUT = "locked_out"
    """Too many failed bind attempts: binding is locked for a while."""
    NO_CODE = "no_code"
    """Nothing to resend."""
    SMS_FAILED = "sms_failed"
    """The SMS gateway did not take the message."""


@dataclass(frozen=True, slots=True)
class CodeRefused:
    reason: Refusal
    retry_at: datetime | None = None
    masked_phone: str | None = None
    """For ``TOO_SOON``: where the code will go once the wait is over."""


class Verdict(StrEnum):
    OK = "ok"
    WRONG = "wrong"
    VOID = "void"
    """That was the last allowed wrong try: the code no longer works, a new one is needed."""
    EXPIRED = "expired"
    NO_CODE = "no_code"
    LOCKED_OUT = "locked_out"


@dataclass(frozen=True, slots=True)
class Failures:
    """Failed bind attempts as the lockout counts them, so the user can be warned before the last."""

    left: int
    """Failed attempts still allowed before binding pauses (0 once it has paused)."""
    pause_seconds: int
    """How long binding then pauses."""
    locked_until: datetime | None = None
    """Set when this failure paused binding."""
    per_id: bool = False
    """The nearer limit is the ID number's, shared by every chat account, not the user's own:
    ``left``, ``pause_seconds`` and ``locked_until`` are that limit's, and the pause is of binding
    with that ID number."""


@dataclass(frozen=True, slots=True)
class IdLookup:
    """Leave to look one ID number up on the insurance platform, under the limit of failed lookups
    that every chat account shares for it. The lookup holds a place in that count while it runs:
    ``record_failure`` keeps it as a failure, ``end_lookup`` gives it back."""

    slot: str
    """Opaque to the core."""


@dataclass(frozen=True, slots=True)
class IdPaused:
    """Too many lookups of this ID number failed lately, whichever accounts tried: none until then."""

    until: datetime
    running: bool = False
    """Not failed yet: other lookups of it are running, enough to reach the limit, and did not end
    in time (only when many accounts try one ID number at once). ``until`` is when they surely have."""


@dataclass(frozen=True, slots=True)
class CodeCheck:
    verdict: Verdict
    tries_left: int = 0
    locked_until: datetime | None = None
    failures: Failures | None = None
    """For ``WRONG`` and ``VOID``: where the bind lockout stands (a voided code counts as a failure)."""


class OtpPort(Protocol):
    """One-time SMS codes for binding, and the bind lockout that guards them."""

    async def locked_until(self, user: UserKey) -> datetime | None: ...

    async def start_lookup(self, id_number: SecretStr) -> IdLookup | IdPaused:
        """Before asking the insurance platform about an ID number: leave to, or until when the
        limit per ID number pauses it (for every chat account alike)."""
        ...

    async def end_lookup(self, lookup: IdLookup) -> None:
        """The lookup did not fail (the member was found, or the platform could not answer)."""
        ...

    async def record_failure(self, user: UserKey, lookup: IdLookup | None = None) -> Failures:
        """Count a failed bind attempt for the user and, with ``lookup`` (a name or ID number the
        platform rejected), for that ID number; ``locked_until`` is set if this one paused binding
        (``per_id``: binding with that ID number, for everyone)."""
        ...

    async def send(self, user: UserKey, phone: SecretStr, locale: str) -> CodeSent | CodeRefused: ...

    async def resend(self, user: UserKey, locale: str) -> CodeSent | CodeRefused: ...

    async def verify(self, user: UserKey, code: str) -> CodeCheck: ...

    async def discard(self, user: UserKey) -> None:
        """Void any pending code (the flow was cancelled); failure counts stay."""
        ...


# --- storage, clock, platforms ------------------------------------------------------------------

Step = Callable[[UserState], Awaitable[Outcome]]


class UserStore(Protocol):
    async def peek(self, user: UserKey) -> UserState:
        """The user's state as it is now, without the guard (for a step that turns out to only read)."""
        ...

    async def update(self, user: UserKey, step: Step) -> Outcome:
        """Load the user's state, run ``step`` on it and save what it decided, with no other update
        for the same user interleaved (in this process or any other). If ``step`` raises, nothing
        is written and the exception propagates."""
        ...


class StoreUnavailable(Exception):
    """The store cannot be reached right now. Its adapter has logged that once (not once per
    message): the message gets the apology, and nothing more is logged for it."""


class Clock(Protocol):
    def now(self) -> datetime:
        """An aware datetime."""
        ...


class Undeliverable(Exception):
    """The chat platform will not deliver to this user, now or later (they blocked the bot, the
    chat is gone): the message is dropped, not retried."""


class Held(Exception):
    """The chat platform cannot deliver this now and has kept it to give the user with their next
    answer (WeChat, outside the customer-service window, with no subscription message accepted): it
    counts as told, and is recorded as ``deferred``."""


class Outlet(Protocol):
    """Where unprompted messages for a user go (the chat platform that user talks on)."""

    async def deliver(self, user: UserKey, replies: tuple[Reply, ...]) -> None:
        """Returns once the platform confirmed the message. Raises ``Undeliverable`` when it never
        will, ``Held`` when the platform keeps it for the user's next message; any other exception
        means "not now", and the message is tried again later."""
        ...


class ChatMetrics(Protocol):
    """What a chat platform's adapter reports about its sending (``bot.metrics.ChatMeter`` counts
    it; ``NO_METRICS`` when nobody listens). ``platform`` is the user keys' prefix (``tg``)."""

    def sent(self, platform: str, result: str) -> None:
        """A message went out (``ok``) or did not (``blocked``, ``refused``, ``timeout``)."""
        ...

    def refused(self, platform: str, status: int) -> None:
        """The platform's API refused a call with this HTTP status (429, 403, 400)."""
        ...

    def waited(self, platform: str, seconds: float) -> None:
        """A send waited this long for the platform's rate limits."""
        ...


class _NoMetrics:
    def sent(self, platform: str, result: str) -> None:
        pass

    def refused(self, platform: str, status: int) -> None:
        pass

    def waited(self, platform: str, seconds: float) -> None:
        pass


NO_METRICS: ChatMetrics = _NoMetrics()


# --- what happened, for the operator's counts and the audit trail ---------------------------------


class EventSink(Protocol):
    """Told of each answered turn's events, after its outcome was saved. Never raises."""

    async def record(self, user: UserKey, events: tuple[Event, ...]) -> None: ...


# --- what is kept about a user (/mydata) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldItem:
    """One thing kept about a user, shown masked: what it is, its (masked) value, how long it stays."""

    what: str
    """A closed word the dialogs word for the user (``binding.id_number``, ``session``, ``otp.sends``...)."""
    value: str
    """Already masked; never a whole ID number, phone, name or code."""
    kept: str
    """A closed word for how long: ``until_unbind``, ``expires`` (with ``expires_in`` seconds)..."""
    expires_in: int | None = None


class DataInventory(Protocol):
    """Everything kept about a user, item by item (``/mydata``; the operator's export is the same list)."""

    async def held(self, user: UserKey) -> tuple[HeldItem, ...]: ...


# --- Yibao's own pages (/web) ---------------------------------------------------------------------


class WebLinks(Protocol):
    """Links into Yibao's own pages (``platforms.web``), for ``/web``: present only when the
    operator serves them (``[web] enabled``)."""

    async def link(self, user: UserKey) -> str:
        """A single-use link (valid ``LINK_MINUTES``) that opens the pages as ``user``."""
        ...


LINK_MINUTES = 10
"""How long a ``/web`` link can be opened; once opened it is spent."""

"""An in-process insurance platform over fictional people, for demos, development and tests.

It answers the same contract as a real platform (:mod:`insurance.models`), including its failures:
a locked account, a region in maintenance, data still syncing. The history in the data file is moved
forward by whole days so that it always ends yesterday, whatever day the platform runs on.

Rules, in the order they are checked:

- ``lookup``: unknown ID number -> ``member_not_found``; the member's region in maintenance ->
  ``maintenance`` (with ``retry_after``); the name differs -> ``identity_mismatch``; the account is
  locked -> ``account_locked`` (with ``until``). The name check comes before the lock so that a wrong
  name never learns whether an account is locked.
- ``balance`` and ``transactions``: unknown member id -> ``member_not_found``; maintenance; locked;
  a syncing member answers with the figures as of ``now - lag`` and ``sync_status = delayed``.

The operator can change the sandbox while it runs (``spend``, ``credit``, ``lock``, ``unlock``,
``set_sync_delay``, ``set_maintenance``): what the HTTP sandbox's admin routes and ``yibao sandbox
spend ...`` do. Changes live in memory only. A spend or credit happens at the clock's now and keeps that
real time: unlike the file's history it does not move forward with the days, so after midnight it is
simply yesterday's. It obeys the data file's rules (the personal account never goes below zero, a
resident has none, the pooled fund only pays out), and, like any figure, a syncing member's balance
shows it only once the lag has passed.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from insurance.models import (
    Balance,
    BindRequirement,
    Capabilities,
    Category,
    ContributionMonth,
    Contributions,
    DrugPage,
    ErrorCode,
    Family,
    Feature,
    GeoPoint,
    InstitutionKind,
    InstitutionPage,
    InsuranceError,
    InsuranceKind,
    Member,
    MemberLookup,
    SyncStatus,
    Transaction,
    TransactionPage,
    Verification,
    VerificationStatus,
    Voucher,
)
from insurance.sandbox_data import (
    CHINA_TZ,
    SandboxData,
    SandboxPerson,
    SandboxRegion,
    Scenario,
    parse_sandbox_data,
    start_of_day,
)
from insurance.sandbox_extras import (
    SandboxProfile,
    build_drugs,
    build_institutions,
    capabilities_of,
    credit_rate,
    distance_m,
    family_of,
    local_card_number,
    month_of,
    self_pay_share,
)

__all__ = [
    "DEFAULT_CREDIT_PLACE",
    "DEFAULT_SPEND_PLACE",
    "MAX_AMOUNT",
    "MAX_PAGE",
    "VERIFICATION_TTL",
    "DemoPerson",
    "SandboxPlatform",
    "SandboxProfile",
    "lock_ends",
    "normalize_name",
]

MAX_PAGE = 100
"""The largest ``limit`` ``transactions`` accepts."""
MAX_AMOUNT = Decimal("1000000.00")
"""The largest single ``spend`` or ``credit``: ¥1,000,000."""
DEFAULT_SPEND_PLACE = "康宁大药房(示范店)"
DEFAULT_CREDIT_PLACE = "个人账户划入"
MAX_PLACE_LENGTH = 64

VERIFICATION_TTL = timedelta(minutes=10)
"""How long a face-check ticket waits for the person before it is ``expired``."""
VOUCHER_QR_TTL = timedelta(seconds=60)
"""How long the national sandbox's QR payload is accepted."""
VOUCHER_LINK = "https://sandbox.yibao.invalid/ecard/{member_id}"
"""The sandbox's stand-in for the official channel's e-voucher page (it does not exist)."""
FACE_CHECK_URL = "https://sandbox.yibao.invalid/face-check/{ticket}"
EMPLOYER = "示范科技有限公司(沙箱)"

LOCK_EXTRA = timedelta(minutes=30)
_QUARTER_HOUR = 15 * 60
_MIDDLE_DOTS = str.maketrans(dict.fromkeys("•・.‧", "·"))
_CENT = Decimal("0.01")
_ZERO = Decimal("0.00")
# The personal account must stay a valid ``Money`` (14 digits, 2 of them decimals).
_MAX_BALANCE = Decimal("9999999999.99")


class DemoPerson(BaseModel):
    """One sandbox identity, as listed in the README and by the CLI."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    member_id: str
    name: str
    id_number: str
    phone: str
    region: str
    region_name: str
    kind: InsuranceKind
    scenario: Scenario
    local_card_number: str = ""
    """For a sandbox whose bind needs it (the ``local_card`` profile)."""


@dataclass(slots=True)
class _Ticket:
    member_id: str
    issued: datetime
    status: VerificationStatus = VerificationStatus.PENDING


def normalize_name(name: str) -> str:
    """The form two names are compared in: NFKC, no whitespace, one kind of middle dot.

    ``阿依古丽 • 买买提``, ``阿依古丽・买买提`` and ``阿依古丽.买买提`` all match ``阿依古丽·买买提``.
    """
    folded = unicodedata.normalize("NFKC", name)
    return "".join(folded.split()).translate(_MIDDLE_DOTS)


def _now_in_china() -> datetime:
    return datetime.now(CHINA_TZ)


@dataclass(frozen=True, slots=True)
class _Account:
    """A person with the history pre-sorted and prefix-summed so every question is a bisect."""

    person: SandboxPerson
    region: SandboxRegion
    normalized_name: str
    times: list[datetime]
    """Unshifted ``at`` of each transaction, oldest first."""
    transactions: list[Transaction]
    """Oldest first, ties broken by id; same order as ``times``."""
    position: dict[str, int]
    """Transaction id -> index in ``transactions``, to resume from a cursor."""
    personal_sums: list[Decimal]
    """``personal_sums[k]`` = sum of ``personal_amount`` of the first k transactions."""
    pooled_sums: list[Decimal]

    @classmethod
    def build(cls, person: SandboxPerson, region: SandboxRegion) -> _Account:
        ordered = sorted(person.transactions, key=lambda t: (t.at, t.id))
        personal = [_ZERO]
        pooled = [_ZERO]
        for tx in ordered:
            personal.append(personal[-1] + tx.personal_amount)
            pooled.append(pooled[-1] + tx.pooled_amount)
        return cls(
            person=person,
            region=region,
            normalized_name=normalize_name(person.name),
            times=[tx.at for tx in ordered],
            transactions=ordered,
            position={tx.id: i for i, tx in enumerate(ordered)},
            personal_sums=personal,
            pooled_sums=pooled,
        )

    def count_until(self, moment: datetime, shift: timedelta) -> int:
        """How many transactions, moved by ``shift``, happened at or before ``moment``."""
        # A key instead of ``moment - shift``: a caller's bound may be near datetime.min or max.
        return bisect.bisect_right(self.times, moment, key=lambda t: t + shift)

    def count_before(self, moment: datetime, shift: timedelta) -> int:
        """How many transactions, moved by ``shift``, happened strictly before ``moment``."""
        return bisect.bisect_left(self.times, moment, key=lambda t: t + shift)


@dataclass(slots=True)
class _Live:
    """What the operator changed about one member since the file was loaded.

    The transactions made here keep their real time (they are not shifted), oldest first, with the
    same prefix sums as :class:`_Account` so balances stay a bisect.
    """

    locked: bool
    lock_until: datetime | None = None
    """With ``locked``: when the lock ends; None for the file's never-ending "30 minutes from now"."""
    sync_lag_seconds: int | None = None
    times: list[datetime] = field(default_factory=list)
    transactions: list[Transaction] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    personal_sums: list[Decimal] = field(default_factory=lambda: [_ZERO])
    pooled_sums: list[Decimal] = field(default_factory=lambda: [_ZERO])

    def count_until(self, moment: datetime) -> int:
        return bisect.bisect_right(self.times, moment)

    def count_before(self, moment: datetime) -> int:
        return bisect.bisect_left(self.times, moment)

    def append(self, tx: Transaction) -> None:
        self.position[tx.id] = len(self.transactions)
        self.times.append(tx.at)
        self.transactions.append(tx)
        self.personal_sums.append(self.personal_sums[-1] + tx.personal_amount)
        self.pooled_sums.append(self.pooled_sums[-1] + tx.pooled_amount)


@dataclass(frozen=True, slots=True)
class _Figures:
    personal: Decimal | None
    pooled_used: Decimal
    pooled_remaining: Decimal
    year: int


class SandboxPlatform:
    """The sandbox insurance platform. Every lookup is a dict access; every balance a bisect."""

    def __init__(
        self,
        data: SandboxData,
        *,
        clock: Callable[[], datetime] | None = None,
        profile: SandboxProfile = SandboxProfile.NATIONAL,
    ) -> None:
        """``clock`` returns the current time, timezone-aware; the default is now in China time.
        ``profile`` is which kind of platform it plays (see :class:`SandboxProfile`)."""
        self._data = data
        self.profile = profile
        self._capabilities = capabilities_of(profile)
        self._institutions = build_institutions(data)
        self._drugs = build_drugs()
        self._tickets: dict[str, _Ticket] = {}
        self._clock = clock or _now_in_china
        self._anchor_day = data.anchor.astimezone(CHINA_TZ).date()
        regions = {region.code: region for region in data.regions}
        self._by_member: dict[str, _Account] = {}
        self._by_id_number: dict[str, _Account] = {}
        self._live: dict[str, _Live] = {}
        for person in data.people:
            account = _Account.build(person, regions[person.region])
            self._by_member[person.member_id] = account
            self._by_id_number[person.id_number.upper()] = account
            self._live[person.member_id] = _Live(
                locked=person.locked, sync_lag_seconds=person.sync_lag_seconds
            )
        self._maintenance: dict[str, int] = {
            r.code: r.retry_after_seconds or 0 for r in data.regions if r.maintenance
        }
        """Region code -> ``retry_after`` seconds, for the regions in maintenance now."""
        self._region_codes = frozenset(regions)

    @classmethod
    def from_file(
        cls,
        path: Path | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        profile: SandboxProfile = SandboxProfile.NATIONAL,
    ) -> SandboxPlatform:
        """Load a data file; ``None`` loads the one shipped in the package (``insurance/data/sandbox.json``).

        Raises :class:`insurance.sandbox_data.SandboxDataError` when the file is not valid.
        """
        if path is None:
            raw = resources.files("insurance").joinpath("data/sandbox.json").read_bytes()
        else:
            raw = path.read_bytes()
        return cls(parse_sandbox_data(raw), clock=clock, profile=profile)

    @property
    def data(self) -> SandboxData:
        """The data file as loaded; the operator's changes are not in it."""
        return self._data

    # --- the contract --------------------------------------------------------------------------

    async def lookup(self, query: MemberLookup) -> Member:
        account = self._by_id_number.get(query.id_number.upper())
        if account is None:
            raise InsuranceError(ErrorCode.MEMBER_NOT_FOUND, "no member with this ID number")
        now = self._now()
        self._check_maintenance(account)
        if normalize_name(query.name) != account.normalized_name:
            raise InsuranceError(ErrorCode.IDENTITY_MISMATCH, "the name does not match the ID number")
        person = account.person
        if BindRequirement.LOCAL_CARD_NUMBER in self._capabilities.bind:
            if query.local_card_number is None:
                raise InsuranceError(ErrorCode.INVALID_REQUEST, "this platform needs local_card_number")
            if query.local_card_number != local_card_number(person.member_id):
                raise InsuranceError(
                    ErrorCode.IDENTITY_MISMATCH, "the local card number does not match the ID number"
                )
        self._check_lock(account, now)
        if BindRequirement.FACE_CHECK in self._capabilities.bind:
            ticket = secrets.token_urlsafe(18)
            self._tickets[ticket] = _Ticket(person.member_id, now)
            raise InsuranceError(
                ErrorCode.VERIFICATION_REQUIRED,
                "complete the face check first",
                verification_url=FACE_CHECK_URL.format(ticket=ticket),
                ticket=ticket,
            )
        return self._member(account)

    @staticmethod
    def _member(account: _Account) -> Member:
        person = account.person
        return Member(member_id=person.member_id, region=person.region, kind=person.kind, phone=person.phone)

    # --- beyond the balance (contract 1.1) -----------------------------------------------------

    def capabilities(self) -> Capabilities:
        return self._capabilities

    def _serves(self, feature: Feature) -> None:
        if feature not in self._capabilities.features:
            raise InsuranceError(ErrorCode.NOT_SUPPORTED, f"this platform does not serve {feature.value}")

    async def verification(self, ticket: str) -> Verification:
        """Where a face check stands; unknown tickets are ``member_not_found``-free 404s too."""
        found = self._tickets.get(ticket)
        if found is None:
            raise InsuranceError(ErrorCode.MEMBER_NOT_FOUND, "no such verification ticket")
        now = self._now()
        if found.status is VerificationStatus.PENDING and now - found.issued >= VERIFICATION_TTL:
            found.status = VerificationStatus.EXPIRED
        member = None
        if found.status is VerificationStatus.PASSED:
            member = self._member(self._account(found.member_id))
        return Verification(ticket=ticket, status=found.status, member=member)

    def finish_face_check(self, member_id: str, passed: bool) -> str:
        """The operator's hand: the member's newest pending face check passes or fails; its ticket.
        ValueError when there is none pending."""
        self._account(member_id)
        now = self._now()
        pending = [
            (t.issued, ticket)
            for ticket, t in self._tickets.items()
            if t.member_id == member_id
            and t.status is VerificationStatus.PENDING
            and now - t.issued < VERIFICATION_TTL
        ]
        if not pending:
            raise ValueError("no face check is waiting for this member")
        ticket = max(pending)[1]
        self._tickets[ticket].status = VerificationStatus.PASSED if passed else VerificationStatus.FAILED
        return ticket

    async def institutions(
        self,
        *,
        region: str | None = None,
        kind: InstitutionKind | None = None,
        q: str | None = None,
        near: GeoPoint | None = None,
        limit: int = 10,
        cursor: str | None = None,
    ) -> InstitutionPage:
        """Designated institutions, by name; nearest first with ``near`` (each with its distance)."""
        self._serves(Feature.INSTITUTIONS)
        regions = {r.code: r.name for r in self._data.regions}
        wanted = normalize_name(q).lower() if q else ""
        found = []
        for inst in self._institutions:
            if region is not None and not inst.region.startswith(region):
                continue
            if kind is not None and inst.kind is not kind:
                continue
            haystack = f"{inst.name}{inst.address}{regions.get(inst.region, '')}".lower()
            if wanted and wanted not in haystack:
                continue
            if near is not None:
                inst = inst.model_copy(update={"distance_m": distance_m(near, inst.location)})
            found.append(inst)
        if near is not None:
            found.sort(key=lambda i: (i.distance_m or 0, i.id))
        start = _offset(cursor)
        page = found[start : start + limit]
        more = start + limit < len(found)
        return InstitutionPage(items=page, next_cursor=str(start + limit) if more else None)

    async def drugs(
        self,
        *,
        q: str | None = None,
        region: str | None = None,
        member_id: str | None = None,
        limit: int = 10,
        cursor: str | None = None,
    ) -> DrugPage:
        """The drug list, names containing ``q`` (exact names first); with ``region`` (or a member's)
        its self-pay share. An unknown member only leaves the share out: the list is public."""
        self._serves(Feature.DRUGS)
        if region is None and member_id is not None:
            account = self._by_member.get(member_id)
            region = account.person.region if account is not None else None
        wanted = normalize_name(q) if q else ""
        found = [d for d in self._drugs if wanted in d.generic_name]
        found.sort(key=lambda d: (d.generic_name != wanted, len(d.generic_name)))
        start = _offset(cursor)
        page = [
            d.model_copy(update={"self_pay_share": self_pay_share(d, region)})
            for d in found[start : start + limit]
        ]
        more = start + limit < len(found)
        return DrugPage(items=page, next_cursor=str(start + limit) if more else None)

    async def voucher(self, member_id: str) -> Voucher:
        """The e-voucher: the link always, the QR payload only as the national (certified) issuer."""
        self._serves(Feature.VOUCHER)
        account = self._account(member_id)
        now = self._now()
        self._check_maintenance(account)
        self._check_lock(account, now)
        link = VOUCHER_LINK.format(member_id=member_id)
        if not self._capabilities.voucher_qr:
            return Voucher(member_id=member_id, deep_link=link)
        expires = now.replace(microsecond=0) + VOUCHER_QR_TTL
        token = hashlib.sha256(f"{member_id}|{expires.isoformat()}".encode()).hexdigest()[:24]
        return Voucher(
            member_id=member_id,
            deep_link=link,
            qr_payload=f"SBX-ECARD:{member_id}:{int(expires.timestamp())}:{token}",
            expires_at=expires,
        )

    def _credits_and_pharmacy(
        self, account: _Account, now: datetime
    ) -> tuple[list[Transaction], list[Transaction]]:
        """Every credit and pharmacy payment known now, the file's (shifted) and the operator's, oldest first."""
        shift = self._shift(now)
        known, _ = self._known_until(account, now)
        live = self._live[account.person.member_id]
        history = [
            self._shifted(tx, shift) for tx in account.transactions[: account.count_until(known, shift)]
        ]
        history += live.transactions[: live.count_until(self._live_cutoff(account, now))]
        history.sort(key=lambda tx: tx.at)
        credits = [tx for tx in history if tx.category is Category.CREDIT]
        pharmacy = [tx for tx in history if tx.category is Category.PHARMACY]
        return credits, pharmacy

    async def contributions(self, member_id: str, *, months: int = 12) -> Contributions:
        """One month per credit in the history, newest first: the base, the rate, the credit."""
        self._serves(Feature.CONTRIBUTIONS)
        account = self._account(member_id)
        now = self._now()
        self._check_maintenance(account)
        self._check_lock(account, now)
        base = account.person.contribution_base
        credits, _ = self._credits_and_pharmacy(account, now)
        out = [
            ContributionMonth(
                month=month_of(tx.at),
                paid=True,
                employer=EMPLOYER,
                base=base,
                rate=credit_rate(base, tx.personal_amount),
                credit=tx.personal_amount,
                credited_at=tx.at,
            )
            for tx in reversed(credits)
        ]
        return Contributions(member_id=member_id, months=out[:months])

    async def family(self, member_id: str) -> Family:
        """Who shares the personal account and what they spent from it this year."""
        self._serves(Feature.FAMILY)
        account = self._account(member_id)
        now = self._now()
        self._check_maintenance(account)
        self._check_lock(account, now)
        _, pharmacy = self._credits_and_pharmacy(account, now)
        this_year = [tx.personal_amount for tx in pharmacy if tx.at.year == now.year]
        return Family(member_id=member_id, year=now.year, members=family_of(account.person, this_year))

    async def balance(self, member_id: str) -> Balance:
        account = self._account(member_id)
        now = self._now()
        self._check_maintenance(account)
        self._check_lock(account, now)
        as_of, status = self._known_until(account, now)
        figures = self._figures(account, now, as_of, self._live_cutoff(account, now))
        return self._balance(account, figures, as_of, status)

    async def transactions(
        self,
        member_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> TransactionPage:
        """The member's transactions, newest first, ``start <= at < end``, at most ``limit`` a page.

        ``end`` defaults to now (for a syncing member: what was known at ``now - lag``). Pass the
        page's ``next_cursor`` back with the same filters to get the next page; ``None`` means no more.
        Raises ``ValueError`` for a bad ``limit``, naive ``start``/``end`` or a cursor not from this
        member's pages.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        for bound in (start, end):
            if bound is not None and bound.utcoffset() is None:
                raise ValueError("start and end must be timezone-aware")
        account = self._account(member_id)
        now = self._now()
        self._check_maintenance(account)
        self._check_lock(account, now)
        live = self._live[member_id]
        shift = self._shift(now)
        known_until, _ = self._known_until(account, now)
        # Two oldest-first lists, the file's (moved by ``shift``) and the operator's (real time); each
        # is cut to [low, stop) and the page walks both from ``stop - 1`` downwards, newest first.
        stop = account.count_until(known_until, shift)
        live_stop = live.count_until(self._live_cutoff(account, now))
        if end is not None:
            stop = min(stop, account.count_before(end, shift))
            live_stop = min(live_stop, live.count_before(end))
        low = account.count_before(start, shift) if start is not None else 0
        live_low = live.count_before(start) if start is not None else 0
        if cursor is not None:
            before, live_before = self._decode_cursor(account, live, cursor, shift)
            stop, live_stop = min(stop, before), min(live_stop, live_before)
        page: list[Transaction] = []
        while len(page) < limit and (stop > low or live_stop > live_low):
            # At the same moment the operator's transaction counts as the later one.
            if live_stop > live_low and (
                stop <= low or live.times[live_stop - 1] >= account.times[stop - 1] + shift
            ):
                live_stop -= 1
                page.append(live.transactions[live_stop])
            else:
                stop -= 1
                page.append(self._shifted(account.transactions[stop], shift))
        more = stop > low or live_stop > live_low
        next_cursor = self._encode_cursor(account, page[-1].id) if page and more else None
        return TransactionPage(items=page, next_cursor=next_cursor)

    # --- for people, not for the bot -----------------------------------------------------------

    def people(self) -> list[DemoPerson]:
        """Every sandbox identity, in file order: who to type in to see which scenario."""
        regions = {region.code: region.name for region in self._data.regions}
        return [
            DemoPerson(
                member_id=p.member_id,
                name=p.name,
                id_number=p.id_number,
                phone=p.phone,
                region=p.region,
                region_name=regions[p.region],
                kind=p.kind,
                scenario=p.scenario,
                local_card_number=local_card_number(p.member_id),
            )
            for p in self._data.people
        ]

    def regions_in_maintenance(self) -> list[str]:
        """The area codes of the regions in maintenance now, sorted."""
        return sorted(self._maintenance)

    # --- the operator's changes ----------------------------------------------------------------
    #
    # None of these asks about locks, maintenance or sync delays: they are the operator's hand on
    # the platform's ledger, not a member's request. Unknown member -> ``member_not_found``; a change
    # the data model would not allow -> ValueError saying why (never naming an ID number or phone).

    def spend(
        self,
        member_id: str,
        amount: Decimal,
        *,
        place: str = DEFAULT_SPEND_PLACE,
        category: Category = Category.PHARMACY,
        pooled_share: Decimal = Decimal(0),
    ) -> Balance:
        """Record a payment of ``amount`` yuan at ``place``, now; return the ledger's balance after it.

        ``pooled_share`` (0 to 1) of the amount, rounded to the fen, is paid by the pooled fund; an
        employee's personal account pays the rest, a resident (no personal account) pays the rest in
        cash, which the platform does not record. Refused (ValueError) when the personal account
        holds less than its part, when the pooled fund has less than its part left this year, or
        when nothing would be recorded (a resident with no pooled part).
        """
        account = self._account(member_id)
        amount = _amount(amount)
        place = _place(place)
        if not isinstance(category, Category) or category is Category.CREDIT:
            raise ValueError("a spend's category is pharmacy, outpatient or inpatient; use credit to pay in")
        share = _share(pooled_share)
        pooled_part = (amount * share).quantize(_CENT, rounding=ROUND_HALF_UP)
        now = self._now()
        at = self._next_moment(member_id, now)
        figures = self._figures(account, now, now, now)
        if figures.personal is None:
            if pooled_part == 0:
                raise ValueError(
                    "this member has residents' insurance and no personal account: "
                    "give a pooled share above 0"
                )
            personal_part = _ZERO
        else:
            personal_part = amount - pooled_part
            if personal_part > figures.personal:
                raise ValueError(
                    f"the personal account holds ¥{figures.personal}, less than the "
                    f"¥{personal_part} to pay from it"
                )
        if pooled_part > figures.pooled_remaining:
            raise ValueError(
                f"the pooled fund has ¥{figures.pooled_remaining} left this year, less than the "
                f"¥{pooled_part} asked of it"
            )
        self._record(account, at, place, category, -personal_part, -pooled_part)
        return self._ledger_balance(account, now)

    def credit(self, member_id: str, amount: Decimal, *, place: str = DEFAULT_CREDIT_PLACE) -> Balance:
        """Pay ``amount`` yuan into the personal account, now; return the ledger's balance after it.

        Refused (ValueError) for a member without a personal account (residents).
        """
        account = self._account(member_id)
        amount = _amount(amount)
        place = _place(place)
        now = self._now()
        at = self._next_moment(member_id, now)
        figures = self._figures(account, now, now, now)
        if figures.personal is None:
            raise ValueError("this member has residents' insurance and no personal account to credit")
        if figures.personal + amount > _MAX_BALANCE:
            raise ValueError(f"the personal account cannot hold more than ¥{_MAX_BALANCE}")
        self._record(account, at, place, Category.CREDIT, amount, _ZERO)
        return self._ledger_balance(account, now)

    def lock(self, member_id: str, until: datetime | None = None) -> None:
        """Lock the account (as after wrong passwords) until ``until``, or until :meth:`unlock`.

        Without ``until`` the account says, like the file's locked people, that its lock ends in 30
        to 45 minutes, however often it is asked. A past or naive ``until`` is a ValueError.
        """
        self._account(member_id)
        if until is not None:
            if until.utcoffset() is None:
                raise ValueError("until must be timezone-aware")
            if until <= self._now():
                raise ValueError("until must be in the future")
            until = until.astimezone(CHINA_TZ)
        live = self._live[member_id]
        live.locked = True
        live.lock_until = until

    def unlock(self, member_id: str) -> None:
        """End a lock, the operator's or the data file's."""
        self._account(member_id)
        live = self._live[member_id]
        live.locked = False
        live.lock_until = None

    def set_sync_delay(self, member_id: str, seconds: int | None) -> None:
        """Make the member's data lag ``seconds`` behind now (``sync_status = delayed``); None: in sync."""
        self._account(member_id)
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0
        ):
            raise ValueError("a sync delay is a whole number of seconds above 0, or None")
        self._live[member_id].sync_lag_seconds = seconds

    def set_maintenance(self, region: str, on: bool, retry_after_seconds: int = 1800) -> None:
        """Put a region (an area code from the data file) in maintenance, or take it out."""
        if region not in self._region_codes:
            raise ValueError(f"no region {region!r} in the sandbox data")
        if not on:
            self._maintenance.pop(region, None)
            return
        if (
            isinstance(retry_after_seconds, bool)
            or not isinstance(retry_after_seconds, int)
            or retry_after_seconds <= 0
        ):
            raise ValueError("retry_after_seconds is a whole number of seconds above 0")
        self._maintenance[region] = retry_after_seconds

    # --- rules ---------------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.utcoffset() is None:
            raise ValueError("the sandbox clock must return timezone-aware datetimes")
        return now.astimezone(CHINA_TZ)

    def _shift(self, now: datetime) -> timedelta:
        """How far the file's history moves: whole days from the anchor's date to today's."""
        return timedelta(days=(now.date() - self._anchor_day).days)

    def _account(self, member_id: str) -> _Account:
        account = self._by_member.get(member_id)
        if account is None:
            raise InsuranceError(ErrorCode.MEMBER_NOT_FOUND, "no member with this member id")
        return account

    def _check_maintenance(self, account: _Account) -> None:
        code = account.person.region
        retry_after = self._maintenance.get(code)
        if retry_after is not None:
            raise InsuranceError(
                ErrorCode.MAINTENANCE,
                f"region {code} is under maintenance",
                retry_after=float(retry_after),
            )

    def _check_lock(self, account: _Account, now: datetime) -> None:
        live = self._live[account.person.member_id]
        if not live.locked:
            return
        if live.lock_until is not None and now >= live.lock_until:
            return
        raise InsuranceError(
            ErrorCode.ACCOUNT_LOCKED,
            "account locked after repeated wrong passwords",
            until=live.lock_until or lock_ends(now),
        )

    def _lag(self, account: _Account) -> int | None:
        return self._live[account.person.member_id].sync_lag_seconds

    def _known_until(self, account: _Account, now: datetime) -> tuple[datetime, SyncStatus]:
        lag = self._lag(account)
        if lag is None:
            return now.replace(second=0, microsecond=0), SyncStatus.OK
        return (now - timedelta(seconds=lag)).replace(second=0, microsecond=0), SyncStatus.DELAYED

    def _live_cutoff(self, account: _Account, now: datetime) -> datetime:
        """The operator's transactions are known to the second, not to the minute as ``as_of`` says."""
        lag = self._lag(account)
        return now if lag is None else now - timedelta(seconds=lag)

    def _figures(self, account: _Account, now: datetime, known: datetime, live_known: datetime) -> _Figures:
        """The figures from the file's history up to ``known`` and the operator's up to ``live_known``."""
        person = account.person
        live = self._live[person.member_id]
        shift = self._shift(now)
        seen = account.count_until(known, shift)
        live_seen = live.count_until(live_known)
        personal: Decimal | None = None
        if person.opening_balance is not None:
            personal = person.opening_balance + account.personal_sums[seen] + live.personal_sums[live_seen]
        year_start = start_of_day(date(known.year, 1, 1))
        from_year = min(account.count_before(year_start, shift), seen)
        live_from_year = min(live.count_before(year_start), live_seen)
        # Pooled amounts are negative, so the running sum only falls: used = sum then - sum now.
        used = (account.pooled_sums[from_year] - account.pooled_sums[seen]) + (
            live.pooled_sums[live_from_year] - live.pooled_sums[live_seen]
        )
        return _Figures(
            personal=personal,
            pooled_used=used,
            pooled_remaining=max(person.pooled_allowance - used, _ZERO),
            year=known.year,
        )

    @staticmethod
    def _balance(account: _Account, figures: _Figures, as_of: datetime, status: SyncStatus) -> Balance:
        return Balance(
            member_id=account.person.member_id,
            personal_account=figures.personal,
            pooled_used=figures.pooled_used,
            pooled_remaining=figures.pooled_remaining,
            pooled_year=figures.year,
            as_of=as_of,
            sync_status=status,
        )

    def _ledger_balance(self, account: _Account, now: datetime) -> Balance:
        """The balance as the platform's ledger holds it now, whatever a member would be told."""
        as_of = now.replace(second=0, microsecond=0)
        return self._balance(account, self._figures(account, now, as_of, now), as_of, SyncStatus.OK)

    def _next_moment(self, member_id: str, now: datetime) -> datetime:
        """When a change made now happens: now to the second, never before the member's last change."""
        at = now.replace(microsecond=0)
        times = self._live[member_id].times
        if times and at < times[-1]:
            raise ValueError("the sandbox clock is behind this member's last change")
        return at

    def _record(
        self,
        account: _Account,
        at: datetime,
        place: str,
        category: Category,
        personal: Decimal,
        pooled: Decimal,
    ) -> None:
        live = self._live[account.person.member_id]
        live.append(
            Transaction(
                id=f"{account.person.member_id}-live-{len(live.transactions) + 1}",
                at=at,
                place=place,
                category=category,
                personal_amount=personal + _ZERO,  # + 0.00: no "-0.00" for a zero part
                pooled_amount=pooled + _ZERO,
            )
        )

    @staticmethod
    def _shifted(tx: Transaction, shift: timedelta) -> Transaction:
        return tx.model_copy(update={"at": tx.at + shift}) if shift else tx

    @staticmethod
    def _encode_cursor(account: _Account, before: str) -> str:
        # The cursor names the oldest transaction already returned, so a new day's shift, or the
        # clock moving on between pages, neither repeats nor skips anything in the file's history.
        token = json.dumps({"m": account.person.member_id, "before": before})
        return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")

    @staticmethod
    def _decode_cursor(account: _Account, live: _Live, cursor: str, shift: timedelta) -> tuple[int, int]:
        """Where the next page stops in the file's list and in the operator's list."""
        try:
            token = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            member, before = token["m"], token["before"]
        except (binascii.Error, ValueError, KeyError, TypeError, IndexError):
            raise ValueError("not a transactions cursor") from None
        if not isinstance(member, str) or not isinstance(before, str):
            raise ValueError("not a transactions cursor")
        if member == account.person.member_id:
            index = account.position.get(before)
            if index is not None:
                return index, live.count_before(account.times[index] + shift)
            index = live.position.get(before)
            if index is not None:
                return bisect.bisect_right(account.times, live.times[index], key=lambda t: t + shift), index
        raise ValueError("the cursor belongs to another member's transactions")


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit() or len(cursor) > 6:
        raise ValueError("not a cursor of this list")
    return int(cursor)


def _amount(amount: Decimal) -> Decimal:
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
        raise ValueError("an amount is a Decimal number of yuan")
    amount = Decimal(amount)
    try:
        exact = amount.is_finite() and amount == amount.quantize(_CENT)
    except InvalidOperation:
        exact = False
    if not exact:
        raise ValueError("an amount has at most two decimals (fen)")
    if not _ZERO < amount <= MAX_AMOUNT:
        raise ValueError(f"an amount is above ¥0 and at most ¥{MAX_AMOUNT}")
    return amount.quantize(_CENT)


def _share(share: Decimal) -> Decimal:
    if isinstance(share, bool) or not isinstance(share, Decimal | int):
        raise ValueError("pooled_share is a Decimal from 0 to 1")
    share = Decimal(share)
    if not share.is_finite() or not 0 <= share <= 1:
        raise ValueError("pooled_share is a Decimal from 0 to 1")
    return share


def _place(place: str) -> str:
    place = place.strip() if isinstance(place, str) else ""
    if not 1 <= len(place) <= MAX_PLACE_LENGTH:
        raise ValueError(f"place is 1 to {MAX_PLACE_LENGTH} characters")
    return place


def lock_ends(now: datetime) -> datetime:
    """When a locked sandbox account says its lock ends: ``now`` rounded up to a quarter-hour, + 30 min.

    A ``now`` exactly on a quarter-hour stays there, so the lock always ends 30 to 45 minutes ahead.
    """
    local = now.astimezone(CHINA_TZ)
    into = (local.minute * 60 + local.second) % _QUARTER_HOUR
    if into == 0 and local.microsecond == 0:
        return local + LOCK_EXTRA
    floor = local.replace(microsecond=0) - timedelta(seconds=into)
    return floor + timedelta(seconds=_QUARTER_HOUR) + LOCK_EXTRA

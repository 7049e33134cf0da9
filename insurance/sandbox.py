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
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from insurance.models import (
    Balance,
    ErrorCode,
    InsuranceError,
    InsuranceKind,
    Member,
    MemberLookup,
    SyncStatus,
    Transaction,
    TransactionPage,
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

__all__ = ["MAX_PAGE", "DemoPerson", "SandboxPlatform", "lock_ends", "normalize_name"]

MAX_PAGE = 100
"""The largest ``limit`` ``transactions`` accepts."""

LOCK_EXTRA = timedelta(minutes=30)
_QUARTER_HOUR = 15 * 60
_MIDDLE_DOTS = str.maketrans(dict.fromkeys("•・.‧", "·"))


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
        personal = [Decimal("0.00")]
        pooled = [Decimal("0.00")]
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

    def count_until(self, moment: datetime) -> int:
        """How many transactions happened at or before ``moment`` (unshifted time)."""
        return bisect.bisect_right(self.times, moment)

    def count_before(self, moment: datetime) -> int:
        """How many transactions happened strictly before ``moment`` (unshifted time)."""
        return bisect.bisect_left(self.times, moment)


class SandboxPlatform:
    """The sandbox insurance platform. Every lookup is a dict access; every balance a bisect."""

    def __init__(self, data: SandboxData, *, clock: Callable[[], datetime] | None = None) -> None:
        """``clock`` returns the current time, timezone-aware; the default is now in China time."""
        self._data = data
        self._clock = clock or _now_in_china
        self._anchor_day = data.anchor.astimezone(CHINA_TZ).date()
        regions = {region.code: region for region in data.regions}
        self._by_member: dict[str, _Account] = {}
        self._by_id_number: dict[str, _Account] = {}
        for person in data.people:
            account = _Account.build(person, regions[person.region])
            self._by_member[person.member_id] = account
            self._by_id_number[person.id_number.upper()] = account

    @classmethod
    def from_file(
        cls, path: Path | None = None, *, clock: Callable[[], datetime] | None = None
    ) -> SandboxPlatform:
        """Load a data file; ``None`` loads the one shipped in the package (``insurance/data/sandbox.json``).

        Raises :class:`insurance.sandbox_data.SandboxDataError` when the file is not valid.
        """
        if path is None:
            raw = resources.files("insurance").joinpath("data/sandbox.json").read_bytes()
        else:
            raw = path.read_bytes()
        return cls(parse_sandbox_data(raw), clock=clock)

    @property
    def data(self) -> SandboxData:
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
        self._check_lock(account, now)
        person = account.person
        return Member(member_id=person.member_id, region=person.region, kind=person.kind, phone=person.phone)

    async def balance(self, member_id: str) -> Balance:
        account = self._account(member_id)
        now = self._now()
        self._check_maintenance(account)
        self._check_lock(account, now)
        as_of, status = self._known_until(account, now)
        person = account.person
        seen = account.count_until(as_of - self._shift(now))
        personal: Decimal | None = None
        if person.opening_balance is not None:
            personal = person.opening_balance + account.personal_sums[seen]
        year_start = start_of_day(date(as_of.year, 1, 1))
        from_year = account.count_before(year_start - self._shift(now))
        # Pooled amounts are negative, so the running sum only falls: used = sum then - sum now.
        used = account.pooled_sums[min(from_year, seen)] - account.pooled_sums[seen]
        return Balance(
            member_id=person.member_id,
            personal_account=personal,
            pooled_used=used,
            pooled_remaining=max(person.pooled_allowance - used, Decimal("0.00")),
            pooled_year=as_of.year,
            as_of=as_of,
            sync_status=status,
        )

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
        shift = self._shift(now)
        known_until, _ = self._known_until(account, now)
        # Indexes into the oldest-first list; the page walks from ``stop - 1`` downwards.
        stop = account.count_until(known_until - shift)
        if end is not None:
            stop = min(stop, account.count_before(end - shift))
        low = account.count_before(start - shift) if start is not None else 0
        if cursor is not None:
            stop = min(stop, self._decode_cursor(account, cursor))
        first = max(low, stop - limit)
        page = [self._shifted(tx, shift) for tx in reversed(account.transactions[first:stop])]
        next_cursor = self._encode_cursor(account, first) if first > low else None
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
            )
            for p in self._data.people
        ]

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

    @staticmethod
    def _check_maintenance(account: _Account) -> None:
        region = account.region
        if region.maintenance:
            raise InsuranceError(
                ErrorCode.MAINTENANCE,
                f"region {region.code} is under maintenance",
                retry_after=float(region.retry_after_seconds or 0),
            )

    @staticmethod
    def _check_lock(account: _Account, now: datetime) -> None:
        if account.person.locked:
            raise InsuranceError(
                ErrorCode.ACCOUNT_LOCKED,
                "account locked after repeated wrong passwords",
                until=lock_ends(now),
            )

    @staticmethod
    def _known_until(account: _Account, now: datetime) -> tuple[datetime, SyncStatus]:
        lag = account.person.sync_lag_seconds
        if lag is None:
            return now.replace(second=0, microsecond=0), SyncStatus.OK
        return (now - timedelta(seconds=lag)).replace(second=0, microsecond=0), SyncStatus.DELAYED

    @staticmethod
    def _shifted(tx: Transaction, shift: timedelta) -> Transaction:
        return tx.model_copy(update={"at": tx.at + shift}) if shift else tx

    @staticmethod
    def _encode_cursor(account: _Account, stop: int) -> str:
        # The cursor names the oldest transaction already returned, so a new day's shift, or the
        # clock moving on between pages, neither repeats nor skips anything.
        token = json.dumps({"m": account.person.member_id, "before": account.transactions[stop].id})
        return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")

    @staticmethod
    def _decode_cursor(account: _Account, cursor: str) -> int:
        try:
            token = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            member, before = token["m"], token["before"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise ValueError("not a transactions cursor") from None
        if member != account.person.member_id or before not in account.position:
            raise ValueError("the cursor belongs to another member's transactions")
        return account.position[before]


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

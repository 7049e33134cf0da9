"""Adapts the insurance platforms (clients speaking ``insurance.models``) to the dialogs' port."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from pydantic import SecretStr, ValidationError

from bot import metrics
from dialogs.models import BalanceView, MemberId, PlatformName
from dialogs.ports import (
    ContributionView,
    DrugView,
    FaceCheck,
    FaceCheckState,
    InstitutionView,
    InsuranceProblem,
    MemberMatch,
    Offer,
    Offers,
    PlatformInfo,
    ProblemCode,
    RelativeView,
    TransactionsPage,
    TransactionView,
    VoucherView,
)
from insurance import wire
from insurance.models import (
    Balance,
    BindRequirement,
    Capabilities,
    Contributions,
    DrugPage,
    ErrorCode,
    Family,
    GeoPoint,
    InstitutionKind,
    InstitutionPage,
    InsuranceError,
    Member,
    MemberLookup,
    SyncStatus,
    TransactionPage,
    Verification,
    Voucher,
)

T = TypeVar("T")

OFFERS_TTL_SECONDS = 300.0
"""How long a platform's capabilities are believed (they change with a deployment, not per user)."""
OFFERS_RETRY_SECONDS = 30.0
"""After failing to read them: nothing extra is offered for this long, then they are asked again."""

log = logging.getLogger(__name__)


class ContractClient(Protocol):
    """What Yibao asks of one insurance platform (``insurance.client.HttpPlatformClient``)."""

    async def lookup(self, query: MemberLookup) -> Member: ...

    async def balance(self, member_id: str) -> Balance: ...

    async def balances(self, member_ids: Sequence[str]) -> list[wire.BatchBalanceItem]: ...

    async def transactions(
        self,
        member_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> TransactionPage: ...

    async def capabilities(self) -> Capabilities: ...

    async def verification(self, ticket: str) -> Verification: ...

    async def institutions(
        self,
        *,
        region: str | None = None,
        kind: InstitutionKind | None = None,
        q: str | None = None,
        near: GeoPoint | None = None,
        limit: int = 10,
        cursor: str | None = None,
    ) -> InstitutionPage: ...

    async def drugs(
        self,
        *,
        q: str | None = None,
        region: str | None = None,
        member_id: str | None = None,
        limit: int = 10,
        cursor: str | None = None,
    ) -> DrugPage: ...

    async def voucher(self, member_id: str) -> Voucher: ...

    async def contributions(self, member_id: str, *, months: int = 12) -> Contributions: ...

    async def family(self, member_id: str) -> Family: ...


_PROBLEMS = {
    ErrorCode.MEMBER_NOT_FOUND: ProblemCode.MEMBER_NOT_FOUND,
    ErrorCode.IDENTITY_MISMATCH: ProblemCode.IDENTITY_MISMATCH,
    ErrorCode.ACCOUNT_LOCKED: ProblemCode.ACCOUNT_LOCKED,
    ErrorCode.MAINTENANCE: ProblemCode.MAINTENANCE,
    ErrorCode.RATE_LIMITED: ProblemCode.RATE_LIMITED,
    ErrorCode.VERIFICATION_REQUIRED: ProblemCode.VERIFICATION_REQUIRED,
    ErrorCode.NOT_SUPPORTED: ProblemCode.NOT_SUPPORTED,
    ErrorCode.INVALID_REQUEST: ProblemCode.INVALID_INPUT,
}


def _problem(error: InsuranceError) -> InsuranceProblem:
    code = _PROBLEMS.get(error.code, ProblemCode.UNAVAILABLE)
    face = None
    if code is ProblemCode.VERIFICATION_REQUIRED:
        if not (error.verification_url and error.ticket):  # a face check we cannot send anyone to
            return InsuranceProblem(ProblemCode.UNAVAILABLE)
        face = FaceCheck(url=error.verification_url, ticket=error.ticket)
    return InsuranceProblem(code, until=error.until, retry_after=error.retry_after, face_check=face)


def _offers(c: Capabilities) -> Offers:
    return Offers(
        features=frozenset(Offer(f.value) for f in c.features),
        card_number=BindRequirement.LOCAL_CARD_NUMBER in c.bind,
        face_check=BindRequirement.FACE_CHECK in c.bind,
        voucher_qr=c.voucher_qr,
        credit_alerts="credit" in c.alerts,
        family_alerts="family_spend" in c.alerts,
    )


def _view(b: Balance) -> BalanceView:
    # Built without validating again: ``b`` was validated against the contract as it arrived, and
    # the alert sweep makes one of these per subscribed user.
    return BalanceView.model_construct(
        personal_account=b.personal_account,
        pooled_used=b.pooled_used,
        pooled_remaining=b.pooled_remaining,
        pooled_year=b.pooled_year,
        as_of=b.as_of,
        stale=b.sync_status is SyncStatus.DELAYED,
    )


@dataclass(frozen=True, slots=True)
class Platform:
    info: PlatformInfo
    client: ContractClient


CallSeen = Callable[[str, str, str, float], None]
"""Told of each call: insurer, call, outcome (``ok`` or a problem code), seconds."""


class PlatformRegistry:
    """The ``InsurancePort`` over every configured platform; a binding names the one it is on.

    Every call is counted and timed (``bot.metrics``: insurer, call, outcome) and, after it, the
    platform's breaker state is read into its gauge; ``on_call`` is told too (the daily figures)."""

    def __init__(
        self,
        platforms: Sequence[Platform],
        *,
        on_call: CallSeen | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._by_name = {p.info.name: p for p in platforms}
        self._infos = tuple(p.info for p in platforms)
        self._gone_logged: set[str] = set()
        self.on_call = on_call
        self._monotonic = monotonic
        self._offers: dict[str, tuple[float, Offers]] = {}
        """Platform name -> (believed until, its capabilities)."""

    def breaker_states(self) -> dict[str, str]:
        """Each platform's breaker (``closed``, ``half_open``, ``open``), also set into the gauge."""
        states: dict[str, str] = {}
        for name, p in self._by_name.items():
            state = getattr(p.client, "breaker_state", None)
            if isinstance(state, str):
                states[name] = state
                metrics.set_breaker(name, state)
        return states

    @asynccontextmanager
    async def _observed(self, platform: PlatformName, call: str) -> AsyncIterator[None]:
        start = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except InsuranceProblem as e:
            outcome = e.code.value
            raise
        except InsuranceError as e:
            outcome = _problem(e).code.value
            raise
        except ValidationError:
            outcome = ProblemCode.UNAVAILABLE.value
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            seconds = time.perf_counter() - start
            metrics.INSURANCE_REQUESTS.labels(platform, call, outcome).inc()
            metrics.INSURANCE_SECONDS.labels(platform, call).observe(seconds)
            found = self._by_name.get(platform)
            state = getattr(found.client, "breaker_state", None) if found is not None else None
            if isinstance(state, str):
                metrics.set_breaker(platform, state)
            if self.on_call is not None:
                self.on_call(platform, call, outcome, seconds)

    def platforms(self) -> tuple[PlatformInfo, ...]:
        return self._infos

    def _client(self, platform: PlatformName) -> ContractClient:
        found = self._by_name.get(platform)
        if found is None:  # a binding to a platform no longer configured: only a new bind helps
            if platform not in self._gone_logged:  # once per platform and process, not per message
                self._gone_logged.add(platform)
                log.warning(
                    "bindings to the insurance platform %r remain, but it is no longer configured: "
                    "their users are asked to bind again (configured: %s)",
                    platform,
                    ", ".join(self._by_name) or "none",
                )
            raise InsuranceProblem(ProblemCode.PLATFORM_GONE)
        return found.client

    async def find_member(
        self, platform: PlatformName, name: str, id_number: str, *, card_number: str | None = None
    ) -> MemberMatch:
        client = self._client(platform)
        try:
            query = MemberLookup(name=name, id_number=id_number, local_card_number=card_number)
        except ValidationError:  # a card number that cannot be one (the dialogs check it first)
            raise InsuranceProblem(ProblemCode.INVALID_INPUT) from None
        try:
            async with self._observed(platform, "lookup"):
                member = await client.lookup(query)
        except InsuranceError as e:
            raise _problem(e) from None
        except ValidationError:  # an answer that breaks the contract
            raise InsuranceProblem(ProblemCode.UNAVAILABLE) from None
        return MemberMatch(
            member_id=MemberId(member.member_id), platform=platform, phone=SecretStr(member.phone)
        )

    async def _ask(self, call: Callable[[], Awaitable[T]]) -> T:
        """One contract call, its failures in the dialogs' words."""
        try:
            return await call()
        except InsuranceError as e:
            raise _problem(e) from None
        except ValidationError:  # an answer that breaks the contract
            raise InsuranceProblem(ProblemCode.UNAVAILABLE) from None

    # --- contract 1.1 --------------------------------------------------------------------------

    async def offers(self, platform: PlatformName) -> Offers:
        """The platform's capabilities, cached ``OFFERS_TTL_SECONDS``. A platform that cannot say
        (down, or no such platform) offers nothing extra for ``OFFERS_RETRY_SECONDS``."""
        now = self._monotonic()
        cached = self._offers.get(platform)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = self._by_name.get(platform)
        if found is None:
            return Offers()
        try:
            offers = _offers(await found.client.capabilities())
            until = now + OFFERS_TTL_SECONDS
        except (InsuranceError, ValidationError) as e:
            log.warning(
                "insurance platform %s: capabilities unknown (%s); offering nothing extra for %.0f s",
                platform,
                e.code.value if isinstance(e, InsuranceError) else "malformed",
                OFFERS_RETRY_SECONDS,
            )
            offers, until = Offers(), now + OFFERS_RETRY_SECONDS
        self._offers[platform] = (until, offers)
        return offers

    async def face_check(
        self, platform: PlatformName, ticket: str
    ) -> tuple[FaceCheckState, MemberMatch | None]:
        client = self._client(platform)
        v = await self._ask(lambda: client.verification(ticket))
        state = FaceCheckState(v.status.value)
        if state is not FaceCheckState.PASSED:
            return state, None
        if v.member is None:  # passed, but no member: the platform broke the contract
            raise InsuranceProblem(ProblemCode.UNAVAILABLE)
        return state, MemberMatch(
            member_id=MemberId(v.member.member_id), platform=platform, phone=SecretStr(v.member.phone)
        )

    async def institutions(
        self,
        platform: PlatformName,
        *,
        kind: str | None = None,
        query: str | None = None,
        near: tuple[float, float] | None = None,
        limit: int = 5,
    ) -> tuple[InstitutionView, ...]:
        client = self._client(platform)
        point = GeoPoint(lat=near[0], lon=near[1]) if near is not None else None
        which = InstitutionKind(kind) if kind is not None else None
        page = await self._ask(
            lambda: client.institutions(kind=which, q=query or None, near=point, limit=limit)
        )
        return tuple(
            InstitutionView(
                name=i.name,
                kind=i.kind.value,
                level=i.level,
                address=i.address,
                phone=i.phone,
                cross_region=i.cross_region,
                distance_m=i.distance_m,
            )
            for i in page.items
        )

    async def drugs(
        self, platform: PlatformName, query: str, *, member_id: MemberId | None = None, limit: int = 5
    ) -> tuple[DrugView, ...]:
        client = self._client(platform)
        page = await self._ask(lambda: client.drugs(q=query, member_id=member_id, limit=limit))
        return tuple(
            DrugView(
                generic_name=d.generic_name,
                dosage_form=d.dosage_form,
                drug_class=d.drug_class.value,
                restriction=d.restriction,
                self_pay_share=d.self_pay_share,
            )
            for d in page.items
        )

    async def voucher(self, platform: PlatformName, member_id: MemberId) -> VoucherView:
        client = self._client(platform)
        v = await self._ask(lambda: client.voucher(member_id))
        if v.member_id != member_id:
            raise InsuranceProblem(ProblemCode.UNAVAILABLE)
        return VoucherView(deep_link=v.deep_link, qr_payload=v.qr_payload, expires_at=v.expires_at)

    async def contributions(
        self, platform: PlatformName, member_id: MemberId
    ) -> tuple[ContributionView, ...]:
        client = self._client(platform)
        c = await self._ask(lambda: client.contributions(member_id))
        return tuple(
            ContributionView(
                month=m.month,
                paid=m.paid,
                employer=m.employer,
                base=m.base,
                rate=m.rate,
                credit=m.credit,
                credited_at=m.credited_at,
            )
            for m in c.months
        )

    async def family(self, platform: PlatformName, member_id: MemberId) -> tuple[RelativeView, ...]:
        client = self._client(platform)
        f = await self._ask(lambda: client.family(member_id))
        return tuple(
            RelativeView(
                masked_name=m.masked_name,
                relation=m.relation,
                since=m.since,
                spent_this_year=m.spent_this_year,
            )
            for m in f.members
        )

    async def balance(self, platform: PlatformName, member_id: MemberId) -> BalanceView:
        client = self._client(platform)
        try:
            async with self._observed(platform, "balance"):
                b = await client.balance(member_id)
        except InsuranceError as e:
            raise _problem(e) from None
        except ValidationError:
            raise InsuranceProblem(ProblemCode.UNAVAILABLE) from None
        return _view(b)

    async def balances(
        self, platform: PlatformName, member_ids: Sequence[MemberId]
    ) -> list[BalanceView | InsuranceProblem]:
        """Many members' balances (the alert checks), in order: each one's balance or its problem.
        Never raises for the platform's sake: a platform that is down gives every member a problem."""
        try:
            client = self._client(platform)
            async with self._observed(platform, "balances"):
                items = await client.balances(member_ids)
        except InsuranceProblem as e:
            return [e] * len(member_ids)
        except InsuranceError as e:
            return [_problem(e)] * len(member_ids)
        except ValidationError:
            return [InsuranceProblem(ProblemCode.UNAVAILABLE)] * len(member_ids)
        out: list[BalanceView | InsuranceProblem] = []
        for item in items:
            if item.balance is not None:
                out.append(_view(item.balance))
            else:
                problem = item.problem
                if problem is None:  # the client checked: exactly one of the two
                    out.append(InsuranceProblem(ProblemCode.UNAVAILABLE))
                else:
                    out.append(_problem(InsuranceError(problem.code, retry_after=problem.retry_after)))
        return out

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
        client = self._client(platform)
        try:
            async with self._observed(platform, "transactions"):
                page = await client.transactions(member_id, start=start, end=end, cursor=cursor, limit=limit)
        except InsuranceError as e:
            raise _problem(e) from None
        except ValidationError:
            raise InsuranceProblem(ProblemCode.UNAVAILABLE) from None
        return TransactionsPage(
            items=tuple(
                TransactionView(
                    at=tx.at,
                    place=tx.place,
                    category=tx.category.value,
                    personal=tx.personal_amount,
                    pooled=tx.pooled_amount,
                )
                for tx in page.items
            ),
            next_cursor=page.next_cursor,
        )

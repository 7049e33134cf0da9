"""Adapts the insurance platforms (clients speaking ``insurance.models``) to the dialogs' port."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import SecretStr, ValidationError

from dialogs.models import BalanceView, MemberId, PlatformName
from dialogs.ports import (
    InsuranceProblem,
    MemberMatch,
    PlatformInfo,
    ProblemCode,
    TransactionsPage,
    TransactionView,
)
from insurance.models import (
    Balance,
    ErrorCode,
    InsuranceError,
    Member,
    MemberLookup,
    SyncStatus,
    TransactionPage,
)


class ContractClient(Protocol):
    """What Yibao asks of one insurance platform (``insurance.client.HttpPlatformClient``)."""

    async def lookup(self, query: MemberLookup) -> Member: ...

    async def balance(self, member_id: str) -> Balance: ...

    async def transactions(
        self,
        member_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> TransactionPage: ...


_PROBLEMS = {
    ErrorCode.MEMBER_NOT_FOUND: ProblemCode.MEMBER_NOT_FOUND,
    ErrorCode.IDENTITY_MISMATCH: ProblemCode.IDENTITY_MISMATCH,
    ErrorCode.ACCOUNT_LOCKED: ProblemCode.ACCOUNT_LOCKED,
    ErrorCode.MAINTENANCE: ProblemCode.MAINTENANCE,
    ErrorCode.RATE_LIMITED: ProblemCode.RATE_LIMITED,
}


def _problem(error: InsuranceError) -> InsuranceProblem:
    code = _PROBLEMS.get(error.code, ProblemCode.UNAVAILABLE)
    return InsuranceProblem(code, until=error.until, retry_after=error.retry_after)


@dataclass(frozen=True, slots=True)
class Platform:
    info: PlatformInfo
    client: ContractClient


class PlatformRegistry:
    """The ``InsurancePort`` over every configured platform; a binding names the one it is on."""

    def __init__(self, platforms: Sequence[Platform]) -> None:
        self._by_name = {p.info.name: p for p in platforms}
        self._infos = tuple(p.info for p in platforms)

    def platforms(self) -> tuple[PlatformInfo, ...]:
        return self._infos

    def _client(self, platform: PlatformName) -> ContractClient:
        found = self._by_name.get(platform)
        if found is None:  # a binding to a platform no longer configured
            raise InsuranceProblem(ProblemCode.UNAVAILABLE)
        return found.client

    async def find_member(self, platform: PlatformName, name: str, id_number: str) -> MemberMatch:
        client = self._client(platform)
        try:
            member = await client.lookup(MemberLookup(name=name, id_number=id_number))
        except InsuranceError as e:
            raise _problem(e) from None
        except ValidationError:  # an answer that breaks the contract
            raise InsuranceProblem(ProblemCode.UNAVAILABLE) from None
        return MemberMatch(
            member_id=MemberId(member.member_id), platform=platform, phone=SecretStr(member.phone)
        )

    async def balance(self, platform: PlatformName, member_id: MemberId) -> BalanceView:
        client = self._client(platform)
        try:
            b = await client.balance(member_id)
        except InsuranceError as e:
            raise _problem(e) from None
        except ValidationError:
            raise InsuranceProblem(ProblemCode.UNAVAILABLE) from None
        return BalanceView(
            personal_account=b.personal_account,
            pooled_used=b.pooled_used,
            pooled_remaining=b.pooled_remaining,
            pooled_year=b.pooled_year,
            as_of=b.as_of,
            stale=b.sync_status is SyncStatus.DELAYED,
        )

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

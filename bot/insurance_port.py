"""Adapts an insurance platform speaking the contract (``insurance.models``) to the dialogs' port."""

from __future__ import annotations

from typing import Protocol

from pydantic import SecretStr, ValidationError

from dialogs.models import MemberId, PlatformName
from dialogs.ports import BalanceView, InsuranceProblem, MemberMatch, ProblemCode
from insurance.models import Balance, ErrorCode, InsuranceError, Member, MemberLookup, SyncStatus


class ContractClient(Protocol):
    """What Yibao asks of an insurance platform (the sandbox in-process, or an HTTP client)."""

    async def lookup(self, query: MemberLookup) -> Member: ...

    async def balance(self, member_id: str) -> Balance: ...


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


class ContractInsurance:
    """The ``InsurancePort`` over one platform. Several platforms come with the HTTP issue."""

    def __init__(self, name: PlatformName, client: ContractClient) -> None:
        self.name = name
        self.client = client

    async def find_member(self, name: str, id_number: str) -> MemberMatch:
        try:
            member = await self.client.lookup(MemberLookup(name=name, id_number=id_number))
        except InsuranceError as e:
            raise _problem(e) from None
        except ValidationError:  # the platform answered something that breaks the contract
            raise InsuranceProblem(ProblemCode.UNAVAILABLE) from None
        return MemberMatch(
            member_id=MemberId(member.member_id), platform=self.name, phone=SecretStr(member.phone)
        )

    async def balance(self, platform: PlatformName, member_id: MemberId) -> BalanceView:
        if platform != self.name:
            raise InsuranceProblem(ProblemCode.UNAVAILABLE)
        try:
            b = await self.client.balance(member_id)
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

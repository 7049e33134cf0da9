"""Adapts the insurance platforms (clients speaking ``insurance.models``) to the dialogs' port."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import SecretStr, ValidationError

from bot import metrics
from dialogs.models import BalanceView, MemberId, PlatformName
from dialogs.ports import (
    InsuranceProblem,
    MemberMatch,
    PlatformInfo,
    ProblemCode,
    TransactionsPage,
    TransactionView,
)
from insurance import wire
from insurance.models import (
    Balance,
    ErrorCode,
    InsuranceError,
    Member,
    MemberLookup,
    SyncStatus,
    TransactionPage,
)

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

    def __init__(self, platforms: Sequence[Platform], *, on_call: CallSeen | None = None) -> None:
        self._by_name = {p.info.name: p for p in platforms}
        self._infos = tuple(p.info for p in platforms)
        self._gone_logged: set[str] = set()
        self.on_call = on_call

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

    async def find_member(self, platform: PlatformName, name: str, id_number: str) -> MemberMatch:
        client = self._client(platform)
        try:
            async with self._observed(platform, "lookup"):
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

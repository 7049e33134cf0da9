"""The insurance-platform contract as pydantic models.

These are the shapes an insurance platform (the national service, a regional bureau's gateway, an
HR system) exchanges with Yibao. Money is ``Decimal`` in yuan with at most two decimals; times are
timezone-aware.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Money = Annotated[Decimal, Field(max_digits=14, decimal_places=2)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InsuranceKind(StrEnum):
    EMPLOYEE = "employee"
    """职工医保: has a personal account (个人账户) and the pooled fund."""
    RESIDENT = "resident"
    """城乡居民医保: usually no personal account, only the pooled fund."""


class SyncStatus(StrEnum):
    OK = "ok"
    DELAYED = "delayed"
    """The platform's data is still syncing: the figures are the last known ones, as of ``as_of``."""


class Category(StrEnum):
    PHARMACY = "pharmacy"
    OUTPATIENT = "outpatient"
    INPATIENT = "inpatient"
    CREDIT = "credit"
    """Money paid into the personal account (the monthly contribution credit)."""


class MemberLookup(_Model):
    name: str = Field(min_length=1, max_length=64)
    id_number: str = Field(min_length=18, max_length=18)


class Member(_Model):
    member_id: str
    region: str = Field(pattern=r"^\d{6}$")
    """The area code (行政区划代码) of the region that insures the member."""
    kind: InsuranceKind
    phone: str = Field(pattern=r"^1\d{10}$")
    """The mobile number on file, where the SMS code goes."""


class Balance(_Model):
    member_id: str
    personal_account: Money | None
    """None when the member has no personal account (most residents)."""
    pooled_used: Money
    """Pooled-fund (统筹基金) payments this year."""
    pooled_remaining: Money
    """This year's pooled-fund allowance still available."""
    pooled_year: int
    currency: Literal["CNY"] = "CNY"
    as_of: AwareDatetime
    sync_status: SyncStatus = SyncStatus.OK


class Transaction(_Model):
    id: str
    at: AwareDatetime
    place: str
    category: Category
    personal_amount: Money
    """Paid from (negative) or credited to (positive) the personal account."""
    pooled_amount: Money
    """Paid by the pooled fund (zero or negative)."""


class TransactionPage(_Model):
    items: list[Transaction]
    next_cursor: str | None = None


class ErrorCode(StrEnum):
    MEMBER_NOT_FOUND = "member_not_found"
    IDENTITY_MISMATCH = "identity_mismatch"
    ACCOUNT_LOCKED = "account_locked"
    SYNC_DELAYED = "sync_delayed"
    MAINTENANCE = "maintenance"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"
    UNAVAILABLE = "unavailable"
    """Not a platform answer: the platform could not be reached or answered nonsense."""
    INVALID_REQUEST = "invalid_request"
    """The platform did not understand the request (a bad body, parameter, path or method)."""


class InsuranceError(Exception):
    """A platform's answer that is not the data asked for, with a stable ``code``."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str = "",
        *,
        until: datetime | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code.value}: {detail}" if detail else code.value)
        self.code = code
        self.detail = detail
        self.until = until
        """For ``account_locked``: when the lock ends, if the platform says."""
        self.retry_after = retry_after
        """For ``maintenance`` and ``rate_limited``: seconds to wait, if the platform says."""

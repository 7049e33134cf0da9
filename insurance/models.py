"""The insurance-platform contract as pydantic models.

These are the shapes an insurance platform (the national service, a regional bureau's gateway, an
HR system) exchanges with Yibao. Money is ``Decimal`` in yuan with at most two decimals; times are
timezone-aware.
"""

from __future__ import annotations

from datetime import date, datetime
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


LOCAL_CARD_PATTERN = r"^[A-Z0-9]{6,20}$"
"""A local social-security card number (社保卡号) as the contract carries it: upper-case letters and
digits. Each platform has its own numbering; this is only the shape every one of them fits."""


class MemberLookup(_Model):
    name: str = Field(min_length=1, max_length=64)
    id_number: str = Field(min_length=18, max_length=18)
    local_card_number: str | None = Field(default=None, pattern=LOCAL_CARD_PATTERN)
    """Sent when the platform's capabilities list ``local_card_number`` in ``bind``; a platform that
    needs it answers ``invalid_request`` without it and ``identity_mismatch`` when it is wrong."""


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
    VERIFICATION_REQUIRED = "verification_required"
    """A lookup the platform answers with its own face check first: ``verification_url`` is where
    the person does it, ``ticket`` what ``GET /v1/verifications/{ticket}`` follows."""
    NOT_SUPPORTED = "not_supported"
    """The platform does not serve this (its capabilities do not list it)."""


class InsuranceError(Exception):
    """A platform's answer that is not the data asked for, with a stable ``code``."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str = "",
        *,
        until: datetime | None = None,
        retry_after: float | None = None,
        verification_url: str | None = None,
        ticket: str | None = None,
    ) -> None:
        super().__init__(f"{code.value}: {detail}" if detail else code.value)
        self.code = code
        self.detail = detail
        self.verification_url = verification_url
        """For ``verification_required``: the platform's own face-check page."""
        self.ticket = ticket
        """For ``verification_required``: what ``GET /v1/verifications/{ticket}`` follows."""
        self.until = until
        """For ``account_locked``: when the lock ends, if the platform says."""
        self.retry_after = retry_after
        """For ``maintenance`` and ``rate_limited``: seconds to wait, if the platform says."""


# --- beyond the balance (contract 1.1): every one optional, declared in ``Capabilities`` ----------


class Feature(StrEnum):
    INSTITUTIONS = "institutions"
    """``GET /v1/institutions``: designated hospitals and pharmacies (定点医药机构)."""
    DRUGS = "drugs"
    """``GET /v1/drugs``: the reimbursement drug list (医保药品目录)."""
    VOUCHER = "voucher"
    """``GET /v1/members/{id}/voucher``: the e-voucher (医保电子凭证) as the platform issues it."""
    CONTRIBUTIONS = "contributions"
    """``GET /v1/members/{id}/contributions``: contribution months and the personal-account credit."""
    FAMILY = "family"
    """``GET /v1/members/{id}/family``: family members sharing the personal account (家庭共济)."""


class BindRequirement(StrEnum):
    LOCAL_CARD_NUMBER = "local_card_number"
    """The lookup must carry the local social-security card number (``MemberLookup.local_card_number``)."""
    FACE_CHECK = "face_check"
    """The lookup may answer ``verification_required``: the platform's face check comes first."""


class Capabilities(_Model):
    """What a platform serves beyond the balance. A platform without ``/v1/capabilities`` (a 1.0
    platform) serves none of it and needs nothing more to bind."""

    features: list[Feature] = []
    bind: list[BindRequirement] = []
    voucher_qr: bool = False
    """The platform is a certified e-voucher issuer: its voucher carries a short-lived QR payload."""
    alerts: list[Literal["credit", "family_spend"]] = []
    """Events whose data the platform provides (the monthly credit, a family member's spending)."""


class InstitutionKind(StrEnum):
    HOSPITAL = "hospital"
    PHARMACY = "pharmacy"


class GeoPoint(_Model):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class Institution(_Model):
    id: str
    name: str
    kind: InstitutionKind
    level: str | None = None
    """A hospital's grade (三级甲等, 二级, 一级…); None for pharmacies."""
    region: str = Field(pattern=r"^\d{6}$")
    address: str
    phone: str
    location: GeoPoint
    cross_region: bool
    """Cross-region direct settlement (跨省异地就医直接结算) is possible here."""
    distance_m: int | None = Field(default=None, ge=0)
    """With ``near``: the distance from that point, in metres (great-circle)."""


class InstitutionPage(_Model):
    items: list[Institution]
    next_cursor: str | None = None


class DrugClass(StrEnum):
    A = "A"
    """甲类: paid like any covered cost."""
    B = "B"
    """乙类: the member pays a regional self-pay share first."""
    C = "C"
    """丙类 / not listed: the member pays it all."""


class Drug(_Model):
    code: str
    generic_name: str
    dosage_form: str
    drug_class: DrugClass
    restriction: str | None = None
    """限定支付范围: when the fund pays for it at all."""
    self_pay_share: Annotated[Decimal, Field(ge=0, le=1, max_digits=4, decimal_places=3)] | None = None
    """With ``region``: the share the member pays first in that region, where known."""


class DrugPage(_Model):
    items: list[Drug]
    next_cursor: str | None = None


class Voucher(_Model):
    """The e-voucher as the platform issues it. Yibao only passes it on; it never makes one."""

    member_id: str
    deep_link: str = Field(pattern=r"^https://")
    """Opens the voucher in the official channel (the National Medical Insurance Service app)."""
    qr_payload: str | None = Field(default=None, max_length=512)
    """Only from a certified issuer: what the QR code shown at the counter encodes."""
    expires_at: AwareDatetime | None = None
    """When ``qr_payload`` stops being accepted (a minute or so)."""


class ContributionMonth(_Model):
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    paid: bool
    employer: str | None = None
    base: Money | None = None
    """The monthly contribution base (缴费基数)."""
    rate: Annotated[Decimal, Field(ge=0, le=1, max_digits=5, decimal_places=4)] | None = None
    """The share of ``base`` credited to the personal account."""
    credit: Money
    """What was credited to the personal account for this month."""
    credited_at: AwareDatetime | None = None


class Contributions(_Model):
    member_id: str
    months: list[ContributionMonth]
    """Newest first."""


class FamilyMember(_Model):
    masked_name: str
    relation: Literal["spouse", "child", "parent", "other"]
    since: date
    spent_this_year: Money


class Family(_Model):
    member_id: str
    year: int
    members: list[FamilyMember]


class VerificationStatus(StrEnum):
    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"
    EXPIRED = "expired"


class Verification(_Model):
    ticket: str
    status: VerificationStatus
    member: Member | None = None
    """Set once ``passed``: the member the lookup found, with the phone the SMS code goes to."""

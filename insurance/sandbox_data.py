"""The sandbox platform's data file: fictional insured people, their regions and 12 months of history.

``insurance/data/sandbox.json`` is written by ``tools/make_sandbox_data.py`` and read by
:class:`insurance.sandbox.SandboxPlatform`. Loading validates every entry and every invariant the
platform relies on (valid ID numbers, unique ids, balance = opening + history); a bad entry is named by
its index and ``member_id`` only, never by its ID number or phone.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator
from stdnum.cn import ric
from stdnum.exceptions import ValidationError as StdnumValidationError

from insurance.models import Category, InsuranceKind, Money, Transaction

CHINA_TZ = timezone(timedelta(hours=8), "CST")
"""UTC+08:00. Asia/Shanghai has had no daylight saving since 1991, so the fixed offset is exact."""

FORMAT_VERSION = 1


class SandboxDataError(ValueError):
    """The data file is not valid. The message names the bad entries, never an ID number or phone."""


class Scenario(StrEnum):
    """What a demo person is there to show."""

    NORMAL = "normal"
    HIGH_BALANCE = "high_balance"
    LOW_BALANCE = "low_balance"
    RESIDENT = "resident"
    LOCKED = "locked"
    SYNCING = "syncing"
    MAINTENANCE = "maintenance"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SandboxRegion(_Model):
    code: str = Field(pattern=r"^\d{6}$")
    """The area code (行政区划代码) of the insuring region."""
    name: str = Field(min_length=1)
    maintenance: bool = False
    """Every lookup and balance for the region's members fails with ``maintenance``."""
    retry_after_seconds: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _maintenance_has_retry_after(self) -> SandboxRegion:
        if self.maintenance and self.retry_after_seconds is None:
            raise ValueError(f"region {self.code} is in maintenance but has no retry_after_seconds")
        return self


class SandboxPerson(_Model):
    member_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=64)
    id_number: str = Field(pattern=r"^\d{17}[\dX]$")
    phone: str = Field(pattern=r"^1[3-9]\d{9}$")
    region: str = Field(pattern=r"^\d{6}$")
    kind: InsuranceKind
    scenario: Scenario
    locked: bool = False
    """Locked on the platform after wrong passwords: lookups and balances fail with ``account_locked``."""
    sync_lag_seconds: int | None = Field(default=None, gt=0)
    """Set when the platform's data for this person is still syncing, this far behind now."""
    contribution_base: Money | None = None
    """Monthly contribution base (缴费基数); the personal account gets about 2% of it a month."""
    opening_balance: Money | None
    """Personal-account balance just before the first transaction; None without a personal account."""
    personal_balance: Money | None
    """Personal-account balance after the last transaction: opening + the sum of ``personal_amount``."""
    pooled_allowance: Money = Field(gt=0)
    """The yearly pooled-fund (统筹基金) allowance."""
    transactions: list[Transaction]

    @model_validator(mode="after")
    def _consistent(self) -> SandboxPerson:
        # Messages here must not quote the ID number or phone: they end up in logs.
        try:
            ric.validate(self.id_number)
        except StdnumValidationError as exc:
            raise ValueError(f"id_number is not a valid resident ID number ({type(exc).__name__})") from None
        if self.kind is InsuranceKind.EMPLOYEE:
            if self.opening_balance is None or self.personal_balance is None:
                raise ValueError("an employee needs opening_balance and personal_balance")
        elif self.opening_balance is not None or self.personal_balance is not None:
            raise ValueError(
                "a resident has no personal account: opening_balance and personal_balance are null"
            )
        seen: set[str] = set()
        running = self.opening_balance or Decimal(0)
        for tx in sorted(self.transactions, key=lambda t: (t.at, t.id)):
            if tx.id in seen:
                raise ValueError(f"duplicate transaction id {tx.id}")
            seen.add(tx.id)
            if tx.pooled_amount > 0:
                raise ValueError(f"transaction {tx.id}: pooled_amount must be zero or negative")
            if tx.category is Category.CREDIT:
                if tx.personal_amount <= 0 or tx.pooled_amount != 0:
                    raise ValueError(f"transaction {tx.id}: a credit adds to the personal account only")
            elif tx.personal_amount > 0:
                raise ValueError(f"transaction {tx.id}: spending cannot add to the personal account")
            if self.kind is InsuranceKind.RESIDENT and tx.personal_amount != 0:
                raise ValueError(f"transaction {tx.id}: a resident has no personal account")
            running += tx.personal_amount
            if running < 0:
                raise ValueError(f"transaction {tx.id}: the personal account would go below zero")
        if self.personal_balance is not None and running != self.personal_balance:
            raise ValueError(
                f"personal_balance {self.personal_balance} != opening_balance + transactions = {running}"
            )
        return self


class SandboxData(_Model):
    version: Annotated[int, Field(ge=FORMAT_VERSION, le=FORMAT_VERSION)] = FORMAT_VERSION
    notice: str = ""
    anchor: AwareDatetime
    """The moment the data was generated for; the platform shifts history by whole days from it."""
    regions: list[SandboxRegion] = Field(min_length=1)
    people: list[SandboxPerson]

    @model_validator(mode="after")
    def _cross_checks(self) -> SandboxData:
        problems: list[str] = []
        region_codes: dict[str, int] = {}
        for i, region in enumerate(self.regions):
            if region.code in region_codes:
                problems.append(f"regions[{i}] ({region.code}): duplicate region code")
            region_codes[region.code] = i
        first_by: dict[str, dict[str, int]] = {"member_id": {}, "id_number": {}, "phone": {}}
        for i, person in enumerate(self.people):
            where = f"people[{i}] ({person.member_id})"
            for field in ("member_id", "id_number", "phone"):
                value = getattr(person, field)
                if value in first_by[field]:
                    problems.append(f"{where}: duplicate {field} (also people[{first_by[field][value]}])")
                else:
                    first_by[field][value] = i
            if person.region not in region_codes:
                problems.append(f"{where}: unknown region {person.region}")
            late = [tx.id for tx in person.transactions if tx.at > self.anchor]
            if late:
                problems.append(f"{where}: transactions after the anchor: {', '.join(late[:3])}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def to_json(self) -> str:
        """Serialise for the shipped file: readable, one transaction a line, money as strings."""
        return _format(self.model_dump(mode="json"))


def parse_sandbox_data(raw: str | bytes) -> SandboxData:
    """Parse and validate the data file's text; raise :class:`SandboxDataError` naming bad entries."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SandboxDataError(f"sandbox data is not JSON: {exc.msg} at line {exc.lineno}") from None
    try:
        return SandboxData.model_validate(obj)
    except ValidationError as exc:
        # ``from None`` and no input values: the pydantic error would otherwise carry ID numbers.
        raise SandboxDataError(_describe(exc, obj)) from None


def _describe(exc: ValidationError, obj: Any) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = list(err["loc"])
        where = "sandbox data"
        if len(loc) >= 2 and loc[0] in ("people", "regions") and isinstance(loc[1], int):
            where = f"{loc[0]}[{loc[1]}]"
            entry = _entry(obj, str(loc[0]), loc[1])
            label = entry.get("member_id") if loc[0] == "people" else entry.get("code")
            if isinstance(label, str):
                where += f" ({label})"
            loc = loc[2:]
        field = ".".join(str(part) for part in loc)
        lines.append(f"{where}{' ' + field if field else ''}: {err['msg']}")
    return "invalid sandbox data: " + "; ".join(lines)


def _entry(obj: Any, key: str, index: int) -> dict[str, Any]:
    items = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(items, list) and 0 <= index < len(items) and isinstance(items[index], dict):
        entry: dict[str, Any] = items[index]
        return entry
    return {}


def start_of_day(day: date) -> datetime:
    """Midnight at the start of ``day`` in China time."""
    return datetime.combine(day, time(0), tzinfo=CHINA_TZ)


def _format(data: dict[str, Any]) -> str:
    """JSON with one region and one transaction a line: diffs of a regenerated file stay readable."""

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    def items(values: list[str], indent: str) -> list[str]:
        return [f"{indent}{v}{',' if i < len(values) - 1 else ''}" for i, v in enumerate(values)]

    out = ["{"]
    out += [f"  {dump(k)}: {dump(v)}," for k, v in data.items() if k not in ("regions", "people")]
    out += ['  "regions": [', *items([dump(r) for r in data["regions"]], "    "), "  ],"]
    people = []
    for person in data["people"]:
        fields = [f"      {dump(k)}: {dump(v)}," for k, v in person.items() if k != "transactions"]
        txs = items([dump(tx) for tx in person["transactions"]], "        ")
        people.append("\n".join(["{", *fields, '      "transactions": [', *txs, "      ]", "    }"]))
    out += ['  "people": [', *items(people, "    "), "  ]", "}"]
    return "\n".join(out) + "\n"

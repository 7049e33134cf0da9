"""The sandbox insurance platform and its shipped data file."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from stdnum.cn import ric

from insurance.models import (
    Balance,
    Category,
    ErrorCode,
    InsuranceError,
    InsuranceKind,
    MemberLookup,
    SyncStatus,
    Transaction,
)
from insurance.sandbox import DemoPerson, SandboxPlatform, lock_ends, normalize_name
from insurance.sandbox_data import (
    CHINA_TZ,
    SandboxData,
    SandboxDataError,
    SandboxPerson,
    Scenario,
    parse_sandbox_data,
)
from insurance.sandbox_extras import local_card_number

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "insurance" / "data" / "sandbox.json"


def cst(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=CHINA_TZ)


@pytest.fixture(scope="module")
def data() -> SandboxData:
    return SandboxPlatform.from_file().data


@pytest.fixture(scope="module")
def anchor_day(data: SandboxData) -> date:
    return data.anchor.astimezone(CHINA_TZ).date()


@pytest.fixture
def at(data: SandboxData) -> Callable[[datetime], SandboxPlatform]:
    """A platform over the shipped data whose clock stands still at the given moment."""

    def make(now: datetime) -> SandboxPlatform:
        return SandboxPlatform(data, clock=lambda: now)

    return make


def one(data: SandboxData, scenario: Scenario, kind: InsuranceKind | None = None) -> SandboxPerson:
    return next(p for p in data.people if p.scenario is scenario and (kind is None or p.kind is kind))


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, min(day.day, 28))


def raise_code(code: ErrorCode) -> Any:
    return pytest.raises(InsuranceError, match=f"^{code.value}")


# --- the data file ----------------------------------------------------------------------------------


def test_the_shipped_file_is_what_the_generator_writes() -> None:
    module = _load_generator()
    assert module.build().to_json() == SHIPPED.read_text(encoding="utf-8")


def test_enough_people_in_enough_regions(data: SandboxData) -> None:
    assert len(data.people) >= 24
    regions_with_people = {p.region for p in data.people}
    assert len(regions_with_people) >= 4
    healthy = {r.code for r in data.regions if not r.maintenance}
    assert len(healthy & regions_with_people) >= 4
    assert {p.kind for p in data.people} == set(InsuranceKind)
    assert any("·" in p.name for p in data.people)


def test_every_id_number_is_a_valid_resident_id(data: SandboxData) -> None:
    for person in data.people:
        assert ric.validate(person.id_number) == person.id_number
        assert ric.get_birth_place(person.id_number)["province"]
        assert date(1950, 1, 1) <= ric.get_birth_date(person.id_number) <= date(2004, 12, 31)


def test_ids_phones_and_member_ids_are_unique(data: SandboxData) -> None:
    for field in ("member_id", "id_number", "phone"):
        values = [getattr(p, field) for p in data.people]
        assert len(set(values)) == len(values), field
    tx_ids = [tx.id for p in data.people for tx in p.transactions]
    assert len(set(tx_ids)) == len(tx_ids)


def test_phones_are_chinese_mobile_numbers(data: SandboxData) -> None:
    for person in data.people:
        assert len(person.phone) == 11
        assert person.phone.isdigit()
        assert "13" <= person.phone[:2] <= "19"


def test_balance_is_opening_plus_history(data: SandboxData) -> None:
    for person in data.people:
        if person.kind is InsuranceKind.EMPLOYEE:
            assert person.opening_balance is not None
            total = sum((tx.personal_amount for tx in person.transactions), Decimal(0))
            assert person.personal_balance == person.opening_balance + total
        else:
            assert person.opening_balance is None
            assert person.personal_balance is None
            assert all(tx.personal_amount == 0 for tx in person.transactions)


def test_personal_account_never_goes_below_zero(data: SandboxData) -> None:
    for person in data.people:
        running = person.opening_balance or Decimal(0)
        for tx in sorted(person.transactions, key=lambda t: t.at):
            running += tx.personal_amount
            assert running >= 0, tx.id


def test_twelve_months_of_history_ending_before_the_anchor_date(data: SandboxData, anchor_day: date) -> None:
    periods = [(add_months(anchor_day, -n - 1), add_months(anchor_day, -n)) for n in range(12)]
    for person in data.people:
        days = [tx.at.astimezone(CHINA_TZ).date() for tx in person.transactions]
        assert max(days) < anchor_day
        assert min(days) >= add_months(anchor_day, -12)
        for start, end in periods:
            assert any(start <= d < end for d in days), (person.member_id, start)


def test_employees_get_a_monthly_credit_of_about_two_percent(data: SandboxData) -> None:
    for person in data.people:
        credits = [tx for tx in person.transactions if tx.category is Category.CREDIT]
        if person.kind is InsuranceKind.RESIDENT:
            assert credits == []
            continue
        assert person.contribution_base is not None
        assert len(credits) == 12
        assert {tx.personal_amount for tx in credits} == {person.contribution_base * Decimal("0.02")}
        assert all(Decimal(100) <= tx.personal_amount <= Decimal(400) for tx in credits)
        assert all(tx.pooled_amount == 0 for tx in credits)


def test_spending_is_split_between_personal_account_and_pooled_fund(data: SandboxData) -> None:
    spending = [tx for p in data.people for tx in p.transactions if tx.category is not Category.CREDIT]
    assert {tx.category for tx in spending} == {Category.PHARMACY, Category.OUTPATIENT, Category.INPATIENT}
    for tx in spending:
        assert tx.personal_amount <= 0
        assert tx.pooled_amount <= 0
        assert tx.personal_amount + tx.pooled_amount < 0
        assert tx.place
    hospital = [tx for tx in spending if tx.category is not Category.PHARMACY]
    assert all(tx.pooled_amount < 0 for tx in hospital)


def test_pooled_allowances(data: SandboxData) -> None:
    for person in data.people:
        if person.kind is InsuranceKind.EMPLOYEE:
            assert Decimal(300_000) <= person.pooled_allowance <= Decimal(500_000)
        else:
            assert Decimal(200_000) <= person.pooled_allowance <= Decimal(300_000)


def test_every_scenario_is_present_and_flagged(data: SandboxData) -> None:
    assert {p.scenario for p in data.people} == set(Scenario)
    maintenance = {r.code for r in data.regions if r.maintenance}
    assert len(maintenance) == 1
    for person in data.people:
        assert person.locked == (person.scenario is Scenario.LOCKED)
        assert (person.sync_lag_seconds is not None) == (person.scenario is Scenario.SYNCING)
        assert (person.region in maintenance) == (person.scenario is Scenario.MAINTENANCE)
    assert one(data, Scenario.SYNCING).sync_lag_seconds == 36 * 3600
    assert all(r.retry_after_seconds == 1800 for r in data.regions if r.maintenance)


def test_alert_demo_balances(data: SandboxData) -> None:
    low = one(data, Scenario.LOW_BALANCE)
    assert low.kind is InsuranceKind.EMPLOYEE
    assert low.personal_balance is not None
    assert low.personal_balance < 50
    high = [p for p in data.people if p.scenario is Scenario.HIGH_BALANCE]
    assert high
    assert all(p.personal_balance is not None and p.personal_balance > 3000 for p in high)


def test_people_listing(data: SandboxData) -> None:
    people = SandboxPlatform(data).people()
    assert [p.member_id for p in people] == [p.member_id for p in data.people]
    locked = one(data, Scenario.LOCKED)
    listed = next(p for p in people if p.member_id == locked.member_id)
    assert listed == DemoPerson(
        member_id=locked.member_id,
        name=locked.name,
        id_number=locked.id_number,
        phone=locked.phone,
        region=locked.region,
        region_name=next(r.name for r in data.regions if r.code == locked.region),
        kind=locked.kind,
        scenario=Scenario.LOCKED,
        local_card_number=local_card_number(locked.member_id),
    )
    assert listed.local_card_number.startswith("SB")


# --- loading a bad file -----------------------------------------------------------------------------


def _shipped_json() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(SHIPPED.read_text(encoding="utf-8"))
    return raw


def test_a_bad_id_number_is_named_by_entry_not_by_number() -> None:
    raw = _shipped_json()
    person = raw["people"][3]
    bad = person["id_number"][:-1] + ("0" if person["id_number"][-1] != "0" else "1")
    person["id_number"] = bad
    with pytest.raises(SandboxDataError) as info:
        parse_sandbox_data(json.dumps(raw))
    message = str(info.value)
    assert f"people[3] ({person['member_id']})" in message
    assert "not a valid resident ID number" in message
    assert bad not in message
    assert info.value.__cause__ is None


def test_duplicate_phone_is_reported_without_the_phone() -> None:
    raw = _shipped_json()
    phone = raw["people"][0]["phone"]
    raw["people"][5]["phone"] = phone
    with pytest.raises(
        SandboxDataError, match=r"people\[5\] \(sbx-[\d-]+\): duplicate phone \(also people\[0\]\)"
    ) as info:
        parse_sandbox_data(json.dumps(raw))
    assert phone not in str(info.value)


def test_a_malformed_phone_is_reported_without_the_phone() -> None:
    raw = _shipped_json()
    raw["people"][2]["phone"] = "1234567"
    with pytest.raises(
        SandboxDataError, match=r"people\[2\] \(sbx-[\d-]+\) phone: String should match"
    ) as info:
        parse_sandbox_data(json.dumps(raw))
    assert "1234567" not in str(info.value)


def test_a_balance_that_does_not_add_up_is_rejected() -> None:
    raw = _shipped_json()
    employee = next(i for i, p in enumerate(raw["people"]) if p["kind"] == "employee")
    raw["people"][employee]["personal_balance"] = "99999.99"
    with pytest.raises(SandboxDataError, match=rf"people\[{employee}\] .*personal_balance 99999.99 !="):
        parse_sandbox_data(json.dumps(raw))


def test_unknown_region_and_not_json() -> None:
    raw = _shipped_json()
    raw["people"][1]["region"] = "999999"
    with pytest.raises(SandboxDataError, match=r"people\[1\] .*unknown region 999999"):
        parse_sandbox_data(json.dumps(raw))
    with pytest.raises(SandboxDataError, match="not JSON"):
        parse_sandbox_data("{")


def test_from_file_reads_a_given_path(tmp_path: Path, data: SandboxData) -> None:
    path = tmp_path / "sandbox.json"
    path.write_text(data.to_json(), encoding="utf-8")
    assert SandboxPlatform.from_file(path).data == data


# --- lookup -----------------------------------------------------------------------------------------


NOW = (2026, 11, 24, 10, 7, 30)


async def test_lookup_finds_a_member(data: SandboxData, at: Callable[[datetime], SandboxPlatform]) -> None:
    person = one(data, Scenario.NORMAL)
    member = await at(cst(*NOW)).lookup(MemberLookup(name=person.name, id_number=person.id_number))
    assert member.member_id == person.member_id
    assert member.region == person.region
    assert member.kind is InsuranceKind.EMPLOYEE
    assert member.phone == person.phone


async def test_lookup_upper_cases_a_check_character_x(
    data: SandboxData, at: Callable[[datetime], SandboxPlatform]
) -> None:
    person = next(
        p
        for p in data.people
        if p.id_number.endswith("X") and p.scenario in (Scenario.NORMAL, Scenario.RESIDENT)
    )
    member = await at(cst(*NOW)).lookup(MemberLookup(name=person.name, id_number=person.id_number.lower()))
    assert member.member_id == person.member_id


@pytest.mark.parametrize(
    "typed",
    [
        "阿依古丽·买买提",
        "阿依古丽•买买提",
        "阿依古丽・买买提",
        "阿依古丽.买买提",
        "阿依古丽．买买提",  # fullwidth full stop, NFKC folds it to "."
        "阿依古丽･买买提",  # halfwidth katakana middle dot
        " 阿依古丽 · 买买提\u3000",
    ],
)
async def test_lookup_treats_middle_dots_and_whitespace_alike(
    typed: str, data: SandboxData, at: Callable[[datetime], SandboxPlatform]
) -> None:
    person = next(p for p in data.people if p.name == "阿依古丽·买买提")
    member = await at(cst(*NOW)).lookup(MemberLookup(name=typed, id_number=person.id_number))
    assert member.member_id == person.member_id


def test_normalize_name() -> None:
    assert normalize_name(" 张 伟 ") == "张伟"
    assert normalize_name("艾力•吐尔逊") == normalize_name("艾力·吐尔逊") == "艾力·吐尔逊"
    assert normalize_name("张伟") != normalize_name("张玮")


async def test_lookup_unknown_id_number(at: Callable[[datetime], SandboxPlatform]) -> None:
    body = "11010119900307002"
    unknown = body + ric.calc_check_digit(body + "0")
    with raise_code(ErrorCode.MEMBER_NOT_FOUND) as info:
        await at(cst(*NOW)).lookup(MemberLookup(name="张伟", id_number=unknown))
    assert info.value.code is ErrorCode.MEMBER_NOT_FOUND
    assert unknown not in str(info.value)


async def test_lookup_wrong_name(data: SandboxData, at: Callable[[datetime], SandboxPlatform]) -> None:
    person = one(data, Scenario.NORMAL)
    with raise_code(ErrorCode.IDENTITY_MISMATCH) as info:
        await at(cst(*NOW)).lookup(MemberLookup(name=person.name + "明", id_number=person.id_number))
    assert info.value.code is ErrorCode.IDENTITY_MISMATCH
    assert person.id_number not in str(info.value)
    assert person.phone not in str(info.value)


async def test_lookup_locked_account_says_until_when(
    data: SandboxData, at: Callable[[datetime], SandboxPlatform]
) -> None:
    person = one(data, Scenario.LOCKED)
    with raise_code(ErrorCode.ACCOUNT_LOCKED) as info:
        await at(cst(*NOW)).lookup(MemberLookup(name=person.name, id_number=person.id_number))
    assert info.value.code is ErrorCode.ACCOUNT_LOCKED
    assert info.value.until == cst(2026, 11, 24, 10, 45)
    assert info.value.retry_after is None


async def test_a_wrong_name_does_not_learn_about_the_lock(
    data: SandboxData, at: Callable[[datetime], SandboxPlatform]
) -> None:
    person = one(data, Scenario.LOCKED)
    with raise_code(ErrorCode.IDENTITY_MISMATCH):
        await at(cst(*NOW)).lookup(MemberLookup(name="王五", id_number=person.id_number))


@pytest.mark.parametrize(
    ("now", "until"),
    [
        (cst(2026, 11, 24, 10, 7, 30), cst(2026, 11, 24, 10, 45)),
        (cst(2026, 11, 24, 10, 15), cst(2026, 11, 24, 10, 45)),
        (cst(2026, 11, 24, 10, 15, 0, 1), cst(2026, 11, 24, 11, 0)),
        (cst(2026, 11, 24, 10, 59, 59), cst(2026, 11, 24, 11, 30)),
        (cst(2026, 12, 31, 23, 50), cst(2027, 1, 1, 0, 30)),
        (datetime(2026, 11, 24, 2, 1, tzinfo=UTC), cst(2026, 11, 24, 10, 45)),
    ],
)
def test_lock_ends_a_quarter_hour_rounded_up_plus_thirty_minutes(now: datetime, until: datetime) -> None:
    assert lock_ends(now) == until
    assert lock_ends(now) > now


async def test_maintenance_region_refuses_lookup_and_balance(
    data: SandboxData, at: Callable[[datetime], SandboxPlatform]
) -> None:
    platform = at(cst(*NOW))
    people = [p for p in data.people if p.scenario is Scenario.MAINTENANCE]
    assert {p.kind for p in people} == set(InsuranceKind)
    for person in people:
        with raise_code(ErrorCode.MAINTENANCE) as info:
            await platform.lookup(MemberLookup(name=person.name, id_number=person.id_number))
        assert info.value.retry_after == 1800.0
        with raise_code(ErrorCode.MAINTENANCE) as info:
            await platform.balance(person.member_id)
        assert info.value.retry_after == 1800.0
        with raise_code(ErrorCode.MAINTENANCE):
            await platform.transactions(person.member_id)


async def test_other_regions_are_healthy(
    data: SandboxData, at: Callable[[datetime], SandboxPlatform]
) -> None:
    platform = at(cst(*NOW))
    healthy = [p for p in data.people if p.scenario not in (Scenario.LOCKED, Scenario.MAINTENANCE)]
    for person in healthy:
        member = await platform.lookup(MemberLookup(name=person.name, id_number=person.id_number))
        balance = await platform.balance(member.member_id)
        if person.scenario is Scenario.SYNCING:
            assert balance.sync_status is SyncStatus.DELAYED
        else:
            assert balance.sync_status is SyncStatus.OK
            assert balance.personal_account == person.personal_balance


# --- balance ----------------------------------------------------------------------------------------


def _pooled_used(person: SandboxPerson, shift: timedelta, year: int, until: datetime) -> Decimal:
    return -sum(
        (
            tx.pooled_amount
            for tx in person.transactions
            if (tx.at + shift).year == year and tx.at + shift <= until
        ),
        Decimal(0),
    )


async def test_balance_of_an_employee(data: SandboxData, at: Callable[[datetime], SandboxPlatform]) -> None:
    person = one(data, Scenario.NORMAL)
    now = cst(*NOW)
    balance = await at(now).balance(person.member_id)
    used = _pooled_used(person, timedelta(0), 2026, now)
    assert balance == Balance(
        member_id=person.member_id,
        personal_account=person.personal_balance,
        pooled_used=used,
        pooled_remaining=person.pooled_allowance - used,
        pooled_year=2026,
        as_of=cst(2026, 11, 24, 10, 7),
        sync_status=SyncStatus.OK,
    )


async def test_balance_of_a_resident(data: SandboxData, at: Callable[[datetime], SandboxPlatform]) -> None:
    person = one(data, Scenario.RESIDENT)
    now = cst(*NOW)
    balance = await at(now).balance(person.member_id)
    assert balance.personal_account is None
    assert balance.pooled_used == _pooled_used(person, timedelta(0), 2026, now)
    assert balance.pooled_used > 0
    assert balance.pooled_remaining == person.pooled_allowance - balance.pooled_used


async def test_balance_unknown_member(at: Callable[[datetime], SandboxPlatform]) -> None:
    with raise_code(ErrorCode.MEMBER_NOT_FOUND):
        await at(cst(*NOW)).balance("sbx-000000-0000")


async def test_balance_of_a_locked_account(
    data: SandboxData, at: Callable[[datetime], SandboxPlatform]
) -> None:
    person = one(data, Scenario.LOCKED)
    with raise_code(ErrorCode.ACCOUNT_LOCKED) as info:
        await at(cst(2026, 11, 24, 23, 46)).balance(person.member_id)
    assert info.value.until == cst(2026, 11, 25, 0, 30)
    with raise_code(ErrorCode.ACCOUNT_LOCKED):
        await at(cst(*NOW)).transactions(person.member_id)


async def test_balance_while_syncing_is_the_last_known_one(
    data: SandboxData, at: Callable[[datetime], SandboxPlatform]
) -> None:
    person = one(data, Scenario.SYNCING)
    assert person.opening_balance is not None
    now = cst(2026, 11, 30, 8, 30, 45)
    shift = timedelta(days=6)
    balance = await at(now).balance(person.member_id)
    as_of = cst(2026, 11, 28, 20, 30)
    assert balance.sync_status is SyncStatus.DELAYED
    assert balance.as_of == as_of
    known = [tx for tx in person.transactions if tx.at + shift <= as_of]
    assert len(known) < len(person.transactions)  # the lag hides yesterday's spending
    assert balance.personal_account == person.opening_balance + sum(tx.personal_amount for tx in known)
    assert balance.pooled_used == _pooled_used(person, shift, 2026, as_of)
    page = await at(now).transactions(person.member_id, limit=100)
    assert [tx.id for tx in page.items] == [tx.id for tx in sorted(known, key=lambda t: t.at, reverse=True)]


async def test_balance_as_of_is_now_to_the_minute_in_china_time(
    data: SandboxData, at: Callable[[datetime], SandboxPlatform]
) -> None:
    person = one(data, Scenario.HIGH_BALANCE)
    balance = await at(datetime(2026, 12, 1, 3, 4, 59, 999, tzinfo=UTC)).balance(person.member_id)
    assert balance.as_of == cst(2026, 12, 1, 11, 4)
    assert balance.as_of.utcoffset() == timedelta(hours=8)


async def test_a_naive_clock_is_refused(data: SandboxData) -> None:
    platform = SandboxPlatform(data, clock=lambda: datetime(2026, 11, 24, 10, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        await platform.balance(one(data, Scenario.NORMAL).member_id)


# --- date shifting ----------------------------------------------------------------------------------


async def test_history_moves_forward_to_end_yesterday(
    data: SandboxData, anchor_day: date, at: Callable[[datetime], SandboxPlatform]
) -> None:
    person = one(data, Scenario.NORMAL)
    now = cst(2027, 2, 10, 9, 0)
    shift = timedelta(days=(now.date() - anchor_day).days)
    platform = at(now)
    page = await platform.transactions(person.member_id, limit=100)
    expected = sorted(person.transactions, key=lambda t: (t.at, t.id), reverse=True)
    assert [tx.id for tx in page.items] == [tx.id for tx in expected]
    assert [tx.at for tx in page.items] == [tx.at + shift for tx in expected]
    assert page.items[0].at < cst(2027, 2, 10)
    last_month = await platform.transactions(person.member_id, start=cst(2027, 1, 1), end=cst(2027, 2, 1))
    assert last_month.items
    assert any(tx.category is Category.CREDIT for tx in last_month.items)
    balance = await platform.balance(person.member_id)
    assert balance.personal_account == person.personal_balance
    assert balance.pooled_year == 2027
    assert balance.pooled_used == _pooled_used(person, shift, 2027, now)
    assert balance.pooled_used < _pooled_used(person, shift, 2026, cst(2027, 1, 1))


async def test_the_shift_is_whole_days_by_china_date(
    data: SandboxData, anchor_day: date, at: Callable[[datetime], SandboxPlatform]
) -> None:
    person = one(data, Scenario.NORMAL)
    newest = max(person.transactions, key=lambda t: t.at)
    same_day = await at(cst(anchor_day.year, anchor_day.month, anchor_day.day, 23, 59)).transactions(
        person.member_id, limit=1
    )
    assert same_day.items[0].at == newest.at
    # 17:00 UTC on the anchor date is already the next day in China.
    utc = datetime(anchor_day.year, anchor_day.month, anchor_day.day, 17, 0, tzinfo=UTC)
    next_day = await at(utc).transactions(person.member_id, limit=1)
    assert next_day.items[0].at == newest.at + timedelta(days=1)


async def test_pooled_used_is_this_year_only(
    data: SandboxData, at: Callable[[datetime], SandboxPlatform]
) -> None:
    person = next(p for p in data.people if any(tx.category is Category.INPATIENT for tx in p.transactions))
    for now in (cst(2026, 11, 24, 12), cst(2027, 1, 2, 12), cst(2027, 6, 30, 12)):
        shift = timedelta(days=(now.date() - data.anchor.date()).days)
        balance = await at(now).balance(person.member_id)
        used = _pooled_used(person, shift, now.year, now)
        assert balance.pooled_used == used
        assert balance.pooled_remaining == person.pooled_allowance - used
        assert balance.pooled_year == now.year


# --- transactions -----------------------------------------------------------------------------------


async def test_paging_walks_every_transaction_newest_first(
    data: SandboxData, at: Callable[[datetime], SandboxPlatform]
) -> None:
    person = one(data, Scenario.LOW_BALANCE)
    platform = at(cst(*NOW))
    seen: list[Transaction] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await platform.transactions(person.member_id, cursor=cursor, limit=7)
        pages += 1
        assert 1 <= len(page.items) <= 7
        seen.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    expected = sorted(person.transactions, key=lambda t: (t.at, t.id), reverse=True)
    assert seen == expected
    assert pages == -(-len(expected) // 7)


async def test_filtering_by_date(data: SandboxData, at: Callable[[datetime], SandboxPlatform]) -> None:
    person = one(data, Scenario.NORMAL)
    platform = at(cst(*NOW))
    start, end = cst(2026, 3, 1), cst(2026, 6, 1)
    items: list[Transaction] = []
    cursor: str | None = None
    while True:
        page = await platform.transactions(person.member_id, start=start, end=end, cursor=cursor, limit=5)
        items.extend(page.items)
        if (cursor := page.next_cursor) is None:
            break
    expected = [tx for tx in person.transactions if start <= tx.at < end]
    assert len(expected) >= 6
    assert [tx.id for tx in items] == [tx.id for tx in sorted(expected, key=lambda t: t.at, reverse=True)]
    only_start = await platform.transactions(person.member_id, start=cst(2026, 11, 1), limit=100)
    assert all(tx.at >= cst(2026, 11, 1) for tx in only_start.items)
    assert only_start.next_cursor is None
    before = await platform.transactions(person.member_id, end=cst(2026, 1, 1), limit=100)
    assert [tx.id for tx in before.items] == [
        tx.id
        for tx in sorted(person.transactions, key=lambda t: t.at, reverse=True)
        if tx.at < cst(2026, 1, 1)
    ]
    empty = await platform.transactions(person.member_id, start=cst(2020, 1, 1), end=cst(2020, 2, 1))
    assert empty.items == []
    assert empty.next_cursor is None


async def test_a_cursor_survives_midnight(
    data: SandboxData, at: Callable[[datetime], SandboxPlatform]
) -> None:
    person = one(data, Scenario.NORMAL)
    first = await at(cst(2026, 11, 24, 23, 59)).transactions(person.member_id, limit=10)
    assert first.next_cursor is not None
    second = await at(cst(2026, 11, 25, 0, 1)).transactions(
        person.member_id, cursor=first.next_cursor, limit=10
    )
    ids = [tx.id for tx in sorted(person.transactions, key=lambda t: (t.at, t.id), reverse=True)]
    assert [tx.id for tx in first.items] + [tx.id for tx in second.items] == ids[:20]


async def test_bad_cursor_and_limit(data: SandboxData, at: Callable[[datetime], SandboxPlatform]) -> None:
    platform = at(cst(*NOW))
    a, b = [p for p in data.people if p.scenario is Scenario.NORMAL][:2]
    page = await platform.transactions(a.member_id, limit=3)
    assert page.next_cursor is not None
    with pytest.raises(ValueError, match="another member"):
        await platform.transactions(b.member_id, cursor=page.next_cursor)
    with pytest.raises(ValueError, match="not a transactions cursor"):
        await platform.transactions(a.member_id, cursor="!!not-a-cursor!!")
    with pytest.raises(ValueError, match="limit"):
        await platform.transactions(a.member_id, limit=0)
    with pytest.raises(ValueError, match="limit"):
        await platform.transactions(a.member_id, limit=101)
    with pytest.raises(ValueError, match="timezone-aware"):
        await platform.transactions(a.member_id, start=datetime(2026, 1, 1))
    with raise_code(ErrorCode.MEMBER_NOT_FOUND):
        await platform.transactions("nobody")


# --- helpers ----------------------------------------------------------------------------------------


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_sandbox_data", ROOT / "tools" / "make_sandbox_data.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module

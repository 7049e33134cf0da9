"""The operator's changes to the sandbox: spend, credit, lock, sync delay, maintenance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from insurance.models import (
    Category,
    ErrorCode,
    InsuranceError,
    InsuranceKind,
    MemberLookup,
    SyncStatus,
    Transaction,
)
from insurance.sandbox import DEFAULT_CREDIT_PLACE, DEFAULT_SPEND_PLACE, SandboxPlatform, lock_ends
from insurance.sandbox_data import CHINA_TZ, SandboxData, SandboxPerson, Scenario

NOW = datetime(2026, 11, 24, 10, 7, 30, tzinfo=CHINA_TZ)


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture(scope="module")
def data() -> SandboxData:
    return SandboxPlatform.from_file().data


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def platform(data: SandboxData, clock: Clock) -> SandboxPlatform:
    return SandboxPlatform(data, clock=clock)


def one(data: SandboxData, scenario: Scenario, kind: InsuranceKind | None = None) -> SandboxPerson:
    return next(p for p in data.people if p.scenario is scenario and (kind is None or p.kind is kind))


def code(error: ErrorCode) -> Any:
    return pytest.raises(InsuranceError, match=f"^{error.value}")


async def all_transactions(platform: SandboxPlatform, member_id: str, **kwargs: Any) -> list[Transaction]:
    items: list[Transaction] = []
    cursor: str | None = None
    while True:
        page = await platform.transactions(member_id, cursor=cursor, **kwargs)
        items.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return items


# --- spend ------------------------------------------------------------------------------------------


async def test_a_spend_shows_at_once_in_balance_and_transactions(
    data: SandboxData, platform: SandboxPlatform
) -> None:
    person = one(data, Scenario.NORMAL)
    before = await platform.balance(person.member_id)
    assert before.personal_account is not None

    after = platform.spend(person.member_id, Decimal("12.50"))

    assert after.personal_account == before.personal_account - Decimal("12.50")
    assert await platform.balance(person.member_id) == after
    newest = (await platform.transactions(person.member_id, limit=1)).items[0]
    assert newest.at == NOW.replace(microsecond=0)
    assert newest.place == DEFAULT_SPEND_PLACE
    assert newest.category is Category.PHARMACY
    assert newest.personal_amount == Decimal("-12.50")
    assert newest.pooled_amount == 0
    assert str(newest.pooled_amount) == "0.00"
    assert newest.id.startswith(person.member_id)
    assert newest.id not in {tx.id for tx in person.transactions}


async def test_a_pooled_share_is_paid_by_the_pooled_fund(
    data: SandboxData, platform: SandboxPlatform
) -> None:
    person = one(data, Scenario.HIGH_BALANCE)
    before = await platform.balance(person.member_id)
    assert before.personal_account is not None

    after = platform.spend(
        person.member_id,
        Decimal("10.01"),
        place="北京市第九示范医院",
        category=Category.OUTPATIENT,
        pooled_share=Decimal("0.5"),
    )

    # 5.005 rounds half up to 5.01 from the pooled fund; the personal account pays the rest.
    assert after.pooled_used == before.pooled_used + Decimal("5.01")
    assert after.pooled_remaining == before.pooled_remaining - Decimal("5.01")
    assert after.personal_account == before.personal_account - Decimal("5.00")
    tx = (await platform.transactions(person.member_id, limit=1)).items[0]
    assert (tx.personal_amount, tx.pooled_amount) == (Decimal("-5.00"), Decimal("-5.01"))
    assert (tx.category, tx.place) == (Category.OUTPATIENT, "北京市第九示范医院")


async def test_a_whole_pooled_share_leaves_the_personal_account_alone(
    data: SandboxData, platform: SandboxPlatform
) -> None:
    person = one(data, Scenario.NORMAL)
    before = await platform.balance(person.member_id)
    after = platform.spend(
        person.member_id, Decimal(300), category=Category.INPATIENT, pooled_share=Decimal(1)
    )
    assert after.personal_account == before.personal_account
    assert after.pooled_used == before.pooled_used + 300
    tx = (await platform.transactions(person.member_id, limit=1)).items[0]
    assert str(tx.personal_amount) == "0.00"


async def test_the_personal_account_never_goes_below_zero(
    data: SandboxData, platform: SandboxPlatform
) -> None:
    person = one(data, Scenario.LOW_BALANCE)
    before = await platform.balance(person.member_id)
    assert before.personal_account is not None
    too_much = before.personal_account + Decimal("0.01")
    with pytest.raises(ValueError, match="personal account holds"):
        platform.spend(person.member_id, too_much)
    assert await platform.balance(person.member_id) == before

    emptied = platform.spend(person.member_id, before.personal_account)
    assert emptied.personal_account == 0
    with pytest.raises(ValueError, match=r"personal account holds ¥0\.00"):
        platform.spend(person.member_id, Decimal("0.01"))
    # What the pooled fund pays does not need the personal account.
    platform.spend(person.member_id, Decimal(50), category=Category.OUTPATIENT, pooled_share=Decimal(1))


async def test_a_resident_spends_only_from_the_pooled_fund(
    data: SandboxData, platform: SandboxPlatform
) -> None:
    person = one(data, Scenario.RESIDENT)
    before = await platform.balance(person.member_id)
    with pytest.raises(ValueError, match="no personal account"):
        platform.spend(person.member_id, Decimal(100))
    with pytest.raises(ValueError, match="no personal account"):
        platform.spend(person.member_id, Decimal("0.01"), pooled_share=Decimal("0.4"))  # rounds to ¥0.00
    after = platform.spend(
        person.member_id, Decimal(100), category=Category.INPATIENT, pooled_share=Decimal("0.6")
    )
    assert after.personal_account is None
    assert after.pooled_used == before.pooled_used + 60
    tx = (await platform.transactions(person.member_id, limit=1)).items[0]
    # The other ¥40 is paid in cash, which the platform does not record.
    assert (tx.personal_amount, tx.pooled_amount) == (Decimal(0), Decimal(-60))


async def test_the_pooled_fund_cannot_pay_more_than_is_left(
    data: SandboxData, platform: SandboxPlatform
) -> None:
    person = one(data, Scenario.NORMAL)
    left = (await platform.balance(person.member_id)).pooled_remaining
    assert left < 1_000_000
    platform.spend(person.member_id, left, category=Category.INPATIENT, pooled_share=Decimal(1))
    assert (await platform.balance(person.member_id)).pooled_remaining == 0
    with pytest.raises(ValueError, match=r"pooled fund has ¥0\.00 left"):
        platform.spend(person.member_id, Decimal(1), category=Category.INPATIENT, pooled_share=Decimal(1))


@pytest.mark.parametrize(
    ("amount", "kwargs", "message"),
    [
        (Decimal(0), {}, "above ¥0"),
        (Decimal(-5), {}, "above ¥0"),
        (Decimal("1.234"), {}, "two decimals"),
        (Decimal("NaN"), {}, "two decimals"),
        (Decimal("Infinity"), {}, "two decimals"),
        (Decimal("1000000.01"), {}, "at most ¥1000000.00"),
        (Decimal(5), {"pooled_share": Decimal("1.01")}, "from 0 to 1"),
        (Decimal(5), {"pooled_share": Decimal(-1)}, "from 0 to 1"),
        (Decimal(5), {"category": Category.CREDIT}, "use credit"),
        (Decimal(5), {"place": "  "}, "place is 1 to 64"),
        (Decimal(5), {"place": "药" * 65}, "place is 1 to 64"),
    ],
)
async def test_bad_spends_are_refused(
    amount: Decimal, kwargs: dict[str, Any], message: str, data: SandboxData, platform: SandboxPlatform
) -> None:
    person = one(data, Scenario.HIGH_BALANCE)
    before = await platform.balance(person.member_id)
    with pytest.raises(ValueError, match=message):
        platform.spend(person.member_id, amount, **kwargs)
    assert await platform.balance(person.member_id) == before


def test_a_float_amount_is_refused(data: SandboxData, platform: SandboxPlatform) -> None:
    with pytest.raises(ValueError, match="Decimal"):
        platform.spend(one(data, Scenario.NORMAL).member_id, 1.5)  # type: ignore[arg-type]


def test_an_unknown_member_is_member_not_found(platform: SandboxPlatform) -> None:
    for change in (
        lambda: platform.spend("sbx-000000-0000", Decimal(1)),
        lambda: platform.credit("sbx-000000-0000", Decimal(1)),
        lambda: platform.lock("sbx-000000-0000"),
        lambda: platform.unlock("sbx-000000-0000"),
        lambda: platform.set_sync_delay("sbx-000000-0000", 60),
    ):
        with code(ErrorCode.MEMBER_NOT_FOUND):
            change()


def test_a_clock_that_goes_back_is_refused(
    data: SandboxData, platform: SandboxPlatform, clock: Clock
) -> None:
    person = one(data, Scenario.HIGH_BALANCE)
    platform.spend(person.member_id, Decimal(1))
    platform.spend(person.member_id, Decimal(1))  # the same second is fine
    clock.advance(seconds=-5)
    with pytest.raises(ValueError, match="clock is behind"):
        platform.spend(person.member_id, Decimal(1))


# --- credit -----------------------------------------------------------------------------------------


async def test_a_credit_adds_to_the_personal_account(data: SandboxData, platform: SandboxPlatform) -> None:
    person = one(data, Scenario.LOW_BALANCE)
    before = await platform.balance(person.member_id)
    assert before.personal_account is not None
    after = platform.credit(person.member_id, Decimal("312"))
    assert after.personal_account == before.personal_account + 312
    assert after.pooled_used == before.pooled_used
    tx = (await platform.transactions(person.member_id, limit=1)).items[0]
    assert (tx.category, tx.place) == (Category.CREDIT, DEFAULT_CREDIT_PLACE)
    assert (str(tx.personal_amount), str(tx.pooled_amount)) == ("312.00", "0.00")
    # The credit can then be spent.
    platform.spend(person.member_id, before.personal_account + 312)
    assert (await platform.balance(person.member_id)).personal_account == 0


def test_a_resident_cannot_be_credited(data: SandboxData, platform: SandboxPlatform) -> None:
    with pytest.raises(ValueError, match="no personal account"):
        platform.credit(one(data, Scenario.RESIDENT).member_id, Decimal(10))


def test_a_credit_is_a_positive_amount(data: SandboxData, platform: SandboxPlatform) -> None:
    with pytest.raises(ValueError, match="above ¥0"):
        platform.credit(one(data, Scenario.NORMAL).member_id, Decimal(-10))


# --- transactions with changes ----------------------------------------------------------------------


async def test_paging_interleaves_changes_with_the_history(
    data: SandboxData, platform: SandboxPlatform, clock: Clock
) -> None:
    person = one(data, Scenario.NORMAL)
    history = await all_transactions(platform, person.member_id, limit=100)
    for minutes in range(5):
        platform.spend(person.member_id, Decimal(minutes + 1))
        clock.advance(minutes=1)
    for limit in (1, 3, 7, 100):
        walked = await all_transactions(platform, person.member_id, limit=limit)
        assert len(walked) == len(history) + 5
        assert len({tx.id for tx in walked}) == len(walked)
        assert [tx.personal_amount for tx in walked[:5]] == [Decimal(-n) for n in (5, 4, 3, 2, 1)]
        assert walked[5:] == history
        assert [tx.at for tx in walked] == sorted((tx.at for tx in walked), reverse=True)


async def test_filters_apply_to_changes_too(
    data: SandboxData, platform: SandboxPlatform, clock: Clock
) -> None:
    person = one(data, Scenario.NORMAL)
    platform.spend(person.member_id, Decimal(1))
    clock.advance(hours=1)
    platform.spend(person.member_id, Decimal(2))
    today = datetime(2026, 11, 24, tzinfo=CHINA_TZ)
    page = await platform.transactions(person.member_id, start=today)
    assert [tx.personal_amount for tx in page.items] == [Decimal(-2), Decimal(-1)]
    page = await platform.transactions(person.member_id, start=today, end=NOW + timedelta(minutes=1))
    assert [tx.personal_amount for tx in page.items] == [Decimal(-1)]
    page = await platform.transactions(person.member_id, end=today, limit=1)
    assert page.items[0].id in {tx.id for tx in person.transactions}


async def test_extreme_bounds_do_not_overflow(data: SandboxData, platform: SandboxPlatform) -> None:
    person = one(data, Scenario.NORMAL)
    platform.spend(person.member_id, Decimal(1))
    earliest = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    latest = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-14)))
    page = await platform.transactions(person.member_id, start=earliest, end=latest, limit=100)
    assert len(page.items) == len(person.transactions) + 1
    assert (await platform.transactions(person.member_id, start=latest)).items == []
    assert (await platform.transactions(person.member_id, end=earliest)).items == []


async def test_a_change_keeps_its_real_time_when_the_history_moves_on(
    data: SandboxData, platform: SandboxPlatform, clock: Clock
) -> None:
    person = one(data, Scenario.NORMAL)
    after = platform.spend(person.member_id, Decimal(7))
    clock.advance(days=1)
    balance = await platform.balance(person.member_id)
    assert balance.personal_account == after.personal_account
    walked = await all_transactions(platform, person.member_id, limit=10)
    mine = next(tx for tx in walked if tx.personal_amount == Decimal(-7))
    assert mine.at == NOW.replace(microsecond=0)  # yesterday now, not moved to today
    assert [tx.at for tx in walked] == sorted((tx.at for tx in walked), reverse=True)
    assert len(walked) == len(person.transactions) + 1


async def test_pooled_used_counts_a_change_in_its_own_year(data: SandboxData, clock: Clock) -> None:
    clock.now = datetime(2026, 12, 31, 23, 30, tzinfo=CHINA_TZ)
    platform = SandboxPlatform(data, clock=clock)
    person = one(data, Scenario.NORMAL)
    platform.spend(person.member_id, Decimal(100), category=Category.INPATIENT, pooled_share=Decimal(1))
    clock.advance(hours=1)
    balance = await platform.balance(person.member_id)
    assert balance.pooled_year == 2027
    assert balance.pooled_used == 0


async def test_cursors_are_checked(data: SandboxData, platform: SandboxPlatform) -> None:
    person, other = [p for p in data.people if p.scenario is Scenario.NORMAL][:2]
    platform.spend(person.member_id, Decimal(1))
    platform.spend(other.member_id, Decimal(1))
    theirs = (await platform.transactions(other.member_id, limit=1)).next_cursor
    assert theirs is not None
    for bad in (theirs, "!!", "e30", "WzEsMl0", "eyJtIjogW10sICJiZWZvcmUiOiBbXX0"):
        with pytest.raises(ValueError, match="cursor"):
            await platform.transactions(person.member_id, cursor=bad)


# --- lock -------------------------------------------------------------------------------------------


async def test_lock_without_an_end_says_thirty_minutes_ahead(
    data: SandboxData, platform: SandboxPlatform, clock: Clock
) -> None:
    person = one(data, Scenario.NORMAL)
    platform.lock(person.member_id)
    for _ in range(2):
        with code(ErrorCode.ACCOUNT_LOCKED) as info:
            await platform.balance(person.member_id)
        assert info.value.until == lock_ends(clock.now)
        clock.advance(hours=3)
    with code(ErrorCode.ACCOUNT_LOCKED):
        await platform.lookup(MemberLookup(name=person.name, id_number=person.id_number))
    with code(ErrorCode.ACCOUNT_LOCKED):
        await platform.transactions(person.member_id)
    # A wrong name still does not learn about the lock.
    with code(ErrorCode.IDENTITY_MISMATCH):
        await platform.lookup(MemberLookup(name="王五", id_number=person.id_number))
    platform.unlock(person.member_id)
    assert (await platform.balance(person.member_id)).sync_status is SyncStatus.OK


async def test_lock_until_a_time_ends_by_itself(
    data: SandboxData, platform: SandboxPlatform, clock: Clock
) -> None:
    person = one(data, Scenario.NORMAL)
    until = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # 11:00 in China
    platform.lock(person.member_id, until)
    with code(ErrorCode.ACCOUNT_LOCKED) as info:
        await platform.balance(person.member_id)
    assert info.value.until == until
    assert info.value.until is not None
    assert info.value.until.utcoffset() == timedelta(hours=8)
    clock.now = until
    await platform.balance(person.member_id)


def test_lock_until_must_be_aware_and_ahead(data: SandboxData, platform: SandboxPlatform) -> None:
    person = one(data, Scenario.NORMAL)
    with pytest.raises(ValueError, match="timezone-aware"):
        platform.lock(person.member_id, datetime(2026, 11, 24, 12, 0))
    with pytest.raises(ValueError, match="in the future"):
        platform.lock(person.member_id, NOW)


async def test_unlock_frees_a_person_locked_in_the_data_file(
    data: SandboxData, platform: SandboxPlatform
) -> None:
    person = one(data, Scenario.LOCKED)
    with code(ErrorCode.ACCOUNT_LOCKED):
        await platform.balance(person.member_id)
    platform.unlock(person.member_id)
    member = await platform.lookup(MemberLookup(name=person.name, id_number=person.id_number))
    assert member.member_id == person.member_id


async def test_changes_are_allowed_while_locked(data: SandboxData, platform: SandboxPlatform) -> None:
    person = one(data, Scenario.LOCKED)
    before = platform.credit(person.member_id, Decimal(10))
    platform.unlock(person.member_id)
    assert (await platform.balance(person.member_id)).personal_account == before.personal_account


# --- sync delay -------------------------------------------------------------------------------------


async def test_a_sync_delay_hides_new_changes_until_it_has_passed(
    data: SandboxData, platform: SandboxPlatform, clock: Clock
) -> None:
    person = one(data, Scenario.NORMAL)
    before = await platform.balance(person.member_id)
    platform.set_sync_delay(person.member_id, 600)
    spent = platform.spend(person.member_id, Decimal(20))
    assert spent.sync_status is SyncStatus.OK  # the ledger's view: what the platform will show
    delayed = await platform.balance(person.member_id)
    assert delayed.sync_status is SyncStatus.DELAYED
    assert delayed.as_of == datetime(2026, 11, 24, 9, 57, tzinfo=CHINA_TZ)
    assert delayed.personal_account == before.personal_account
    assert all(tx.personal_amount != -20 for tx in (await platform.transactions(person.member_id)).items)

    clock.advance(seconds=600)
    caught_up = await platform.balance(person.member_id)
    assert caught_up.sync_status is SyncStatus.DELAYED
    assert caught_up.personal_account == spent.personal_account
    assert (await platform.transactions(person.member_id, limit=1)).items[0].personal_amount == -20

    platform.set_sync_delay(person.member_id, None)
    assert (await platform.balance(person.member_id)).sync_status is SyncStatus.OK


async def test_a_syncing_person_can_be_brought_in_sync(data: SandboxData, platform: SandboxPlatform) -> None:
    person = one(data, Scenario.SYNCING)
    assert (await platform.balance(person.member_id)).sync_status is SyncStatus.DELAYED
    platform.set_sync_delay(person.member_id, None)
    balance = await platform.balance(person.member_id)
    assert balance.sync_status is SyncStatus.OK
    assert balance.personal_account == person.personal_balance


@pytest.mark.parametrize("seconds", [0, -1, True, 1.5])
def test_a_sync_delay_is_whole_positive_seconds(
    seconds: Any, data: SandboxData, platform: SandboxPlatform
) -> None:
    with pytest.raises(ValueError, match="whole number of seconds"):
        platform.set_sync_delay(one(data, Scenario.NORMAL).member_id, seconds)


# --- maintenance ------------------------------------------------------------------------------------


async def test_maintenance_on_and_off(data: SandboxData, platform: SandboxPlatform) -> None:
    person = one(data, Scenario.NORMAL)
    down = one(data, Scenario.MAINTENANCE)
    assert platform.regions_in_maintenance() == [down.region]

    platform.set_maintenance(person.region, True, retry_after_seconds=90)
    assert platform.regions_in_maintenance() == sorted([down.region, person.region])
    with code(ErrorCode.MAINTENANCE) as info:
        await platform.balance(person.member_id)
    assert info.value.retry_after == 90.0
    with code(ErrorCode.MAINTENANCE):
        await platform.lookup(MemberLookup(name=person.name, id_number=person.id_number))

    platform.set_maintenance(person.region, False)
    platform.set_maintenance(down.region, False)
    assert platform.regions_in_maintenance() == []
    await platform.balance(person.member_id)
    member = await platform.lookup(MemberLookup(name=down.name, id_number=down.id_number))
    assert member.member_id == down.member_id
    platform.set_maintenance(down.region, False)  # already off: nothing to do


def test_maintenance_needs_a_known_region_and_a_positive_wait(platform: SandboxPlatform) -> None:
    with pytest.raises(ValueError, match="no region '999999'"):
        platform.set_maintenance("999999", True)
    with pytest.raises(ValueError, match="retry_after_seconds"):
        platform.set_maintenance("110101", True, retry_after_seconds=0)


def test_each_platform_has_its_own_changes(data: SandboxData) -> None:
    person = one(data, Scenario.NORMAL)
    first, second = SandboxPlatform(data, clock=Clock()), SandboxPlatform(data, clock=Clock())
    spent = first.spend(person.member_id, Decimal(5)).personal_account
    credited = second.credit(person.member_id, Decimal(5)).personal_account
    assert spent is not None
    assert credited == spent + 10

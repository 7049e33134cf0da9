"""Several platforms, /history, spending questions, /chart and the balance cache, through the runtime
(each sandbox platform is reached over HTTP in-process, through the same client as a remote one)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from conftest import START, Harness, HarnessFactory, person

from dialogs.models import UserKey
from dialogs.spending import month_start

TWO_PLATFORMS = {
    "platforms": [
        {"name": "beijing", "label": "北京医保", "regions": ["11"]},
        {"name": "shanghai", "label": "上海医保", "regions": ["31"]},
    ]
}


async def test_bind_asks_which_platform_proposing_the_ids_region_first(make_harness: HarnessFactory) -> None:
    harness = await make_harness(insurance=TWO_PLATFORMS)
    who = person("low_balance")  # 王芳, a Shanghai ID number
    asked = await harness.start_bind(who)
    assert "Step 3 of 4: which insurance platform" in asked
    assert harness.last[0].sensitive_input  # it answers the ID-number message
    buttons = harness.last[0].buttons
    assert [b.payload for b in buttons] == ["/platform shanghai", "/platform beijing"]
    assert "matches your ID number" in buttons[0].label
    assert "matches" not in buttons[1].label
    again = await harness.say("the moon")
    assert '"the moon" is not one of the choices' in again
    assert "Reply with a number from 1 to 2" in again  # asked again, saying how to answer
    assert "middle of binding" in await harness.say("/balance")
    assert "Step 4 of 4" in await harness.say("/platform beijing")  # the second choice
    await harness.say(harness.last_code())
    state = await harness.runtime.store.peek(UserKey("console:alice"))
    assert state.profile.binding is not None
    assert state.profile.binding.platform == "beijing"
    assert "Personal account" in await harness.say("/balance")


async def test_a_platform_may_be_chosen_by_label_or_number(make_harness: HarnessFactory) -> None:
    harness = await make_harness(insurance=TWO_PLATFORMS)
    await harness.start_bind(person("normal"))  # Beijing: beijing is proposed first
    assert "Step 4 of 4" in await harness.say("北京医保")
    await harness.say("/cancel")
    harness.clock.advance(60)
    await harness.start_bind(person("normal"))
    assert "Step 4 of 4" in await harness.say("2")


async def test_not_found_on_the_chosen_platform_goes_back_to_the_id_step(
    make_harness: HarnessFactory,
) -> None:
    from stdnum.cn import ric

    harness = await make_harness(insurance=TWO_PLATFORMS)
    unknown = "31010119900307123"
    unknown += ric.calc_check_digit(unknown + "0")
    await harness.say("/bind")
    await harness.say("王芳")
    await harness.say(unknown)
    assert "could not find insurance records" in await harness.say("/platform shanghai")
    assert "Step 3 of 4: which insurance platform" in await harness.say(person("low_balance").id_number)


async def test_history_pages_and_counts(harness: Harness) -> None:
    await harness.bind(person("normal"))
    first = await harness.say("/history")
    lines = first.splitlines()
    assert lines[0] == "Your latest 10 transactions:"
    assert len(lines) == 11
    assert [b.payload for b in harness.last[0].buttons] == ["/history more"]
    more = await harness.say("/history more")
    assert more.splitlines()[0] == "More transactions:"
    assert not set(more.splitlines()[1:]) & set(lines[1:])
    thirty = await harness.say("/history 30")
    assert len(thirty.splitlines()) == 31
    assert thirty.splitlines()[1:11] == lines[1:]  # newest first, the same ones
    for bad in ("/history 0", "/history abc", "/history 999"):
        assert "from 1 to 50, e.g. /history 30" in await harness.say(bad)


async def test_history_lines_say_who_paid(harness: Harness) -> None:
    await harness.bind(person("normal"))
    text = await harness.say("/history 50")
    assert "to the personal account" in text  # the monthly credit
    assert "paid by personal account ¥" in text
    assert "pooled fund ¥" in text


async def sandbox_totals(
    harness: Harness, who_scenario: str, start_month_back: int, months: int
) -> tuple[Decimal, Decimal]:
    """What the sandbox itself says was spent (personal, pooled) in a span of whole months."""
    sandbox = harness.runtime.sandboxes["sandbox"]
    who = person(who_scenario)
    today = START.date()
    first = month_start(today, start_month_back)
    after = month_start(today, start_month_back - months)
    page = await sandbox.transactions(who.member_id, limit=100)
    items = list(page.items)
    while page.next_cursor:
        page = await sandbox.transactions(who.member_id, limit=100, cursor=page.next_cursor)
        items += page.items
    spent = [
        t
        for t in items
        if t.category.value != "credit" and first <= t.at.astimezone(START.tzinfo).date() < after
    ]
    return -sum((t.personal_amount for t in spent), Decimal(0)), -sum(
        (t.pooled_amount for t in spent), Decimal(0)
    )


async def test_spending_questions_add_up(harness: Harness) -> None:
    await harness.bind(person("normal"))
    personal, pooled = await sandbox_totals(harness, "normal", 1, 1)
    last_month = await harness.say("how much did I spend last month?")
    assert last_month.startswith("Last month (2026-10): you spent")
    assert f"¥{personal + pooled:,.2f}" in last_month
    assert f"{f'¥{personal:,.2f}'} from your personal account" in last_month
    zh = await harness.say("上个月花了多少", locale="zh")
    assert zh.startswith("上个月（2026-10）：共花费")
    assert f"¥{personal + pooled:,.2f}" in zh


async def test_pooled_fund_this_year_matches_the_balance(harness: Harness) -> None:
    await harness.bind(person("normal"))
    balance = await harness.runtime.sandboxes["sandbox"].balance(person("normal").member_id)
    answer = await harness.say("今年统筹用了多少", locale="zh")
    assert answer.startswith("今年（2026 年）：统筹基金为你支付了")
    assert f"¥{balance.pooled_used:,.2f}" in answer


async def test_chart_is_a_png(harness: Harness) -> None:
    await harness.bind(person("normal"))
    caption = await harness.say("/chart")
    assert "last 12 months" in caption
    attachment = harness.last[0].attachment
    assert attachment is not None
    assert attachment.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert attachment.filename == "yibao-chart-20261124-100000.png"  # one per request


async def test_chart_for_a_resident_without_personal_account(harness: Harness) -> None:
    await harness.bind(person("resident"))
    await harness.say("/chart")
    assert harness.last[0].attachment is not None


async def test_a_repeated_balance_comes_from_the_cache_with_its_time(harness: Harness) -> None:
    who = person("normal")
    await harness.bind(who)
    first = await harness.say("/balance")
    harness.runtime.sandboxes["sandbox"].spend(who.member_id, Decimal("10.00"))
    harness.clock.advance(30)
    assert await harness.say("/balance") == first  # cached: the platform was not asked
    harness.clock.advance(31)
    fresh = await harness.say("/balance")
    assert fresh != first
    assert "as of 2026-11-24 10:01" in fresh


async def test_no_cache_when_disabled(make_harness: HarnessFactory) -> None:
    harness = await make_harness(insurance={"balance_cache_seconds": 0})
    who = person("normal")
    await harness.bind(who)
    first = await harness.say("/balance")
    harness.runtime.sandboxes["sandbox"].spend(who.member_id, Decimal("10.00"))
    assert await harness.say("/balance") != first


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("lock", "locked after too many wrong password attempts"),
        ("maintenance", "under maintenance"),
    ],
)
async def test_platform_state_changes_reach_the_user_and_never_a_wrong_figure(
    make_harness: HarnessFactory, change: str, expected: str
) -> None:
    harness = await make_harness(insurance={"balance_cache_seconds": 0})
    who = person("normal")
    await harness.bind(who)
    sandbox = harness.runtime.sandboxes["sandbox"]
    if change == "lock":
        sandbox.lock(who.member_id)
    else:
        sandbox.set_maintenance(who.region, True, retry_after_seconds=600)
    for question in ("/balance", "/history", "上个月花了多少", "/chart"):
        answer = await harness.say(question)
        assert expected in answer
        assert "¥" not in answer


async def test_sync_delay_shows_the_last_known_figures_with_their_time(make_harness: HarnessFactory) -> None:
    harness = await make_harness(insurance={"balance_cache_seconds": 0})
    who = person("normal")
    await harness.bind(who)
    harness.runtime.sandboxes["sandbox"].set_sync_delay(who.member_id, 7200)
    answer = await harness.say("/balance")
    assert answer.startswith("⚠️ The insurance platform is still syncing")
    assert "from 2026-11-24 08:00" in answer

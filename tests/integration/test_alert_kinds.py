"""The other alert kinds (issue 17): the monthly credit arrived (``/alert credit on``) and a family
member spent from the personal account (``/alert family on``), through the real runtime: the chat
turns them on, the in-process sandbox is moved by hand (a credit, pharmacy payments), the checks and
the outbox run on the test run's Redis, and a recording chat platform receives the alerts."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from conftest import SHANGHAI, HarnessFactory, person
from test_alerts import ALERTS, ALICE, Alerts
from topologies import TOPOLOGIES

from bot.storage.keys import UserKind

pytestmark = TOPOLOGIES


@pytest.fixture
async def alerts(make_harness: HarnessFactory) -> Alerts:
    return Alerts(await make_harness(alerts=ALERTS))


async def scheduled(alerts: Alerts) -> bool:
    keys = alerts.h.runtime.keys
    return await alerts.h.redis.zscore(keys.schedule_of(ALICE), ALICE) is not None


async def test_the_monthly_credit_is_told_once_and_not_before_it_arrives(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    assert "off (/alert credit on)" in await alerts.h.say("/alert")
    assert "monthly credit" in await alerts.h.say("/alert credit on")
    assert await scheduled(alerts)
    assert "on (/alert credit off)" in await alerts.h.say("/alert")
    assert "already" in await alerts.h.say("/alert credit on")
    # The credits made before it was turned on are the starting point, not news.
    assert await alerts.round() == []

    alerts.sandbox.credit(who.member_id, Decimal("312.40"))
    [text] = await alerts.round()
    assert "Your monthly credit arrived: ¥312.40" in text
    assert "/alert credit off" in text
    buttons = alerts.outlet.delivered[-1][1][0].buttons
    assert [b.payload for b in buttons] == ["/balance", "/alert credit off"]
    assert await alerts.round() == []  # told once

    # Two credits between two checks: the newest is told, with the total.
    alerts.sandbox.credit(who.member_id, Decimal(100))
    alerts.h.clock.advance(60)
    alerts.sandbox.credit(who.member_id, Decimal(50))
    [text] = await alerts.round()
    assert "¥50.00" in text
    assert "¥150.00 in all" in text

    assert "Alert turned off" in await alerts.h.say("/alert credit off")
    assert not await scheduled(alerts)  # nothing else was watched
    alerts.sandbox.credit(who.member_id, Decimal(10))
    assert await alerts.round() == []


async def test_the_credit_alert_speaks_chinese(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    assert "到账时" in await alerts.h.say("/alert 划入 开启", locale="zh-hans")
    await alerts.round()
    alerts.sandbox.credit(who.member_id, Decimal(200))
    [text] = await alerts.round()
    assert text.startswith("💰 本月划入已到账")
    assert "¥200.00" in text


async def test_a_family_members_spending_is_told_with_what_they_spent(alerts: Alerts) -> None:
    who = person("normal")  # one relative shares the account
    await alerts.h.bind(who)
    before = (await alerts.sandbox.family(who.member_id)).members
    assert len(before) == 1
    assert "family member" in await alerts.h.say("/alert family on")
    assert await alerts.round() == []  # this year's spending so far is the starting point

    # Of the year's pharmacy payments every third is the relative's: three make sure one is.
    for amount in ("11.10", "22.20", "33.30"):
        alerts.sandbox.spend(who.member_id, Decimal(amount))
        alerts.h.clock.advance(1)
    after = (await alerts.sandbox.family(who.member_id)).members
    spent = after[0].spent_this_year - before[0].spent_this_year
    assert spent > 0
    [text] = await alerts.round()
    assert "Your family used your personal account" in text
    assert f"{after[0].masked_name} (spouse) spent ¥{spent:,.2f}" in text
    assert f"¥{after[0].spent_this_year:,.2f} this year" in text
    assert await alerts.round() == []

    # What the profile keeps of it: amounts by a digest, never the relative's name.
    profile = await alerts.h.redis.hgetall(alerts.h.runtime.keys.user(ALICE, UserKind.PROFILE))
    assert b"family_seen" in profile
    assert after[0].masked_name.encode() not in b"".join(profile.values())
    mydata = await alerts.h.say("/mydata")
    assert "alert when a family member spends from your account" in mydata


async def test_alerts_are_offered_only_where_the_platform_provides_them(make_harness: HarnessFactory) -> None:
    basic = Alerts(
        await make_harness(
            alerts=ALERTS,
            insurance={"platforms": [{"name": "sandbox", "sandbox_profile": "basic"}]},
        )
    )
    await basic.h.bind(person("normal"))
    assert "does not provide the data" in await basic.h.say("/alert credit on")
    assert "does not provide the data" in await basic.h.say("/alert family on")
    assert "/alert credit on" not in await basic.h.say("/help")
    assert "credit" not in await basic.h.say("/alert")
    assert not await scheduled(basic)


async def test_a_resident_without_a_personal_account_gets_neither(alerts: Alerts) -> None:
    await alerts.h.bind(person("resident"))
    assert "does not provide the data" in await alerts.h.say("/alert credit on")
    help_text = await alerts.h.say("/help")
    assert "/alert credit on" not in help_text


async def test_the_threshold_and_the_credit_alert_live_side_by_side(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    await alerts.h.say("/alert credit on")
    assert "/alert credit on" in await alerts.h.say("/help")
    await alerts.h.say("/alert 10")
    await alerts.round()
    assert "Alert turned off" in await alerts.h.say("/alert off")
    assert await scheduled(alerts)  # the credit alert is still on
    alerts.sandbox.credit(who.member_id, Decimal(80))
    [text] = await alerts.round()
    assert "monthly credit arrived" in text


async def test_a_credit_alert_turned_off_before_it_went_is_not_sent(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    await alerts.h.say("/alert credit on")
    await alerts.round()
    alerts.sandbox.credit(who.member_id, Decimal(90))
    report = await alerts.check()
    assert report.notices == 1
    await alerts.h.say("/alert credit off")
    sent = await alerts.send()
    assert sent.dropped == 1
    assert sent.sent == 0
    assert alerts.outlet.delivered == []


async def test_a_credit_found_in_quiet_hours_is_told_in_the_morning(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    await alerts.h.say("/alert credit on")
    await alerts.round()
    alerts.h.clock.current = datetime(2026, 11, 24, 23, 30, tzinfo=SHANGHAI)
    alerts.sandbox.credit(who.member_id, Decimal(70))
    await alerts.check()
    assert (await alerts.send()).deferred == 1
    alerts.h.clock.current = datetime(2026, 11, 25, 8, 0, tzinfo=SHANGHAI)
    await alerts.send()
    [text] = alerts.outlet.texts()
    assert "Your monthly credit arrived: ¥70.00" in text


async def test_a_repeated_check_tells_the_credit_once(alerts: Alerts) -> None:
    """A worker that queued the credit alert and died before writing its mark: the next check finds
    the same credit, queues the same token again, and the user still sees one alert."""
    who = person("normal")
    await alerts.h.bind(who)
    await alerts.h.say("/alert credit on")
    await alerts.round()
    profile = alerts.h.runtime.keys.user(ALICE, UserKind.PROFILE)
    baseline = await alerts.h.redis.hget(profile, "credit")
    alerts.sandbox.credit(who.member_id, Decimal(60))
    await alerts.check()
    await alerts.h.redis.hset(profile, "credit", baseline)  # the mark was never written
    await alerts.h.runtime.redis.zadd(alerts.h.runtime.keys.schedule_of(ALICE), {ALICE: 0})
    await alerts.check()
    await alerts.send()
    assert len(alerts.outlet.texts()) == 1


async def test_unbinding_erases_the_kinds(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    await alerts.h.say("/alert credit on")
    await alerts.h.say("/alert family on")
    await alerts.round()
    await alerts.h.say("/unbind")
    assert "erased" in (await alerts.h.say("/unbind yes")).lower()
    profile = alerts.h.runtime.keys.user(ALICE, UserKind.PROFILE)
    assert not await alerts.h.redis.exists(profile)
    assert not await scheduled(alerts)


async def test_alert_off_with_only_the_other_kinds_on_turns_them_off(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    await alerts.h.say("/alert credit on")
    await alerts.h.say("/alert family on")
    assert "Alert turned off" in await alerts.h.say("/alert off")
    assert "off (/alert credit on)" in await alerts.h.say("/alert")
    assert not await scheduled(alerts)

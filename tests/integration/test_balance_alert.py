"""/balance, free-text balance questions and /alert, through the runtime."""

from __future__ import annotations

import pytest
from conftest import Harness, person
from pydantic import SecretStr

from bot.storage.keys import UserKind
from dialogs.models import Binding, MemberId, Outcome, PlatformName, UserKey, UserState


async def bind_directly(harness: Harness, scenario: str, user: str = "console:alice") -> None:
    """A binding for a member who could not bind through the flow (locked, in maintenance)."""
    who = person(scenario)

    async def step(_: UserState) -> Outcome:
        binding = Binding(
            member_id=MemberId(who.member_id),
            platform=PlatformName("sandbox"),
            id_number=SecretStr(who.id_number),
            phone=SecretStr(who.phone),
            bound_at=harness.clock.now(),
        )
        return Outcome(replies=(), session=UserState().session, set_binding=binding)

    await harness.runtime.store.update(UserKey(user), step)


async def test_balance_needs_a_binding(harness: Harness) -> None:
    assert "haven't bound" in await harness.say("/balance")
    assert "haven't bound" in await harness.say("还剩多少钱")


async def test_balance_shows_both_accounts_and_the_time(harness: Harness) -> None:
    await harness.bind(person("normal"))
    reply = await harness.say("/balance")
    assert "as of 2026-11-24 10:00" in reply
    assert "Personal account (个人账户): ¥" in reply
    assert "Pooled fund (统筹基金) 2026: used ¥" in reply
    assert "remaining ¥" in reply
    for question in ("还剩多少钱", "医保卡里有多少", "余额", "balance", "how much is left"):
        assert await harness.say(question) == reply


async def test_balance_in_chinese(harness: Harness) -> None:
    await harness.bind(person("normal"))
    reply = await harness.say("我的医保还剩多少?", locale="zh-hans")
    assert "数据截至 2026-11-24 10:00" in reply
    assert "个人账户：¥" in reply
    assert "统筹基金（2026 年度）" in reply


async def test_syncing_balance_is_labelled_with_its_time(harness: Harness) -> None:
    await harness.bind(person("syncing"))
    reply = await harness.say("/balance")
    assert reply.startswith("⚠️ The insurance platform is still syncing")
    assert "from 2026-11-22 22:00" in reply  # 36 hours before 10:00


async def test_resident_has_no_personal_account(harness: Harness) -> None:
    await harness.bind(person("resident"))
    assert "none — residents' insurance" in await harness.say("/balance")


@pytest.mark.parametrize(
    ("scenario", "expected"), [("locked", "locked after too many"), ("maintenance", "under maintenance")]
)
async def test_platform_problems_never_show_a_figure(harness: Harness, scenario: str, expected: str) -> None:
    await bind_directly(harness, scenario)
    reply = await harness.say("/balance")
    assert expected in reply
    assert "¥" not in reply


async def test_alert_needs_a_binding(harness: Harness) -> None:
    assert "Bind your insurance account first" in await harness.say("/alert 100")
    assert "Bind your insurance account first" in await harness.say("低于100提醒我")


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("/alert 100", "¥100.00"),
        ("/alert 100元", "¥100.00"),
        ("/alert ¥100", "¥100.00"),
        ("/alert 100.5", "¥100.50"),
        ("低于100提醒我", "¥100.00"),
        ("余额低于 88.8 元时提醒我", "¥88.80"),
        ("alert me below 100", "¥100.00"),
        ("/alert 1,200", "¥1,200.00"),
    ],
)
async def test_alert_forms(harness: Harness, text: str, amount: str) -> None:
    await harness.bind(person("normal"))
    assert f"drops below {amount}" in await harness.say(text)
    assert f"below {amount}" in await harness.say("/alert")
    state = await harness.runtime.store.peek(UserKey("console:alice"))
    assert state.profile.threshold is not None
    assert f"¥{state.profile.threshold:,.2f}" == amount


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/alert -5", "can't be negative. Try e.g. /alert 100"),
        ("/alert abc", "is not an amount I can read. Write it in digits, e.g. /alert 100"),
        ("/alert 1e309", "Write it in digits, e.g. /alert 100"),
        ("/alert 0", "more than zero, e.g. /alert 100"),
        ("/alert 100.555", "two decimals), e.g. /alert 100.50"),
        (
            "/alert 999999",
            "more than ¥50,000.00, higher than a personal account balance gets. Try e.g. /alert 100",
        ),
        ("低于abc提醒我", "Write it in digits"),
    ],
)
async def test_bad_alert_amounts_are_refused_with_an_example(
    harness: Harness, text: str, expected: str
) -> None:
    await harness.bind(person("normal"))
    await harness.say("/alert 100")
    assert expected in await harness.say(text)
    assert "below ¥100.00" in await harness.say("/alert")  # unchanged


async def test_alert_show_then_reply_with_an_amount_then_off(harness: Harness) -> None:
    await harness.bind(person("normal"))
    assert "No alert is set" in await harness.say("/alert")
    assert "drops below ¥66.00" in await harness.say("66元")
    assert "Alert turned off" in await harness.say("/alert off")
    assert "No alert was set" in await harness.say("/alert off")
    assert "No alert is set" in await harness.say("/alert")
    assert "haven't bound" not in await harness.say("余额")  # a question still works in that state


async def test_unknown_text_and_commands_get_a_pointer(harness: Harness) -> None:
    assert "/help" in await harness.say("今天天气怎么样")
    assert "don't know the command /frobnicate" in await harness.say("/frobnicate")
    reply = await harness.say("110101198312116939")
    assert "looks like an ID number" in reply
    assert harness.last[0].sensitive_input


async def test_start_help_and_language(harness: Harness) -> None:
    start = await harness.say("/start")
    assert "/bind" in start
    assert "encrypted" in start
    assert "30 minutes" in start
    assert "not bound yet" in start
    assert "已切换为中文" in await harness.say("/lang zh")
    assert "命令" in await harness.say("/help", locale="en")  # the chosen language beats the platform's
    assert "Language set to English" in await harness.say("/lang en")
    assert "Send /lang zh" in await harness.say("/lang fr")
    await harness.bind(person("normal"))
    assert "bound to ID 110***********6939 since 2026-11-24" in await harness.say("/start")


async def test_a_failing_step_answers_with_an_apology(harness: Harness) -> None:
    await harness.bind(person("normal"))
    # The operator's key changed: the binding cannot be read. The user hears an apology, not a trace.
    profile = harness.runtime.keys.user(UserKey("console:alice"), UserKind.PROFILE)
    await harness.redis.hset(profile, "id", b"\x01" + bytes(40))  # sealed with some other key
    assert "Personal account" in await harness.say("/balance")  # it needs no ID number: still fine
    assert "something went wrong" in await harness.say("/start")  # it shows the ID: an apology

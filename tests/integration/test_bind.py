"""/bind end to end through the runtime: name, ID number, platform lookup, SMS code, binding."""

from __future__ import annotations

import pytest
from conftest import Harness, HarnessFactory, person

from dialogs.models import UserKey


async def test_bind_happy_path_stores_binding_encrypted(harness: Harness) -> None:
    who = person("normal")
    assert "Step 1 of 3" in await harness.say("/bind")
    assert "Step 2 of 3" in await harness.say(who.name)
    sent = await harness.say(who.id_number)
    masked = f"{who.phone[:3]}****{who.phone[-4:]}"
    assert masked in sent
    assert "5 minutes" in sent
    assert harness.last[0].sensitive_input  # the platform should delete the ID-number message
    assert [b.payload for b in harness.last[0].buttons] == ["/resend"]
    sms = harness.sms()
    assert len(sms) == 1
    assert sms[0]["to"] == who.phone
    done = await harness.say(harness.last_code())
    assert f"ID {who.id_number[:3]}***********{who.id_number[-4:]}" in done
    state = await harness.runtime.store.peek(UserKey("console:alice"))
    assert state.profile.binding is not None
    assert state.profile.binding.id_number.get_secret_value() == who.id_number
    assert state.profile.binding.phone.get_secret_value() == who.phone
    everything = repr(await harness.dump())
    assert who.id_number not in everything
    assert who.phone not in everything
    assert who.name not in everything


async def test_wrong_codes_void_the_code_then_resend_waits_then_binds(harness: Harness) -> None:
    """The issue's scripted check, through the runtime: 5 wrong codes, early resend, resend, right code."""
    who = person("normal")
    await harness.start_bind(who)
    first = harness.last_code()
    wrong = "000000" if first != "000000" else "111111"
    for left in (4, 3, 2, 1):
        reply = await harness.say(wrong)
        assert f"{left} tr" in reply
    assert "no longer works" in await harness.say(wrong)
    assert "no active code" in await harness.say(first)  # even the right code is void now
    harness.clock.advance(30)
    early = await harness.say("/resend")
    assert "Please wait" in early
    assert "(in 30 s)" in early
    assert len(harness.sms()) == 1
    harness.clock.advance(30)
    assert "Step 3 of 3" in await harness.say("/resend")
    assert len(harness.sms()) == 2
    assert "Your account is bound" in await harness.say(harness.last_code())


async def test_a_resend_replaces_the_old_code_and_a_code_works_once(harness: Harness) -> None:
    who = person("normal")
    await harness.start_bind(who)
    old = harness.last_code()
    harness.clock.advance(60)
    await harness.say("/resend")
    new = harness.last_code()
    if old != new:
        assert "not right" in await harness.say(old)
    assert "bound" in await harness.say(new)
    check = await harness.runtime.otp.verify(UserKey("console:alice"), new)
    assert check.verdict.value == "no_code"


async def test_code_expires_after_five_minutes(harness: Harness) -> None:
    await harness.start_bind(person("normal"))
    code = harness.last_code()
    harness.clock.advance(300)
    assert "expired" in await harness.say(code)
    harness.clock.advance(60)
    await harness.say("/resend")
    assert "bound" in await harness.say(harness.last_code())


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("11010519831211693", "has 18 characters; you sent 17"),
        ("1101051983121169391", "you sent 19"),
        ("11010519831211693Y", "17 digits followed by a digit or X"),
        ("110105198313116936", "birth date"),
        ("110101198312116938", "last character of that ID number does not match"),
        ("999999198312116930", "not a known region code"),
    ],
)
async def test_each_bad_id_number_gets_its_own_answer_and_a_reask(
    harness: Harness, typed: str, expected: str
) -> None:
    from stdnum.cn import ric

    if expected.startswith("not a known region"):
        typed = typed[:17] + ric.calc_check_digit(typed)
    if expected == "birth date":
        typed = typed[:17] + ric.calc_check_digit(typed)
    who = person("normal")
    await harness.say("/bind")
    await harness.say(who.name)
    reply = await harness.say(typed)
    assert expected in reply, reply
    assert harness.last[0].sensitive_input
    assert "Step 3 of 3" in await harness.say(who.id_number)  # still in the flow: no restart


async def test_bad_names_are_reasked(harness: Harness) -> None:
    await harness.say("/bind")
    assert "too short" in await harness.say("张")
    assert "Chinese characters" in await harness.say("张伟123")
    looks = await harness.say(person("normal").id_number)
    assert "looks like an ID number" in looks
    assert harness.last[0].sensitive_input
    assert "Step 2 of 3" in await harness.say("阿依古丽•买买提")


async def test_name_mismatch_asks_for_the_name_again(harness: Harness) -> None:
    who = person("normal")
    await harness.say("/bind")
    await harness.say("李四")
    reply = await harness.say(who.id_number)
    assert "name does not match" in reply
    assert "Step 2 of 3" in await harness.say(who.name)
    assert "Step 3 of 3" in await harness.say(who.id_number)


async def test_unknown_member_stays_on_the_id_step(harness: Harness) -> None:
    from stdnum.cn import ric

    unknown = "11010119900307123"
    unknown += ric.calc_check_digit(unknown + "0")
    await harness.say("/bind")
    await harness.say("张伟")
    reply = await harness.say(unknown)
    assert "could not find insurance records" in reply
    assert "12393" in reply
    assert "Step 3 of 3" in await harness.say(person("normal").id_number)


async def test_locked_account_says_when_and_how(harness: Harness) -> None:
    reply = await harness.start_bind(person("locked"))
    assert "locked after too many wrong password attempts" in reply
    assert "unlocks at 10:30" in reply
    assert "12393" in reply
    assert "nothing to cancel" in await harness.say("/cancel")  # the flow ended


async def test_platform_maintenance_is_said_and_no_code_sent(harness: Harness) -> None:
    reply = await harness.start_bind(person("maintenance"))
    assert "under maintenance" in reply
    assert "after 10:30" in reply
    assert harness.sms() == []


async def test_repeated_failures_lock_binding_for_fifteen_minutes(harness: Harness) -> None:
    who = person("normal")
    await harness.say("/bind")
    for _ in range(2):
        await harness.say("王五")
        assert "name does not match" in await harness.say(who.id_number)
    await harness.say("王五")
    locked = await harness.say(who.id_number)
    assert "binding is paused until 10:15" in locked
    assert "paused until 10:15" in await harness.say("/bind")
    harness.clock.advance(15 * 60)
    assert "Step 1 of 3" in await harness.say("/bind")


async def test_voided_codes_count_towards_the_lockout(make_harness: HarnessFactory) -> None:
    harness = await make_harness(otp={"lockout_after_failures": 2, "max_attempts": 1})
    await harness.start_bind(person("normal"))
    code = harness.last_code()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert "no longer works" in await harness.say(wrong)
    harness.clock.advance(60)
    await harness.say("/resend")
    code = harness.last_code()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert "binding is paused until 10:16" in await harness.say(wrong)


async def test_hourly_limit_per_user(harness: Harness) -> None:
    await harness.start_bind(person("normal"))
    for _ in range(4):
        harness.clock.advance(60)
        assert "Step 3 of 3" in await harness.say("/resend")
    harness.clock.advance(60)
    refused = await harness.say("/resend")
    assert "Too many codes" in refused
    assert "11:00" in refused
    assert len(harness.sms()) == 5


async def test_hourly_limit_per_phone_across_users(make_harness: HarnessFactory) -> None:
    harness = await make_harness(otp={"max_per_hour_per_phone": 2})
    who = person("normal")
    assert "Step 3 of 3" in await harness.start_bind(who, "console:a")
    assert "Step 3 of 3" in await harness.start_bind(who, "console:b")
    assert "Too many codes" in await harness.start_bind(who, "console:c")
    assert len(harness.sms()) == 2


async def test_sms_gateway_failure_is_said(make_harness: HarnessFactory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    blocked = tmp_path / "not-a-file"
    blocked.mkdir()
    harness = await make_harness(sms={"file_path": blocked})
    reply = await harness.start_bind(person("normal"))
    assert "SMS could not be sent" in reply


async def test_cancel_leaves_every_step_and_voids_the_code(harness: Harness) -> None:
    who = person("normal")
    for steps in ([], [who.name], [who.name, who.id_number]):
        await harness.say("/bind")
        for text in steps:
            await harness.say(text)
        assert "Cancelled" in await harness.say("/cancel")
        assert "nothing to cancel" in await harness.say("/cancel")
    check = await harness.runtime.otp.verify(UserKey("console:alice"), harness.last_code())
    assert check.verdict.value == "no_code"


async def test_other_commands_during_binding_are_held_off(harness: Harness) -> None:
    await harness.say("/bind")
    assert "middle of binding" in await harness.say("/balance")
    assert "Commands:" in await harness.say("/help")  # help does not throw the flow away
    assert "Step 2 of 3" in await harness.say("张伟")


async def test_already_bound(harness: Harness) -> None:
    await harness.bind(person("normal"))
    assert "already bound" in await harness.say("/bind")


async def test_binding_again_right_after_a_code_waits_at_the_code_step(harness: Harness) -> None:
    who = person("normal")
    await harness.start_bind(who)
    await harness.say("/cancel")
    again = await harness.start_bind(who)  # the same phone, 0 s after its last code
    assert "Please wait" in again
    assert "then send /resend" in again
    assert len(harness.sms()) == 1
    harness.clock.advance(60)
    assert "Step 3 of 3" in await harness.say("/resend")
    assert "Your account is bound" in await harness.say(harness.last_code())


async def test_the_resend_interval_is_per_phone(harness: Harness) -> None:
    await harness.start_bind(person("normal"))
    await harness.say("/cancel")
    assert "Step 3 of 3" in await harness.start_bind(person("low_balance"))  # another member's phone
    assert len(harness.sms()) == 2

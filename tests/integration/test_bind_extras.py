"""The bind on platforms that ask for more: the local card number (its format checked before any
lookup), and the platform's own face check — passed, failed, timed out, and followed in the
background so the user hears unprompted when it passes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Harness, HarnessFactory, person

from dialogs.models import Reply, State, UserKey


def one_platform(profile: str) -> dict[str, Any]:
    return {
        "platforms": [{"name": "sandbox", "label": "Sandbox", "sandbox_profile": profile}],
        "verification_wait_seconds": 60,
    }


@pytest.fixture
async def card(make_harness: HarnessFactory) -> Harness:
    return await make_harness(insurance=one_platform("local_card"))


@pytest.fixture
async def face(make_harness: HarnessFactory) -> Harness:
    return await make_harness(insurance=one_platform("face_check"))


async def test_card_number_checked_then_bound(card: Harness) -> None:
    who = person("normal")
    asked = await card.start_bind(who)
    assert "local social-security card number" in asked
    assert card.sms() == []  # nothing was looked up yet
    assert "6 to 20 letters and digits" in await card.say("SB-12")
    assert card.sms() == []  # a malformed card number costs no lookup
    sent = await card.say(who.local_card_number.lower())  # any case: it is upper-cased
    assert "I sent a 6-digit code" in sent
    assert "Your account is bound" in await card.say(card.last_code())


async def test_a_wrong_card_number_is_a_mismatch_and_counts(card: Harness) -> None:
    who = person("normal")
    await card.start_bind(who)
    wrong = "SB00000000" if who.local_card_number != "SB00000000" else "SB11111111"
    answer = await card.say(wrong)
    assert "name, ID number and card number do not match" in answer
    state = await card.runtime.store.peek(UserKey("console:alice"))
    assert state.session.state is State.BIND_NAME
    assert card.sms() == []


async def test_face_check_passed_when_the_user_writes_again(face: Harness) -> None:
    who = person("normal")
    asked = await face.start_bind(who)
    assert "https://sandbox.yibao.invalid/face-check/" in asked
    assert [b.payload for b in face.last[0].buttons] == ["/facecheck"]
    assert "has not passed yet" in await face.say("done?")
    assert "/balance has to wait" in await face.say("/balance")
    face.runtime.sandboxes["sandbox"].finish_face_check(who.member_id, True)
    sent = await face.say("/facecheck")
    assert "I sent a 6-digit code" in sent
    assert face.sms()[-1]["to"] == who.phone
    assert "Your account is bound" in await face.say(face.last_code())


async def test_face_check_failed_ends_the_bind(face: Harness) -> None:
    who = person("normal")
    await face.start_bind(who)
    face.runtime.sandboxes["sandbox"].finish_face_check(who.member_id, False)
    answer = await face.say("ok")
    assert "face check did not pass" in answer
    assert face.sms() == []
    state = await face.runtime.store.peek(UserKey("console:alice"))
    assert state.session.state is State.IDLE


async def test_face_check_timed_out(face: Harness) -> None:
    who = person("normal")
    await face.start_bind(who)
    face.clock.advance(61)  # verification_wait_seconds = 60
    assert "not completed in time" in await face.say("still there?")
    assert face.sms() == []
    assert "There is no face check waiting" in await face.say("/facecheck")


async def test_a_platform_ticket_that_expired(face: Harness) -> None:
    """The platform's own ticket (10 minutes) ends even if the bot would have waited longer."""
    face.runtime.conversation.settings = type(face.runtime.conversation.settings)(
        verification_wait_seconds=3600
    )
    who = person("normal")
    await face.start_bind(who)
    face.clock.advance(601)
    assert "not completed in time" in await face.say("hello")


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[UserKey, tuple[Reply, ...]]] = []
        self.arrived = asyncio.Event()

    async def deliver(self, user: UserKey, replies: tuple[Reply, ...]) -> None:
        self.got.append((user, replies))
        self.arrived.set()


async def test_the_background_poll_continues_the_bind_unprompted(face: Harness) -> None:
    """The guard is not held while waiting: another user is answered at once, and once the check
    passes the code step arrives through the outlet, as an alert would."""
    recorder = Recorder()
    face.runtime.followups.outlets["console"] = recorder
    who = person("normal")
    await face.start_bind(who)
    assert face.runtime.followups.running() == 1
    assert "Hi, I'm Yibao" in await face.say("/start", user="console:bob")  # not blocked
    assert "has not passed yet" in await face.say("hm")  # nor is the user themself
    face.runtime.sandboxes["sandbox"].finish_face_check(who.member_id, True)
    await asyncio.wait_for(recorder.arrived.wait(), timeout=10)
    user, replies = recorder.got[0]
    assert user == "console:alice"
    assert "I sent a 6-digit code" in replies[0].text
    state = await face.runtime.store.peek(UserKey("console:alice"))
    assert state.session.state is State.BIND_CODE
    assert "Your account is bound" in await face.say(face.last_code())


async def test_the_background_poll_stops_when_the_user_cancels(face: Harness) -> None:
    recorder = Recorder()
    face.runtime.followups.outlets["console"] = recorder
    await face.start_bind(person("normal"))
    await face.say("/cancel")
    for _ in range(60):  # the first poll, 2 s after the link, sees the user left
        if face.runtime.followups.running() == 0:
            break
        await asyncio.sleep(0.1)
    assert face.runtime.followups.running() == 0
    assert recorder.got == []

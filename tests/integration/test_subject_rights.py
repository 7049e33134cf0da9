"""Data-subject rights on a real runtime: ``/mydata`` lists what is kept, masked, the operator's
export is the same list, and the erasure reaches the shared alert keys and the limits keyed by the
user's numbers."""

from __future__ import annotations

from conftest import HarnessFactory, person

from bot.storage.keys import UserKind

ALICE = "console:alice"


async def test_mydata_export_and_erase(make_harness: HarnessFactory) -> None:
    h = await make_harness(alerts={"quiet_hours": "", "jitter_seconds": 0})
    rt = h.runtime
    assert rt.subject is not None
    who = person("normal", 3)

    assert "I keep nothing about you." in await h.say("/mydata")
    await h.say("/bind")
    await h.say(who.name)
    during = await h.say("/mydata")  # in the middle of a bind: the step goes on
    assert f"name being bound: {who.name[0]}*" in during
    assert who.name not in during
    assert "Step 2 of 3" in during
    await h.say(who.id_number)
    await h.say(h.last_code())
    await h.say("/alert 50000")

    worker = rt.alert_worker({})  # checks only: the alert waits in the outbox
    assert worker.checker is not None
    await worker.checker.move_due()
    await worker.checker.work(block_ms=50)

    shown = await h.say("/mydata")
    items = await rt.subject.held(ALICE)  # type: ignore[arg-type]
    listed = [line for line in shown.splitlines() if line.startswith("• ")]
    assert len(listed) == len(items)
    assert [i.what for i in items] == [
        "binding.platform",
        "binding.member_id",
        "binding.id_number",
        "binding.phone",
        "binding.bound_at",
        "binding.personal_account",
        "alert.threshold",
        "alert.state",
        "alert.language",
        "balance",
        "otp.sends",
        "schedule",
        "outbox",
    ]
    assert "alerts waiting to be sent: 1 (until it is sent or dropped)" in shown
    assert f"ID number (encrypted): {who.id_number[:3]}" in shown
    for secret in (who.id_number, who.phone, who.name, who.member_id):
        assert secret not in shown
    export = await rt.subject.export(ALICE)  # type: ignore[arg-type]
    assert [tuple(i.values()) for i in export["items"]] == [
        (i.what, i.value, i.kept, i.expires_in) for i in items
    ]

    gone = await rt.subject.erase(rt.store, ALICE)  # type: ignore[arg-type]
    assert gone >= 4  # profile, OTP record, balance, the waiting alert
    everything = repr(await h.dump()) + repr(await h.redis.xrange(rt.keys.outbox("console")))
    for secret in (ALICE, who.member_id, who.id_number, who.phone):
        assert secret not in everything
    assert await h.redis.exists(*rt.keys.all_user(ALICE)) == 0  # type: ignore[arg-type]
    assert await h.redis.keys(f"{rt.keys.prefix}:phone:*") == []
    assert await h.redis.exists(rt.keys.user(ALICE, UserKind.OTP)) == 0  # type: ignore[arg-type]
    assert "I keep nothing about you." in await h.say("/mydata")

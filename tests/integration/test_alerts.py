"""Low-balance alerts through the real runtime: thresholds set in the chat, the in-process sandbox
moved by hand, checks and the outbox on the test run's Redis, and a recording chat platform."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from conftest import SHANGHAI, Harness, HarnessFactory, person
from pydantic import SecretStr
from topologies import TOPOLOGIES

from bot.alerts.checks import Checker, CheckReport
from bot.alerts.outbox import Sender, SendReport
from bot.storage.keys import UserKind
from dialogs.models import Binding, MemberId, Outcome, PlatformName, Reply, Session, UserKey, UserState
from dialogs.ports import Undeliverable

pytestmark = TOPOLOGIES

ALICE = UserKey("console:alice")
ROUND = 3600
JITTER = 600
ALERTS: dict[str, Any] = {"every_seconds": ROUND, "jitter_seconds": JITTER, "quiet_hours": "22:00-08:00"}


class Recorder:
    """A chat platform that keeps what it was asked to deliver; ``refuse`` and ``fail`` script errors."""

    def __init__(self) -> None:
        self.delivered: list[tuple[UserKey, tuple[Reply, ...]]] = []
        self.refuse: set[UserKey] = set()
        self.fail = 0

    async def deliver(self, user: UserKey, replies: tuple[Reply, ...]) -> None:
        if user in self.refuse:
            raise Undeliverable("blocked")
        if self.fail:
            self.fail -= 1
            raise ConnectionError("network down")
        self.delivered.append((user, replies))

    def texts(self, user: UserKey = ALICE) -> list[str]:
        return [r[0].text for u, r in self.delivered if u == user]


class Alerts:
    def __init__(self, harness: Harness, outlet: Recorder | None = None) -> None:
        self.h = harness
        self.outlet = outlet or Recorder()
        self.worker = harness.runtime.alert_worker({"console": self.outlet})
        assert self.worker.checker is not None
        self.checker: Checker = self.worker.checker
        self.sender: Sender = self.worker.senders[0]
        self.sandbox = harness.runtime.sandboxes["sandbox"]

    async def check(self) -> CheckReport:
        """Every due user checked, to the end."""
        await self.checker.move_due()
        report = CheckReport()
        while True:
            part = await self.checker.work(block_ms=1)
            if not part.checked:
                return report
            report.add(part)

    async def send(self) -> SendReport:
        report = SendReport()
        while True:
            part = await self.sender.work(block_ms=1)
            for name in ("sent", "dropped", "deferred", "retry"):
                setattr(report, name, getattr(report, name) + getattr(part, name))
            if not (part.sent or part.dropped or part.deferred):
                return report

    async def round(self) -> list[str]:
        """A whole round: the clock moves on a round, then everything due is checked and sent."""
        before = len(self.outlet.delivered)
        await self.check()
        await self.send()
        self.h.clock.advance(ROUND + JITTER)  # past every user's offset in the next round
        return [r[0].text for _, r in self.outlet.delivered[before:]]


async def balance_of(alerts: Alerts, member_id: str) -> Decimal:
    b = await alerts.sandbox.balance(member_id)
    assert b.personal_account is not None
    return b.personal_account


@pytest.fixture
async def alerts(make_harness: HarnessFactory) -> Alerts:
    return Alerts(await make_harness(alerts=ALERTS))


async def test_one_alert_per_crossing_and_rearm_on_credit(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    start = await balance_of(alerts, who.member_id)
    threshold = (start - 50).quantize(Decimal("1"))
    assert "OK: I'll tell you" in await alerts.h.say(f"/alert {threshold}")
    assert await alerts.round() == []  # above: nothing

    alerts.sandbox.spend(who.member_id, Decimal(60), place="同仁堂药店")
    [text] = await alerts.round()
    now_balance = await balance_of(alerts, who.member_id)
    assert f"¥{now_balance:,.2f}" in text
    assert f"below your alert at ¥{threshold:,.2f}" in text
    assert "Latest payment: ¥60.00 at 同仁堂药店" in text
    assert "/alert off" in text

    alerts.sandbox.spend(who.member_id, Decimal(5))
    assert await alerts.round() == []  # still below: the same crossing, no second alert
    assert await alerts.round() == []

    alerts.sandbox.credit(who.member_id, Decimal(300))  # the monthly credit: re-armed
    assert await alerts.round() == []
    alerts.sandbox.spend(who.member_id, Decimal(320))
    assert len(await alerts.round()) == 1  # a new crossing, a new alert

    alerts.sandbox.credit(who.member_id, Decimal(400))
    assert await alerts.round() == []
    assert "Alert turned off" in await alerts.h.say("/alert off")
    alerts.sandbox.spend(who.member_id, Decimal(420))
    assert await alerts.round() == []
    assert await alerts.h.redis.zscore(alerts.h.runtime.keys.schedule_of(ALICE), ALICE) is None


async def test_alert_speaks_the_users_language(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    start = await balance_of(alerts, who.member_id)
    await alerts.h.say(f"/alert {(start - 1).quantize(Decimal('1'))}", locale="zh-hans")
    alerts.sandbox.spend(who.member_id, Decimal(30))
    [text] = await alerts.round()
    assert text.startswith("🔔 医保余额提醒")
    buttons = alerts.outlet.delivered[0][1][0].buttons
    assert [b.payload for b in buttons] == ["/balance", "/alert off"]


async def test_a_new_threshold_rearms(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    start = await balance_of(alerts, who.member_id)
    await alerts.h.say(f"/alert {(start + 10).quantize(Decimal('1'))}")
    assert len(await alerts.round()) == 1  # already below the new threshold: told at once
    assert await alerts.round() == []
    await alerts.h.say(f"/alert {(start + 20).quantize(Decimal('1'))}")
    assert len(await alerts.round()) == 1  # a changed threshold is a new watch


async def test_unsure_figures_never_alert_nor_rearm(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    start = await balance_of(alerts, who.member_id)
    await alerts.h.say(f"/alert {(start - 50).quantize(Decimal('1'))}")
    alerts.sandbox.spend(who.member_id, Decimal(60))

    alerts.sandbox.set_maintenance(who.member_id.split("-")[1], True)
    report = await alerts.check()
    assert (report.checked, report.unknown, report.alerts) == (1, 1, 0)
    alerts.sandbox.set_maintenance(who.member_id.split("-")[1], False)

    alerts.sandbox.set_sync_delay(who.member_id, 7200)  # the spend is not in the figures yet
    alerts.h.clock.advance(ROUND + JITTER)
    assert await alerts.round() == []
    alerts.sandbox.set_sync_delay(who.member_id, None)
    assert len(await alerts.round()) == 1  # recovered: the alert comes

    # Told; now a credit lifts it, but the platform is syncing: no re-arm from stale figures.
    alerts.sandbox.credit(who.member_id, Decimal(500))
    alerts.sandbox.set_sync_delay(who.member_id, 60)
    alerts.sandbox.spend(who.member_id, Decimal(1))
    report = await alerts.check()
    assert report.rearmed == 0
    profile = await alerts.h.redis.hget(alerts.h.runtime.keys.user(ALICE, UserKind.PROFILE), "alert")
    assert profile is not None
    assert profile.startswith(b"t:")


async def test_quiet_hours_hold_an_alert_until_morning(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    start = await balance_of(alerts, who.member_id)
    await alerts.h.say(f"/alert {(start - 50).quantize(Decimal('1'))}")
    assert await alerts.round() == []
    alerts.h.clock.current = datetime(2026, 11, 24, 23, 30, tzinfo=SHANGHAI)
    alerts.sandbox.spend(who.member_id, Decimal(60))
    await alerts.check()
    report = await alerts.send()
    assert report.deferred == 1
    assert alerts.outlet.delivered == []
    alerts.h.clock.current = datetime(2026, 11, 25, 7, 59, tzinfo=SHANGHAI)
    await alerts.send()
    assert alerts.outlet.delivered == []
    alerts.h.clock.current = datetime(2026, 11, 25, 8, 0, tzinfo=SHANGHAI)
    await alerts.send()
    assert len(alerts.outlet.texts()) == 1
    await alerts.send()
    assert len(alerts.outlet.texts()) == 1


async def test_a_repeated_check_is_sent_once(alerts: Alerts) -> None:
    """A worker that queued the alert and died before marking the user told: the next check queues
    the same crossing again, and the user still sees one alert."""
    who = person("normal")
    await alerts.h.bind(who)
    start = await balance_of(alerts, who.member_id)
    await alerts.h.say(f"/alert {(start - 50).quantize(Decimal('1'))}")
    alerts.sandbox.spend(who.member_id, Decimal(60))
    profile = alerts.h.runtime.keys.user(ALICE, UserKind.PROFILE)
    armed = await alerts.h.redis.hget(profile, "alert")
    await alerts.check()
    await alerts.h.redis.hset(profile, "alert", armed)  # as if the mark was never written
    await alerts.h.redis.zadd(alerts.h.runtime.keys.schedule_of(ALICE), {ALICE: 0})
    report = await alerts.check()
    assert report.alerts == 1
    assert (
        await alerts.h.redis.xlen(
            alerts.h.runtime.keys.outbox("console", alerts.h.runtime.keys.shard_of(ALICE))
        )
        == 2
    )
    sent = await alerts.send()
    assert (sent.sent, sent.dropped) == (1, 1)
    assert len(alerts.outlet.texts()) == 1
    dropped = await alerts.h.redis.xrange(alerts.h.runtime.keys.outbox_dropped())
    assert dropped[-1][1][b"reason"] == b"duplicate"


async def test_a_stopped_senders_alert_is_taken_over(make_harness: HarnessFactory) -> None:
    h = await make_harness(alerts={**ALERTS, "reclaim_after_seconds": 0.5})
    first, second = Alerts(h), Alerts(h)
    who = person("normal")
    await h.bind(who)
    start = await balance_of(first, who.member_id)
    await h.say(f"/alert {(start - 50).quantize(Decimal('1'))}")
    first.sandbox.spend(who.member_id, Decimal(60))
    await first.check()
    taken = await first.sender.reader.take(10, 1)  # ... and the first sender dies holding it
    assert len(taken) == 1
    assert (await second.send()).sent == 0
    await asyncio.sleep(0.6)
    assert (await second.send()).sent == 1
    assert len(second.outlet.texts()) == 1
    assert await h.redis.xlen(h.runtime.keys.outbox("console", h.runtime.keys.shard_of(ALICE))) == 0


async def test_a_stopped_checkers_batch_is_taken_over(make_harness: HarnessFactory) -> None:
    h = await make_harness(alerts={**ALERTS, "reclaim_after_seconds": 0.5})
    first, second = Alerts(h), Alerts(h)
    who = person("normal")
    await h.bind(who)
    start = await balance_of(first, who.member_id)
    await h.say(f"/alert {(start - 50).quantize(Decimal('1'))}")
    first.sandbox.spend(who.member_id, Decimal(60))
    await first.checker.move_due()
    assert len(await first.checker.reader.take(10, 1)) == 1  # taken, then the worker dies
    assert (await second.check()).checked == 0
    await asyncio.sleep(0.6)
    assert (await second.check()).alerts == 1
    await second.send()
    assert len(second.outlet.texts()) == 1


async def test_blocked_users_are_dropped_with_a_record_and_network_errors_retried(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(alerts={**ALERTS, "reclaim_after_seconds": 0.5})
    a = Alerts(h)
    bob = UserKey("console:bob")
    for user, scenario in ((ALICE, "normal"), (bob, "high_balance")):
        who = person(scenario)
        await h.bind(who, user)
        start = await balance_of(a, who.member_id)
        await h.say(f"/alert {(start - 50).quantize(Decimal('1'))}", user)
        a.sandbox.spend(who.member_id, Decimal(60))
    a.outlet.refuse.add(bob)
    a.outlet.fail = 1
    await a.check()
    first = await a.send()
    assert (first.sent, first.dropped, first.retry) == (0, 1, 1)  # bob dropped; alice: network down
    dropped = await h.redis.xrange(h.runtime.keys.outbox_dropped())
    assert [(d[b"user"], d[b"reason"]) for _, d in dropped] == [(b"console:bob", b"undeliverable")]
    await asyncio.sleep(0.6)
    assert (await a.send()).sent == 1
    assert len(a.outlet.texts()) == 1
    assert a.outlet.texts(bob) == []


async def test_nothing_is_queued_for_an_unreachable_user(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    start = await balance_of(alerts, who.member_id)
    await alerts.h.say(f"/alert {(start - 50).quantize(Decimal('1'))}")
    await alerts.h.runtime.store.mark_unreachable(ALICE)
    alerts.sandbox.spend(who.member_id, Decimal(60))
    report = await alerts.check()
    assert (report.alerts, report.unreachable) == (0, 1)
    assert (
        await alerts.h.redis.xlen(
            alerts.h.runtime.keys.outbox("console", alerts.h.runtime.keys.shard_of(ALICE))
        )
        == 0
    )
    await alerts.h.say("/help")  # they write again: reachable, and the crossing is still untold
    alerts.h.clock.advance(ROUND + JITTER)
    assert len(await alerts.round()) == 1


async def test_unbind_unsubscribes_and_a_dangling_entry_is_forgotten(alerts: Alerts) -> None:
    who = person("normal")
    await alerts.h.bind(who)
    await alerts.h.say("/alert 10")
    keys = alerts.h.runtime.keys
    schedule = keys.schedule_of(ALICE)
    assert await alerts.h.redis.zscore(schedule, ALICE) == 0
    await alerts.h.say("/unbind")
    await alerts.h.say("/unbind yes")
    assert await alerts.h.redis.zscore(schedule, ALICE) is None
    await alerts.h.redis.zadd(keys.schedule_of("console:ghost"), {"console:ghost": 5})
    report = await alerts.check()
    assert report.unsubscribed == 1
    assert [await alerts.h.redis.zcard(keys.schedule(shard)) for shard in range(keys.shards)] == [
        0
    ] * keys.shards


async def test_each_user_is_checked_once_a_round_by_several_workers(make_harness: HarnessFactory) -> None:
    h = await make_harness(alerts={**ALERTS, "batch_size": 7})
    users = [UserKey(f"console:u{i}") for i in range(60)]
    who = person("normal")
    for user in users:
        await subscribe(h, user, who.member_id, Decimal(10))
    workers = [Alerts(h) for _ in range(3)]
    reports = await asyncio.gather(*(w.check() for w in workers))
    assert sum(r.checked for r in reports) == 60
    assert sum(1 for r in reports if r.checked) >= 2  # shared, not one worker doing it all
    reports = await asyncio.gather(*(w.check() for w in workers))
    assert sum(r.checked for r in reports) == 0  # not due again within the round
    h.clock.advance(ROUND + JITTER)
    reports = await asyncio.gather(*(w.check() for w in workers))
    assert sum(r.checked for r in reports) == 60


async def subscribe(h: Harness, user: UserKey, member_id: str, threshold: Decimal) -> None:
    """A bound user with a threshold, written through the store as the chat would."""
    binding = Binding(
        member_id=MemberId(member_id),
        platform=PlatformName("sandbox"),
        id_number=SecretStr("110101198312116939"),
        phone=SecretStr("13000000000"),
        bound_at=h.clock.now(),
    )

    async def step(_: UserState) -> Outcome:
        return Outcome(replies=(), session=Session(), set_binding=binding, set_threshold=threshold)

    await h.runtime.store.update(user, step)


async def test_a_threshold_is_kept_after_redis_forgot_its_scripts(alerts: Alerts) -> None:
    await alerts.h.bind(person("normal"))
    await alerts.h.redis.script_flush()  # a restarted Redis without the scripts loaded
    assert "¥10.00" in await alerts.h.say("/alert 10")
    profile = await alerts.h.redis.hget(alerts.h.runtime.keys.user(ALICE, UserKind.PROFILE), "threshold")
    assert profile == b"10.00"
    assert await alerts.h.redis.zscore(alerts.h.runtime.keys.schedule_of(ALICE), ALICE) == 0

"""The Redis store: the per-user guard under concurrency, expiry, what is (not) written; on one
Redis, a Sentinel-watched primary and a Cluster."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from conftest import Harness, HarnessFactory, person
from pydantic import SecretStr
from topologies import TOPOLOGIES, ClientFactory, all_keys

from bot.crypto.pii import PiiCipher, new_key_text, parse_key
from bot.storage.codec import StateCodec
from bot.storage.keys import Keys, UserKind
from bot.storage.store import GuardLost, RedisStore, UserBusy
from dialogs.models import Outcome, PendingBind, Session, State, UserKey, UserState
from dialogs.ports import Step

pytestmark = TOPOLOGIES

USER = UserKey("tg:42")


def make_store(client: aioredis.Redis, key: str, **kwargs: float) -> RedisStore:
    return RedisStore(
        client,
        keys=Keys(),
        codec=StateCodec(PiiCipher(parse_key(key))),
        session_ttl_seconds=1800,
        **kwargs,  # type: ignore[arg-type]
    )


async def increment(state: UserState) -> Outcome:
    """A read-modify-write that loses counts unless updates for one user never interleave."""
    current = state.profile.threshold or Decimal(0)
    await asyncio.sleep(0.001)
    return Outcome(replies=(), session=Session(), set_threshold=current + 1)


async def test_fifty_concurrent_updates_from_two_instances_lose_nothing(
    redis: aioredis.Redis, new_client: ClientFactory
) -> None:
    key = new_key_text()
    a, b = make_store(redis, key), make_store(new_client(), key)
    await asyncio.gather(*(store.update(USER, increment) for store in [a, b] * 25))
    state = await a.peek(USER)
    assert state.profile.threshold == Decimal(50)
    assert await redis.exists(Keys().user(USER, UserKind.LOCK)) == 0


async def test_peeks_of_many_users_at_once_each_get_their_own_state(redis: aioredis.Redis) -> None:
    """Peeks in one turn of the event loop share one read: one script on one Redis, one pipeline
    split by node on a cluster, where the users' keys are in many slots."""
    store = make_store(redis, new_key_text())
    users = [UserKey(f"tg:{n}") for n in range(1, 41)]

    def setting(n: int) -> Step:
        async def step(state: UserState) -> Outcome:
            return Outcome(replies=(), session=Session(), set_threshold=Decimal(n))

        return step

    await asyncio.gather(*(store.update(user, setting(n)) for n, user in enumerate(users, 1)))
    states = await asyncio.gather(*(store.peek(user) for user in users))
    assert [s.profile.threshold for s in states] == [Decimal(n) for n in range(1, 41)]


async def test_fifty_concurrent_messages_leave_one_consistent_session(make_harness: HarnessFactory) -> None:
    one, two = await make_harness(), await make_harness()
    await one.bind(person("normal"))
    await one.say("/bind")  # already bound: idle again
    amounts = list(range(1, 51))
    await asyncio.gather(*((one if n % 2 else two).say(f"/alert {n}") for n in amounts))
    shown = await one.say("/alert")
    state = await one.runtime.store.peek(UserKey("console:alice"))
    assert state.profile.threshold is not None
    assert int(state.profile.threshold) in amounts
    assert f"below ¥{state.profile.threshold:,.2f}" in shown
    assert state.session.state is State.ALERT_AMOUNT  # the last message's state, whole


async def test_an_expired_guard_does_not_overwrite_a_newer_update(redis: aioredis.Redis) -> None:
    store = make_store(redis, new_key_text(), lock_seconds=0.1)

    async def slow(state: UserState) -> Outcome:
        await asyncio.sleep(0.4)
        return Outcome(replies=(), session=Session(), set_threshold=Decimal(1))

    async def quick(state: UserState) -> Outcome:
        return Outcome(replies=(), session=Session(), set_threshold=Decimal(2))

    other = make_store(redis, new_key_text(), lock_seconds=0.1)  # another process: no shared local lock
    slow_task = asyncio.create_task(store.update(USER, slow))
    await asyncio.sleep(0.2)
    await other.update(USER, quick)
    with pytest.raises(GuardLost):
        await slow_task
    assert (await redis.hget(Keys().user(USER, UserKind.PROFILE), "threshold")) == b"2"


async def test_waiting_too_long_for_the_guard_gives_up(redis: aioredis.Redis) -> None:
    store = make_store(redis, new_key_text(), lock_wait_seconds=0.1)
    await redis.set(Keys().user(USER, UserKind.LOCK), "someone-else", px=5000)
    with pytest.raises(UserBusy):
        await store.update(USER, increment)


async def test_a_failing_step_writes_nothing_and_frees_the_guard(redis: aioredis.Redis) -> None:
    store = make_store(redis, new_key_text())

    async def boom(state: UserState) -> Outcome:
        raise RuntimeError("step failed")

    with pytest.raises(RuntimeError):
        await store.update(USER, boom)
    assert await all_keys(redis) == []
    await store.update(USER, increment)
    assert (await store.peek(USER)).profile.threshold == 1


async def test_sessions_expire_when_idle_and_idle_ones_are_not_kept(redis: aioredis.Redis) -> None:
    store = make_store(redis, new_key_text())
    pending = PendingBind(name=SecretStr("张伟"), id_number=SecretStr("11010519491231002X"))

    async def to_bind(state: UserState) -> Outcome:
        return Outcome(replies=(), session=Session(state=State.BIND_ID, pending=pending))

    async def to_idle(state: UserState) -> Outcome:
        assert state.session.pending == pending  # decrypted on the way back
        return Outcome(replies=(), session=Session())

    await store.update(USER, to_bind)
    session_key = Keys().user(USER, UserKind.SESSION)
    ttl = await redis.pttl(session_key)
    assert 1_790_000 < ttl <= 1_800_000
    raw = await redis.get(session_key)
    assert b"11010519491231002X" not in raw
    assert "张伟".encode() not in raw
    assert b"bind_id" in raw
    await store.update(USER, to_idle)
    assert await redis.exists(session_key) == 0


async def test_a_session_from_another_key_is_dropped_not_fatal(redis: aioredis.Redis) -> None:
    pending = PendingBind(name=SecretStr("张伟"))

    async def to_bind(state: UserState) -> Outcome:
        return Outcome(replies=(), session=Session(state=State.BIND_ID, pending=pending))

    await make_store(redis, new_key_text()).update(USER, to_bind)
    state = await make_store(redis, new_key_text()).peek(USER)
    assert state.session == Session()


async def test_unbind_erases_every_key_about_the_user(harness: Harness) -> None:
    who = person("normal")
    await harness.bind(who)
    await harness.say("/alert 100")
    await harness.say("/lang zh")
    await harness.bind(person("normal", 1), user="console:bob")  # someone else stays
    question = await harness.say("/unbind")
    assert "110***********6939" in question
    assert [b.payload for b in harness.last[0].buttons] == [
        "/unbind yes",
        "/cancel",
    ]
    assert "删除" in await harness.say("确认")
    left = await harness.dump()
    assert not [k for k in left if "alice" in k], left
    assert [k for k in left if "console:bob" in k]
    dump = repr(left)
    for secret in (who.id_number, who.phone, who.name):
        assert secret not in dump
    assert "not bound yet" in await harness.say("/start", locale="en")


async def test_unbind_needs_a_yes(harness: Harness) -> None:
    await harness.bind(person("normal"))
    await harness.say("/unbind")
    assert "binding stays" in await harness.say("no")
    await harness.say("/unbind")
    assert "Cancelled" in await harness.say("/cancel")
    assert (await harness.runtime.store.peek(UserKey("console:alice"))).profile.binding is not None
    await harness.say("/unbind")
    assert "erased" in await harness.say("/unbind yes")  # the button


async def test_unbind_when_not_bound_erases_what_is_left(harness: Harness) -> None:
    await harness.say("/lang zh")
    assert await all_keys(harness.redis, "*{console:alice}*")
    await harness.say("/unbind")
    assert await all_keys(harness.redis, "*{console:alice}*") == []


def old_binding(cipher: PiiCipher, user: UserKey) -> str:
    """A binding as it was stored before the compact layout: one JSON field, text ciphertexts."""
    return json.dumps(
        {
            "member_id": "SBX-110000-0001",
            "platform": "sandbox",
            "id": cipher.encrypt("110101198312116939", context=f"id|{user}"),
            "phone": cipher.encrypt("13000000000", context=f"phone|{user}"),
            "bound_at": "2026-11-24T10:00:00+08:00",
            "personal_account": True,
        }
    )


async def test_a_binding_stored_before_the_compact_layout_still_reads(redis: aioredis.Redis) -> None:
    """Users bound before the upgrade keep their binding: read as it is, replaced at their next bind."""
    key = new_key_text()
    store = make_store(redis, key)
    profile = Keys().user(USER, UserKind.PROFILE)
    await redis.hset(profile, mapping={"binding": old_binding(PiiCipher(parse_key(key)), USER), "lang": "en"})
    binding = (await store.peek(USER)).profile.binding
    assert binding is not None
    assert binding.member_id == "SBX-110000-0001"
    assert binding.id_number.get_secret_value() == "110101198312116939"
    assert binding.phone.get_secret_value() == "13000000000"
    assert StateCodec.binding_member(await redis.hget(profile, "binding")) == ("sandbox", "SBX-110000-0001")

    async def rebind(state: UserState) -> Outcome:
        assert state.profile.binding is not None
        return Outcome(replies=(), session=Session(), set_binding=state.profile.binding)

    await store.update(USER, rebind)
    assert sorted(await redis.hkeys(profile)) == [b"b", b"id", b"lang", b"ph"]
    again = (await store.peek(USER)).profile.binding
    assert again is not None
    assert again.id_number.get_secret_value() == "110101198312116939"
    assert again.bound_at == binding.bound_at


async def test_a_bound_and_subscribed_profile_stays_a_listpack(harness: Harness) -> None:
    """Every field under hash-max-listpack-value (64 bytes): the compact encoding, about half the memory."""
    await harness.bind(person("normal"))
    await harness.say("/alert 100")
    await harness.say("/lang zh")
    profile = harness.runtime.keys.user(UserKey("console:alice"), UserKind.PROFILE)
    assert await harness.redis.object("encoding", profile) in (b"listpack", b"ziplist")  # 7.x, 6.2
    assert max(len(v) for v in (await harness.redis.hgetall(profile)).values()) <= 64

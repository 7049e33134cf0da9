"""The WeChat platform's shared state in Redis: the customer-service window, subscriptions, the held
alert, the access_token and its one fetcher, as every instance sees them."""

from __future__ import annotations

import base64
import os

import redis.asyncio as aioredis

from bot.crypto.pii import PiiCipher
from bot.storage.keys import Keys, UserKind
from bot.storage.wechat import RedisTokenStore, RedisWechatState
from dialogs.models import UserKey
from platforms.wechat.api import CachedToken
from platforms.wechat.state import Choices

USER = UserKey("wx:oAbCdEfGhIjKlMnOpQrStUvWxYz1")


def state(redis: aioredis.Redis) -> RedisWechatState:
    return RedisWechatState(redis, Keys("wxstate"), PiiCipher(os.urandom(32)))


async def test_the_window_is_five_messages_after_a_message_and_three_after_a_click(
    redis: aioredis.Redis,
) -> None:
    s = state(redis)
    assert not await s.take_quota(USER)  # never wrote: no window
    await s.opened(USER, event=False)
    assert not await s.take_quota(USER, 6)  # all or none
    assert await s.take_quota(USER, 4)
    assert await s.take_quota(USER)
    assert not await s.take_quota(USER)
    await s.opened(USER, event=True)  # a menu click: 3 more, within a minute
    assert await s.take_quota(USER, 3)
    assert not await s.take_quota(USER)
    await s.opened(USER, event=False)
    await s.close_window(USER)  # WeChat said 45015/45047: whatever was counted
    assert not await s.take_quota(USER)
    key = Keys("wxstate").user(USER, UserKind.CHANNEL)
    assert 0 < await redis.ttl(key) <= 400 * 86400


async def test_subscriptions_once_an_acceptance_or_for_good(redis: aioredis.Redis) -> None:
    s = state(redis)
    await s.subscribed(USER, "T1", accepted=True, long_term=False)
    await s.subscribed(USER, "T1", accepted=True, long_term=False)
    assert await s.take_subscription(USER, "T1")
    assert await s.take_subscription(USER, "T1")
    assert not await s.take_subscription(USER, "T1")
    await s.subscribed(USER, "T2", accepted=True, long_term=True)
    for _ in range(3):
        assert await s.take_subscription(USER, "T2")
    await s.subscribed(USER, "T2", accepted=False, long_term=True)
    assert not await s.take_subscription(USER, "T2")


async def test_choices_and_a_held_alert_kept_sealed(redis: aioredis.Redis) -> None:
    s = state(redis)
    await s.set_choices(USER, Choices("ab12", ("/unbind yes", "/cancel")))
    assert await s.choices(USER) == Choices("ab12", ("/unbind yes", "/cancel"))
    await s.hold(USER, "🔔 余额 ¥32.63")
    raw = await redis.hget(Keys("wxstate").user(USER, UserKind.CHANNEL), "held")
    assert raw is not None
    assert b"32.63" not in raw
    assert await s.take_held(USER) == "🔔 余额 ¥32.63"
    assert await s.take_held(USER) is None
    await s.set_choices(USER, None)
    assert await s.choices(USER) is None


async def test_seen_keys_are_first_once(redis: aioredis.Redis) -> None:
    s = state(redis)
    assert await s.first("wx:msg:1", 60)
    assert not await s.first("wx:msg:1", 60)
    assert await s.first("wx:msg:2", 60)


async def test_one_instance_at_a_time_fetches_the_token(redis: aioredis.Redis) -> None:
    keys = Keys("wxstate")
    a = RedisTokenStore(
        redis, keys.wechat_token("wx0123456789abcdef"), keys.wechat_token_lock("wx0123456789abcdef")
    )
    b = RedisTokenStore(
        redis, keys.wechat_token("wx0123456789abcdef"), keys.wechat_token_lock("wx0123456789abcdef")
    )
    assert await a.lock(5)
    assert not await b.lock(5)
    await b.unlock()  # not b's: stays
    assert not await b.lock(5)
    await a.unlock()
    assert await b.lock(5)
    token = CachedToken(base64.b64encode(os.urandom(12)).decode(), 4_000_000_000.0)
    await a.put(token)
    assert await b.get() == token
    await b.drop("another one")
    assert await a.get() == token
    await b.drop(token.value)
    assert await a.get() is None


async def test_a_wecom_members_pace_holds_the_message_past_the_limit(redis: aioredis.Redis) -> None:
    from bot.storage.wecom import MARGIN_MS, RedisWecomState

    s = RedisWecomState(redis, Keys("wxstate"), PiiCipher(os.urandom(32)), per_minute=3, per_hour=5)
    member = UserKey("wecom:ww0123456789abcdef:zhang.wei")
    assert [await s.pace(member) for _ in range(3)] == [0, 0, 0]
    wait = await s.pace(member)  # the 4th in the minute: not counted, told how long to wait
    assert 60 < wait <= 60 + MARGIN_MS / 1000 + 0.1
    again = await s.pace(member)
    assert abs(again - wait) < 0.5  # still waiting: a refused pace is not counted
    assert not await redis.keys("*zhang.wei*")  # the pace is named by a keyed hash, not the member

"""The WeChat platform's shared state in Redis (``platforms.wechat.state.WechatState`` and the
access_token's ``TokenStore``).

Per user, one hash under the user's keys (``UserKind.CHANNEL``, erased by ``/unbind``), kept 400 days
after the last change:

- ``in_at``/``in_used``: when the user last wrote, and customer-service messages sent since (5 within
  48 hours); ``ev_at``/``ev_used``: the last menu click or follow, and messages since (3 within a
  minute). Times are Redis's own clock, so every instance counts alike;
- ``choices``: the options last offered (JSON, encrypted: an option may be the user's name);
- ``sub:<template id>``: accepted subscription messages left (a number, or ``L`` for long-term);
- ``held``: an alert that could not be sent, encrypted with the operator's key.

Deduplication and replay keys are ``SET NX`` with an expiry, named by a hash of what they stand for.
"""

from __future__ import annotations

import hashlib
import json
import secrets

from redis.asyncio import Redis

from bot.crypto.pii import PiiCipher, PiiError
from bot.storage.keys import Keys, UserKind
from dialogs.models import UserKey
from platforms.wechat.api import CachedToken
from platforms.wechat.state import Choices

KEEP_SECONDS = 400 * 86400
WINDOW_MS = 48 * 3600 * 1000
WINDOW_MESSAGES = 5
EVENT_MS = 60 * 1000
EVENT_MESSAGES = 3

# KEYS: the user's channel hash. ARGV: n, keep seconds, window ms, window count, event ms, event count.
# Takes n messages from the short (event) grant first, then the 48-hour one; all or none.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'ev_at', 'ev_used', 'in_at', 'in_used')
local ev, inw = 0, 0
if f[1] and now - tonumber(f[1]) < tonumber(ARGV[5]) then ev = tonumber(ARGV[6]) - tonumber(f[2] or '0') end
if f[3] and now - tonumber(f[3]) < tonumber(ARGV[3]) then inw = tonumber(ARGV[4]) - tonumber(f[4] or '0') end
if ev < 0 then ev = 0 end
if inw < 0 then inw = 0 end
if ev + inw < n then return 0 end
local from_ev = math.min(ev, n)
if from_ev > 0 then redis.call('HINCRBY', KEYS[1], 'ev_used', from_ev) end
if n > from_ev then redis.call('HINCRBY', KEYS[1], 'in_used', n - from_ev) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: the channel hash. ARGV: "ev" or "in", keep seconds.
_OPENED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1] .. '_at', now, ARGV[1] .. '_used', 0)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: the channel hash. ARGV: field. A long-term acceptance stays; a count goes down by one.
_TAKE_SUB = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
if v == 'L' then return 1 end
local n = tonumber(v) or 0
if n <= 1 then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HINCRBY', KEYS[1], ARGV[1], -1) end
if n >= 1 then return 1 end
return 0
"""

# KEYS: the channel hash. ARGV: field, "L" or "1", keep seconds.
_ACCEPT = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == 'L' or v == 'L' then redis.call('HSET', KEYS[1], ARGV[1], 'L')
else redis.call('HINCRBY', KEYS[1], ARGV[1], 1) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

_GETDEL_FIELD = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v
"""

_DROP_IF = """
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['value'] == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""


class RedisWechatState:
    def __init__(self, redis: Redis, keys: Keys, cipher: PiiCipher) -> None:
        self.redis = redis
        self.keys = keys
        self.cipher = cipher
        self._take = redis.register_script(_TAKE)
        self._opened = redis.register_script(_OPENED)
        self._take_sub = redis.register_script(_TAKE_SUB)
        self._accept = redis.register_script(_ACCEPT)
        self._getdel = redis.register_script(_GETDEL_FIELD)

    def _hash(self, user: UserKey) -> str:
        return self.keys.user(user, UserKind.CHANNEL)

    async def first(self, key: str, ttl_seconds: int) -> bool:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return bool(await self.redis.set(self.keys.wechat_seen(digest), b"1", nx=True, ex=ttl_seconds))

    async def opened(self, user: UserKey, *, event: bool) -> None:
        await self._opened(keys=[self._hash(user)], args=["ev" if event else "in", KEEP_SECONDS])

    async def take_quota(self, user: UserKey, n: int = 1) -> bool:
        args = [n, KEEP_SECONDS, WINDOW_MS, WINDOW_MESSAGES, EVENT_MS, EVENT_MESSAGES]
        return bool(await self._take(keys=[self._hash(user)], args=args))

    async def close_window(self, user: UserKey) -> None:
        await self.redis.hset(
            self._hash(user), mapping={"in_used": WINDOW_MESSAGES, "ev_used": EVENT_MESSAGES}
        )

    async def set_choices(self, user: UserKey, choices: Choices | None) -> None:
        key = self._hash(user)
        if choices is None:
            await self.redis.hdel(key, "choices")
            return
        value = json.dumps(
            {"g": choices.gen, "p": list(choices.payloads), "l": list(choices.labels)}, ensure_ascii=False
        )
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, "choices", self.cipher.encrypt(value, context=f"choices:{user}"))
        pipe.expire(key, KEEP_SECONDS)
        await pipe.execute()

    async def choices(self, user: UserKey) -> Choices | None:
        raw = await self.redis.hget(self._hash(user), "choices")
        if raw is None:
            return None
        try:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            data = json.loads(self.cipher.decrypt(text, context=f"choices:{user}"))
            labels = tuple(str(label) for label in data.get("l", ()))
            return Choices(str(data["g"]), tuple(str(p) for p in data["p"]), labels)
        except (ValueError, KeyError, TypeError, PiiError, UnicodeDecodeError):
            return None

    async def subscribed(self, user: UserKey, template_id: str, *, accepted: bool, long_term: bool) -> None:
        field = f"sub:{template_id}"
        if not accepted:
            await self.redis.hdel(self._hash(user), field)
            return
        await self._accept(keys=[self._hash(user)], args=[field, "L" if long_term else "1", KEEP_SECONDS])

    async def take_subscription(self, user: UserKey, template_id: str) -> bool:
        return bool(await self._take_sub(keys=[self._hash(user)], args=[f"sub:{template_id}"]))

    async def drop_subscription(self, user: UserKey, template_id: str) -> None:
        await self.redis.hdel(self._hash(user), f"sub:{template_id}")

    async def hold(self, user: UserKey, text: str) -> None:
        sealed = self.cipher.encrypt(text, context=f"held:{user}")
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self._hash(user), "held", sealed)
        pipe.expire(self._hash(user), KEEP_SECONDS)
        await pipe.execute()

    async def take_held(self, user: UserKey) -> str | None:
        raw = await self._getdel(keys=[self._hash(user)], args=["held"])
        if raw is None:
            return None
        try:
            return self.cipher.decrypt(raw.decode(), context=f"held:{user}")
        except (PiiError, UnicodeDecodeError):
            return None


class RedisTokenStore:
    """An app's access_token, one for every instance (``Keys.wechat_token``, ``Keys.wecom_token``)."""

    def __init__(self, redis: Redis, key: str, lock_key: str) -> None:
        self.redis = redis
        self.key = key
        self.lock_key = lock_key
        self._drop_if = redis.register_script(_DROP_IF)
        self._lock_value = secrets.token_hex(8)

    async def get(self) -> CachedToken | None:
        raw = await self.redis.get(self.key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return CachedToken(str(data["value"]), float(data["expires_at"]))
        except (ValueError, KeyError, TypeError):
            return None

    async def put(self, token: CachedToken) -> None:
        value = json.dumps({"value": token.value, "expires_at": token.expires_at})
        await self.redis.set(self.key, value, exat=max(1, int(token.expires_at)))

    async def drop(self, value: str) -> None:
        await self._drop_if(keys=[self.key], args=[value])

    async def lock(self, seconds: float) -> bool:
        return bool(await self.redis.set(self.lock_key, self._lock_value, nx=True, px=int(seconds * 1000)))

    async def unlock(self) -> None:
        if await self.redis.get(self.lock_key) == self._lock_value.encode():
            await self.redis.delete(self.lock_key)

"""The WeCom platform's shared state in Redis (``platforms.wecom.state.WecomState``): the same
deduplication and choices as WeChat's (``bot.storage.wechat``), and each member's pace under WeCom's
per-member limits, a sorted set of send times named by a keyed hash of the member (``Keys.member_pace``:
no user key in its name, so an erasure leaves nothing that names them; it expires within the hour)."""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from bot.crypto.pii import PiiCipher
from bot.storage.keys import Keys
from bot.storage.wechat import RedisWechatState
from dialogs.models import UserKey

# KEYS: the member's pace. ARGV: per minute, per hour, a nonce, the margin (ms). Returns ms to wait
# (0: counted, go). The windows are a margin longer than WeCom's: a message is counted here when it is
# about to go and by WeCom when it arrives, and a slow send must not make two arrive within WeCom's minute.
_PACE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute, hour = 60000 + tonumber(ARGV[4]), 3600000 + tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - hour)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + hour - now + 1
end
local recent = redis.call('ZRANGEBYSCORE', KEYS[1], now - minute, '+inf', 'WITHSCORES')
if #recent / 2 >= tonumber(ARGV[1]) then
  local first = tonumber(recent[#recent - 2 * tonumber(ARGV[1]) + 2])
  return first + minute - now + 1
end
redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], hour)
return 0
"""
MARGIN_MS = 2000


class RedisWecomState(RedisWechatState):
    def __init__(
        self, redis: Redis, keys: Keys, cipher: PiiCipher, *, per_minute: int = 30, per_hour: int = 1000
    ) -> None:
        super().__init__(redis, keys, cipher)
        self.per_minute = per_minute
        self.per_hour = per_hour
        self._pace = redis.register_script(_PACE)

    async def pace(self, user: UserKey) -> float:
        key = self.keys.member_pace(self.cipher.digest(user, purpose="wecom-pace"))
        wait_ms = int(
            await self._pace(
                keys=[key], args=[self.per_minute, self.per_hour, secrets.token_hex(4), MARGIN_MS]
            )
        )
        return max(0, wait_ms) / 1000

"""The durable outbox: alerts written to Redis before any send, acknowledged only once delivered.

One stream per chat platform (``tg``, ``console``), read by the senders of every worker through a
consumer group (``bot.storage.streams``): an entry a sender took and did not finish (it crashed) is taken
over by another. Delivery from the queue is therefore at least once; what the user sees is once per
crossing, because every entry carries its crossing's token and, before sending, one script on the
user's own keys checks that the crossing is still current, was not sent yet, and is not being sent
by another sender (a short lease), and records the token as sent once the platform confirmed it.

- Quiet hours: an entry met during them waits in a sorted set until they end, then goes back.
- Rate: every sender of a platform shares one schedule of send times in Redis (``Pacer``), so N
  workers together send at ``alerts.send_rate``; each send then also goes through the platform's
  own limiter (Telegram's per-chat and global limits), like any reply.
- An alert that will not be sent (the user blocked the bot, turned the alert off, unbound, or the
  balance came back up first) is dropped with a record in a capped ``dropped`` stream and a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, tzinfo

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from bot.alerts.schedule import QuietHours
from bot.crypto.pii import PiiError
from bot.storage.codec import StateCodec
from bot.storage.keys import Keys, UserKind
from bot.storage.streams import Entry, GroupReader
from dialogs.crossing import AlertFacts, Spend, alert_replies
from dialogs.i18n import Catalogs
from dialogs.models import UserKey
from dialogs.ports import Clock, InsurancePort, InsuranceProblem, Outlet, Undeliverable

log = logging.getLogger(__name__)

GROUP = "senders"
DROPPED_KEEP = 10_000
"""Records kept in the ``dropped`` stream (approximately; the oldest go first)."""


def chat_platform(user: UserKey) -> str:
    return user.partition(":")[0]


class Outbox:
    """Writes alerts into the outbox of the user's chat platform."""

    def __init__(self, keys: Keys, codec: StateCodec) -> None:
        self.keys = keys
        self.codec = codec

    def put(self, pipe: Pipeline, user: UserKey, token: str, facts: AlertFacts, found_at: datetime) -> None:
        pipe.xadd(
            self.keys.outbox(chat_platform(user)),
            {
                "user": user,
                "token": token,
                "facts": self.codec.encode_alert(user, facts),
                "found": str(int(found_at.timestamp() * 1000)),
            },
        )


# KEYS: pace. ARGV: µs between two sends. Returns µs to wait before sending (Redis server time,
# so every worker keeps one schedule whatever its own clock says).
_PACE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
redis.call('SET', KEYS[1], string.format('%.0f', slot + tonumber(ARGV[1])), 'PX', 60000)
return string.format('%.0f', slot - now)
"""


class Pacer:
    """Send times ``1/rate`` apart, shared by every sender of one chat platform.

    The spacing is stretched by 1% so that a send that wakes a little late and the next one that
    wakes on time still never put ``rate + 1`` sends within one second.
    """

    STRETCH = 1.01

    def __init__(self, redis: Redis, key: str, rate: float) -> None:
        self.key = key
        self.spacing_us = int(1_000_000 / rate * self.STRETCH)
        self._script = redis.register_script(_PACE)

    async def wait(self) -> None:
        wait_us = int(await self._script(keys=[self.key], args=[self.spacing_us]))
        if wait_us > 0:
            await asyncio.sleep(wait_us / 1_000_000)


# KEYS: profile, unreachable, sending. ARGV: token, lease ms.
_CLAIM = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {'unreachable'} end
local mark = redis.call('HGET', KEYS[1], 'alert')
if not mark or string.sub(mark, 3) ~= ARGV[1] then return {'superseded'} end
if redis.call('HGET', KEYS[1], 'alert_sent') == ARGV[1] then return {'duplicate'} end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'busy'} end
local p = redis.call('HMGET', KEYS[1], 'lang', 'alert_lang', 'binding')
return {'go', p[1] or '', p[2] or '', p[3] or ''}
"""

# KEYS: later, stream. ARGV: now ms, most to move. Alerts whose quiet hours are over go back.
_RELEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, raw in ipairs(due) do
  local e = cjson.decode(raw)
  redis.call('XADD', KEYS[2], '*', 'user', e.user, 'token', e.token, 'facts', e.facts, 'found', e.found)
  redis.call('ZREM', KEYS[1], raw)
end
return #due
"""


@dataclass(slots=True)
class SendReport:
    sent: int = 0
    deferred: int = 0
    dropped: int = 0
    retry: int = 0


class Sender:
    """Delivers one chat platform's outbox through its ``Outlet``."""

    def __init__(
        self,
        redis: Redis,
        *,
        keys: Keys,
        codec: StateCodec,
        platform: str,
        outlet: Outlet,
        catalogs: Catalogs,
        clock: Clock,
        tz: tzinfo,
        default_locale: str,
        consumer: str,
        quiet: QuietHours | None = None,
        insurance: InsurancePort | None = None,
        rate: float = 20.0,
        reclaim_after_seconds: float = 60.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.codec = codec
        self.platform = platform
        self.outlet = outlet
        self.catalogs = catalogs
        self.clock = clock
        self.tz = tz
        self.default_locale = default_locale
        self.quiet = quiet
        self.insurance = insurance
        self.stream = keys.outbox(platform)
        self.reader = GroupReader(
            redis, self.stream, GROUP, consumer, reclaim_after_seconds=reclaim_after_seconds
        )
        self.pacer = Pacer(redis, keys.outbox_pace(platform), rate)
        # Shorter than the take-over time, so a crashed sender's lease is gone when its entry is taken.
        self.lease_ms = max(1, int(reclaim_after_seconds * 500))
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    async def work(self, block_ms: int = 1000, count: int = 10) -> SendReport:
        report = SendReport()
        now_ms = int(self.clock.now().timestamp() * 1000)
        await self._release(keys=[self.keys.outbox_later(self.platform), self.stream], args=[now_ms, 100])
        for entry in await self.reader.take(count, block_ms):
            await self._one(entry, report)
        return report

    async def _one(self, entry: Entry, report: SendReport) -> None:
        entry_id, fields = entry
        try:
            user = UserKey(fields[b"user"].decode())
            token = fields[b"token"].decode()
        except (KeyError, UnicodeDecodeError):
            await self._drop(entry_id, "", "", "malformed")
            report.dropped += 1
            return
        quiet_until = self.quiet.ends(self.clock.now()) if self.quiet is not None else None
        if quiet_until is not None:
            await self._defer(entry_id, fields, quiet_until)
            report.deferred += 1
            return
        answer = await self._claim(
            keys=[
                self.keys.user(user, UserKind.PROFILE),
                self.keys.user(user, UserKind.UNREACHABLE),
                self.keys.user(user, UserKind.SENDING),
            ],
            args=[token, self.lease_ms],
        )
        status = answer[0].decode()
        if status == "busy":  # another sender has this crossing in hand; look again later
            report.retry += 1
            return
        if status != "go":
            await self._drop(entry_id, user, token, status)
            report.dropped += 1
            return
        lang, alert_lang = answer[1].decode(), answer[2].decode()
        try:
            facts = self.codec.decode_alert(user, fields[b"facts"])
        except (KeyError, ValueError, PiiError):
            await self._drop(entry_id, user, token, "unreadable", release=True)
            report.dropped += 1
            return
        if facts.latest_spend is None and answer[3]:
            facts = facts.model_copy(update={"latest_spend": await self._latest_spend(answer[3])})
        replies = alert_replies(self.catalogs.get(lang or alert_lang or self.default_locale), facts, self.tz)
        await self.pacer.wait()
        try:
            await self.outlet.deliver(user, replies)
        except Undeliverable:
            await self._drop(entry_id, user, token, "undeliverable", release=True)
            report.dropped += 1
            return
        except Exception as e:  # not now: the entry stays pending and is taken over later
            await self.redis.delete(self.keys.user(user, UserKind.SENDING))
            log.warning("alert for %s not sent (%s); will try again", user, type(e).__name__)
            report.retry += 1
            return
        await self._record_sent(entry_id, user, token)
        log.info("alert sent to %s (crossing %s)", user, token)
        report.sent += 1

    async def _record_sent(self, entry_id: bytes, user: UserKey, token: str) -> None:
        """Delivered: say so in Redis, trying until it is heard. A Redis that is down now would
        otherwise leave the entry pending, and its taking over would send the alert again."""
        delay = 0.2
        while True:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(self.keys.user(user, UserKind.PROFILE), "alert_sent", token)
            pipe.delete(self.keys.user(user, UserKind.SENDING))
            self.reader.done(pipe, entry_id)
            try:
                await pipe.execute()
                return
            except (RedisError, OSError) as e:
                log.warning(
                    "alert to %s sent but not yet recorded (%s); trying again", user, type(e).__name__
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _latest_spend(self, binding_json: bytes) -> Spend | None:
        """The member's latest payment from the personal account, if the platform tells it now.
        Asked here, at a few a second, rather than in the sweep, where it would be one call per
        crossing among calls for a hundred users each."""
        if self.insurance is None:
            return None
        platform, member_id = self.codec.binding_member(binding_json)
        try:
            page = await self.insurance.transactions(platform, member_id, limit=10)
        except InsuranceProblem:
            return None
        for tx in page.items:
            if tx.personal < 0:
                return Spend(at=tx.at, place=tx.place, amount=-tx.personal)
        return None

    async def _defer(self, entry_id: bytes, fields: dict[bytes, bytes], until: datetime) -> None:
        record = json.dumps({k.decode(): v.decode() for k, v in fields.items()}, sort_keys=True)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.outbox_later(self.platform), {record: int(until.timestamp() * 1000)})
        self.reader.done(pipe, entry_id)
        await pipe.execute()

    async def _drop(
        self, entry_id: bytes, user: str, token: str, reason: str, *, release: bool = False
    ) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(
            self.keys.outbox_dropped(),
            {"user": user, "token": token, "reason": reason, "at": str(int(time.time()))},
            maxlen=DROPPED_KEEP,
            approximate=True,
        )
        if release and user:
            pipe.delete(self.keys.user(UserKey(user), UserKind.SENDING))
        self.reader.done(pipe, entry_id)
        await pipe.execute()
        log.info("alert for %s dropped: %s", user or "?", reason)

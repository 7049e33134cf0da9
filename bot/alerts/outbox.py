"""The durable outbox: alerts written to Redis before any send, acknowledged only once delivered.

One stream per chat platform (``tg``, ``console``), read by the senders of every worker through a
consumer group (``bot.storage.streams``): an entry a sender took and did not finish (it crashed) is taken
over by another. Delivery from the queue is therefore at least once; what the user sees is once per
crossing, because every entry carries its crossing's token and, before sending, one script on the
user's own keys checks that the crossing is still current, was not sent yet, and is not claimed by
another sender, and records the token as sent once the platform confirmed it.

- The claim (the user's ``sending`` key: token, sender, a nonce) is written *before* the send and has
  no expiry: it ends with the record, a drop, or the erasure of the user. Its sender renews it (a new
  nonce) every quarter of ``reclaim_after_seconds`` while it sends and while it retries the record,
  and retries the record for as long as Redis is away. Another sender that meets the entry (taken
  over from the pending list, or a repeat of the check) leaves a claim alone until it has itself seen
  it unchanged for ``reclaim_after_seconds`` while it reached Redis without a break, and only then
  takes it over (compare-and-set on the exact value it saw) and sends. So a sender that delivered and
  waits for Redis is never doubled, however long Redis is away: when Redis comes back it renews or
  records within a second, long before anyone's watch runs out. Only a sender that *stopped* after the
  platform's confirmation and before the record (killed, or cut off from Redis alone while the others
  reach it, for longer than ``reclaim_after_seconds``) leaves a delivered alert to be sent again.
- Quiet hours: an entry met during them waits in a sorted set until they end, then goes back.
- Rate: every sender of a platform shares one schedule of send times in Redis (``Pacer``), so N
  workers together send at ``alerts.send_rate``; each send then also goes through the platform's
  own limiter (Telegram's per-chat and global limits), like any reply.
- An alert that will not be sent (the user blocked the bot, turned the alert off, unbound, or the
  balance came back up first) is dropped with a record in a capped ``dropped`` stream and a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, tzinfo

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from bot import metrics
from bot.alerts.schedule import QuietHours
from bot.audit.figures import Figures
from bot.crypto.pii import PiiError
from bot.storage.batch import call, send
from bot.storage.codec import StateCodec
from bot.storage.connect import Topology
from bot.storage.keys import Keys, UserKind
from bot.storage.streams import Entry, ShardedReader
from dialogs.crossing import AlertFacts, Spend
from dialogs.i18n import Catalogs
from dialogs.models import UserKey
from dialogs.notices import AlertKind, AnyFacts, notice_replies
from dialogs.ports import Clock, Held, InsurancePort, InsuranceProblem, Outlet, Undeliverable

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

    def stream_of(self, user: UserKey) -> str:
        return self.keys.outbox(chat_platform(user), self.keys.shard_of(user))

    def put(
        self,
        pipe: Pipeline,
        user: UserKey,
        token: str,
        facts: AnyFacts,
        found_at: datetime,
        *,
        kind: str = "",
    ) -> None:
        """``kind``: "" for the low balance (entries written before the other kinds have none), else
        an ``AlertKind`` value, which names the profile fields of its watch."""
        entry: dict[FieldT, EncodableT] = {
            "user": user,
            "token": token,
            "facts": self.codec.encode_alert(user, facts),
            "found": str(int(found_at.timestamp() * 1000)),
        }
        if kind:
            entry["kind"] = kind
        pipe.xadd(self.stream_of(user), entry)


def watch_fields(kind: str) -> tuple[str, str]:
    """The profile fields of a kind's watch and of its last sent token."""
    if not kind:
        return "alert", "alert_sent"
    k = AlertKind(kind)
    return k.value, k.sent_field


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


# The user's claim is "<token> <sender> <nonce>"; "<token> <sender> " is whose it is.
# KEYS: profile, unreachable, sending. ARGV: token, our claim, the claim we may replace ("" for none),
# whose ours is, the watch's field and the sent field of the alert's kind (``watch_fields``), and
# ``on`` for the other kinds: their alert is current while the kind is on (its token is new news,
# written to the watch after the entry), the low balance's only while its crossing is the watch's. A claim on this crossing that is neither the one we may replace nor our own (one we
# gave up when Redis went away mid-send) is another sender's: busy (with it). One on a crossing that
# is no longer current is stale and goes.
_CLAIM = """
local held = redis.call('GET', KEYS[3])
local held_token = held and string.match(held, '^(%S+) ')
if redis.call('EXISTS', KEYS[2]) == 1 then return {'unreachable'} end
local mark = redis.call('HGET', KEYS[1], ARGV[5])
if not mark or (ARGV[7] ~= 'on' and string.sub(mark, 3) ~= ARGV[1]) then
  if held_token == ARGV[1] then redis.call('DEL', KEYS[3]) end
  return {'superseded'}
end
if redis.call('HGET', KEYS[1], ARGV[6]) == ARGV[1] then
  if held_token == ARGV[1] then redis.call('DEL', KEYS[3]) end
  return {'duplicate'}
end
if held_token == ARGV[1] and held ~= ARGV[3] and string.sub(held, 1, #ARGV[4]) ~= ARGV[4] then
  return {'busy', held}
end
redis.call('SET', KEYS[3], ARGV[2])
local p = redis.call('HMGET', KEYS[1], 'lang', 'alert_lang', 'b', 'binding')
return {'go', p[1] or '', p[2] or '', p[3] or p[4] or ''}
"""

# KEYS: sending. ARGV: whose ("<token> <sender> "), the new claim. 1 if still ours (renewed), else 0.
_RENEW = """
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, #ARGV[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: profile, sending. ARGV: token, whose, the kind's sent field. Delivered: the token is sent, and
# our claim goes. A profile that is gone (the user unbound while their alert was on its way) is not
# written back.
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[3], ARGV[1]) end
local held = redis.call('GET', KEYS[2])
if held and string.sub(held, 1, #ARGV[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 1
"""

# KEYS: sending. ARGV: whose. Not sent (or dropped): our claim goes, another's stays.
_UNCLAIM = """
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, #ARGV[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: later, stream. ARGV: now ms, most to move. Alerts whose quiet hours are over go back.
_RELEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, raw in ipairs(due) do
  local e = cjson.decode(raw)
  if e.kind then
    redis.call('XADD', KEYS[2], '*', 'user', e.user, 'token', e.token, 'facts', e.facts, 'found', e.found, 'kind', e.kind)
  else
    redis.call('XADD', KEYS[2], '*', 'user', e.user, 'token', e.token, 'facts', e.facts, 'found', e.found)
  end
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

    RECORD_RETRY_MAX = 1.0
    """The longest pause between two tries of a record while Redis is away: when it comes back, the
    record is in long before another sender's watch over the claim (``reclaim_after``) runs out."""

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
        figures: Figures | None = None,
        topology: Topology | None = None,
    ) -> None:
        self.redis = redis
        self.figures = figures
        self.topology = topology or Topology()
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
        self.consumer = consumer
        self.streams = [keys.outbox(platform, shard) for shard in range(keys.shards)]
        self.reader = ShardedReader(
            redis, self.streams, GROUP, consumer, reclaim_after_seconds=reclaim_after_seconds
        )
        self.pacer = Pacer(redis, keys.outbox_pace(platform), rate)
        self.reclaim_after = reclaim_after_seconds
        self.renew_every = max(0.05, reclaim_after_seconds / 4)
        self._record_retry_max = min(self.RECORD_RETRY_MAX, self.renew_every)
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._record = redis.register_script(_RECORD)
        self._unclaim = redis.register_script(_UNCLAIM)
        self._release = redis.register_script(_RELEASE)
        self._seen: dict[str, tuple[bytes, float]] = {}
        """Other senders' claims met, by user: the claim as seen, and since when (monotonic)."""
        self._last_contact = time.monotonic()
        self._gap_allowed = max(self.reclaim_after / 2, 2.0)
        self._keepers: set[asyncio.Task[None]] = set()

    async def work(self, block_ms: int = 1000, count: int = 10) -> SendReport:
        report = SendReport()
        now_ms = int(self.clock.now().timestamp() * 1000)
        self._gap_allowed = max(self.reclaim_after / 2, block_ms / 1000 + 1.0)
        try:
            await asyncio.gather(
                *(
                    self._release(
                        keys=[self.keys.outbox_later(self.platform, shard), stream], args=[now_ms, 100]
                    )
                    for shard, stream in enumerate(self.streams)
                )
            )
            self._contact()
            entries = await self.reader.take(count, block_ms)
            self._contact()
            for entry in entries:
                await self._one(entry, report)
        except (RedisError, OSError):
            self._seen.clear()  # what we saw before Redis went away says nothing about the claims now
            raise
        return report

    def _contact(self) -> None:
        """Redis answered. After a longer silence than allowed (a call that hung, a pause of this
        process) the claims seen so far are forgotten: their holders may have been unable to renew."""
        now = time.monotonic()
        if now - self._last_contact > self._gap_allowed:
            self._seen.clear()
        self._last_contact = now

    def _claim_value(self, token: str) -> tuple[str, str]:
        whose = f"{token} {self.consumer} "
        return whose, whose + secrets.token_hex(4)

    async def _one(self, entry: Entry, report: SendReport) -> None:
        entry_id, fields = entry
        try:
            user = UserKey(fields[b"user"].decode())
            token = fields[b"token"].decode()
            kind = fields.get(b"kind", b"").decode()
            mark_field, sent_field = watch_fields(kind)
        except (KeyError, UnicodeDecodeError, ValueError):
            await self._drop(entry_id, "", "", "malformed")
            report.dropped += 1
            return
        quiet_until = self.quiet.ends(self.clock.now()) if self.quiet is not None else None
        if quiet_until is not None:
            await self._defer(entry_id, fields, quiet_until)
            report.deferred += 1
            return
        sending = self.keys.user(user, UserKind.SENDING)
        whose, value = self._claim_value(token)
        replace = self._stale_claim(user)
        claim_keys = [
            self.keys.user(user, UserKind.PROFILE),
            self.keys.user(user, UserKind.UNREACHABLE),
            sending,
        ]
        # The claim waits for a replica (redis.wait_replicas): after a failover, a claim the new
        # primary never heard of would let a second sender send the same alert.
        [answer] = await send(
            self.redis,
            lambda pipe: call(
                pipe,
                self._claim,
                claim_keys,
                [token, value, replace or b"", whose, mark_field, sent_field, "on" if kind else "watch"],
            ),
            scripts=[self._claim],
            topology=self.topology,
            protect=[sending],
        )
        self._contact()
        status = answer[0].decode()
        if status == "busy":  # another sender has this crossing in hand; look again later
            self._watch(user, answer[1])
            report.retry += 1
            return
        self._seen.pop(user, None)
        if status != "go":
            await self._drop(entry_id, user, token, status)
            report.dropped += 1
            return
        if replace is not None:
            log.warning(
                "took over the alert for %s from a sender that stopped or gave it up (its claim stood "
                "unchanged for %.0f s); sending it",
                user,
                self.reclaim_after,
            )
        lost = asyncio.Event()
        finished = asyncio.Event()
        renewing = asyncio.create_task(self._keep(sending, whose, lost, finished))
        self._keepers.add(renewing)
        renewing.add_done_callback(self._keepers.discard)
        try:
            await self._send(entry_id, fields, user, token, whose, answer, lost, report, kind)
        finally:
            # Told to end rather than cancelled: a cancellation can be lost inside a Redis call.
            finished.set()
            await asyncio.wait({renewing}, timeout=self.renew_every + 1.0)
            if not renewing.done():  # a renewal hangs on a Redis that went away; let it go
                renewing.cancel()

    async def _send(
        self,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        user: UserKey,
        token: str,
        whose: str,
        answer: list[bytes],
        lost: asyncio.Event,
        report: SendReport,
        kind: str = "",
    ) -> None:
        lang, alert_lang = answer[1].decode(), answer[2].decode()
        _, sent_field = watch_fields(kind)
        try:
            facts = self.codec.decode_alert(user, fields[b"facts"], kind)
        except (KeyError, ValueError, PiiError):
            await self._drop(entry_id, user, token, "unreadable", whose=whose)
            report.dropped += 1
            return
        if isinstance(facts, AlertFacts) and facts.latest_spend is None and answer[3]:
            facts = facts.model_copy(update={"latest_spend": await self._latest_spend(answer[3])})
        replies = notice_replies(self.catalogs.get(lang or alert_lang or self.default_locale), facts, self.tz)
        await self.pacer.wait()
        if lost.is_set():  # taken over while we waited (we were cut off): the other sender sends it
            log.warning("the alert for %s was taken over by another sender before it went; leaving it", user)
            report.retry += 1
            return
        try:
            await self.outlet.deliver(user, replies)
        except Undeliverable:
            await self._drop(entry_id, user, token, "undeliverable", whose=whose)
            report.dropped += 1
            return
        except Held:
            # The platform keeps it for the user's next message (WeChat outside the window): this
            # crossing is told (recorded like a send, so it is not queued again), and it is
            # recorded as deferred, not sent.
            await self._record_sent(entry_id, user, token, whose, deferred=True, sent_field=sent_field)
            report.deferred += 1
            return
        except Exception as e:  # not now: the entry stays pending and is taken over later
            await self._unclaim(keys=[self.keys.user(user, UserKind.SENDING)], args=[whose])
            log.warning("alert for %s not sent (%s); will try again", user, type(e).__name__)
            report.retry += 1
            return
        await self._record_sent(entry_id, user, token, whose, sent_field=sent_field)
        report.sent += 1

    def _stale_claim(self, user: UserKey) -> bytes | None:
        """Another sender's claim on ``user``'s alert that we have seen unchanged, with Redis
        reachable, for ``reclaim_after`` seconds: its sender stopped, and we may take it over."""
        seen = self._seen.get(user)
        if seen is None or time.monotonic() - seen[1] < self.reclaim_after:
            return None
        return seen[0]

    def _watch(self, user: UserKey, claim: bytes) -> None:
        seen = self._seen.get(user)
        if seen is None or seen[0] != claim:
            self._seen[user] = (claim, time.monotonic())
        if len(self._seen) > 10_000:  # claims of entries gone meanwhile; forget the oldest
            for old in sorted(self._seen, key=lambda u: self._seen[u][1])[:1000]:
                del self._seen[old]

    async def _keep(self, sending: str, whose: str, lost: asyncio.Event, finished: asyncio.Event) -> None:
        """Renew our claim until ``finished`` (the send and its record are done), so that nobody
        who watches it sees it stand still. While Redis is away the renewals fail, quietly."""
        while not finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), self.renew_every)
                return
            try:
                kept = await self._renew(keys=[sending], args=[whose, whose + secrets.token_hex(4)])
            except (RedisError, OSError):
                continue
            if not kept:  # taken over, or just recorded by us (this renewal crossed the record)
                lost.set()

    async def _record_sent(
        self,
        entry_id: bytes,
        user: UserKey,
        token: str,
        whose: str,
        *,
        deferred: bool = False,
        sent_field: str = "alert_sent",
    ) -> None:
        """Delivered: say so in Redis, trying until it is heard, however long Redis is away. The
        claim is renewed meanwhile (``_keep``), so no other sender sends the alert again."""
        delay = 0.05
        failed_at: float | None = None
        profile = self.keys.user(user, UserKind.PROFILE)

        def fill(pipe: Pipeline) -> None:
            call(
                pipe,
                self._record,
                [profile, self.keys.user(user, UserKind.SENDING)],
                [token, whose, sent_field],
            )
            self.reader.done(pipe, entry_id)
            if deferred:
                self._note_not_sent(pipe, user, token, "deferred")

        while True:
            try:
                # Waits for a replica (redis.wait_replicas): a failover must not forget that it was sent.
                await send(
                    self.redis, fill, scripts=[self._record], topology=self.topology, protect=[profile]
                )
                break
            except (RedisError, OSError) as e:
                if failed_at is None:
                    failed_at = time.monotonic()
                    log.warning(
                        "alert to %s delivered, not recorded yet (%s); keeping it claimed and trying "
                        "again until Redis is back",
                        user,
                        type(e).__name__,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._record_retry_max)
        if deferred:
            metrics.ALERTS_DEFERRED.labels(self.platform, "held").inc()
            if self.figures is not None:
                self.figures.add("alert_deferred", self.platform, "held")
            log.info("alert for %s deferred to their next message (crossing %s)", user, token)
            return
        metrics.ALERTS_SENT.labels(self.platform).inc()
        if self.figures is not None:
            self.figures.add("alert_sent", self.platform)
        if failed_at is None:
            log.info("alert sent to %s (crossing %s)", user, token)
        else:
            log.warning(
                "alert to %s recorded as sent (crossing %s), %.1f s after delivery",
                user,
                token,
                time.monotonic() - failed_at,
            )

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
        later = self.keys.outbox_later(self.platform, self.keys.shard_of(fields[b"user"].decode()))

        def fill(pipe: Pipeline) -> None:
            pipe.zadd(later, {record: int(until.timestamp() * 1000)})
            self.reader.done(pipe, entry_id)

        await send(self.redis, fill)
        metrics.ALERTS_DEFERRED.labels(self.platform, "quiet_hours").inc()
        if self.figures is not None:
            self.figures.add("alert_deferred", self.platform, "quiet_hours")

    def _note_not_sent(self, pipe: Pipeline, user: str, token: str, reason: str) -> None:
        """A record in the capped ``dropped`` stream: an alert not sent, and why (``deferred``:
        held by the platform for the user's next message)."""
        pipe.xadd(
            self.keys.outbox_dropped(),
            {"user": user, "token": token, "reason": reason, "at": str(int(time.time()))},
            maxlen=DROPPED_KEEP,
            approximate=True,
        )

    async def _drop(
        self, entry_id: bytes, user: str, token: str, reason: str, *, whose: str | None = None
    ) -> None:
        def fill(pipe: Pipeline) -> None:
            self._note_not_sent(pipe, user, token, reason)
            if whose is not None and user:
                call(pipe, self._unclaim, [self.keys.user(UserKey(user), UserKind.SENDING)], [whose])
            self.reader.done(pipe, entry_id)

        await send(self.redis, fill, scripts=[self._unclaim])
        metrics.ALERTS_DROPPED.labels(self.platform, reason).inc()
        if self.figures is not None:
            self.figures.add("alert_dropped", self.platform, reason)
        log.info("alert for %s dropped: %s", user or "?", reason)

"""Scheduled low-balance checks, shared by any number of workers.

The schedule is a sorted set of subscribed users by the time their next check is due. Every worker
runs ``move_due`` every ``alerts.poll_seconds``: one script takes the users now due, gives each the
time of their check in the next round, and adds them in batches to the ``checks`` stream — so each
user is moved once a round however many workers there are. The batches are handed out through a
consumer group (``bot.storage.streams``): each goes to one worker, and a batch whose worker died is taken
over by another. Checking a batch asks each insurance platform for its members' balances in one
call, judges each (``dialogs.crossing``), and for a crossing first writes the alert to the outbox,
then marks the user told; a check repeated after a crash finds the same crossing token, and the
sender recognises the repeat.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from bot import metrics
from bot.alerts.outbox import Outbox
from bot.alerts.schedule import Rounds
from bot.insurers.registry import PlatformRegistry
from bot.storage.batch import CROSS_SLOT, as_cluster, call, per_node, send
from bot.storage.codec import OLD_BINDING, StateCodec
from bot.storage.connect import Topology
from bot.storage.health import UNREACHABLE
from bot.storage.keys import Keys, UserKind
from bot.storage.streams import Entry, ShardedReader
from dialogs.crossing import AlertFacts, Verdict, Watch, judge
from dialogs.models import BalanceView, MemberId, PlatformName, UserKey
from dialogs.notices import (
    FAMILY_SEEN,
    KIND_FIELDS,
    AlertKind,
    CreditFacts,
    FamilyFacts,
    News,
    judge_credit,
    judge_family,
    token_of,
)
from dialogs.ports import Clock, ContributionView, InsuranceProblem, RelativeView

log = logging.getLogger(__name__)

GROUP = "checkers"
MOVE_LIMIT_BATCHES = 10
"""Batches moved by one run of the move script (it runs again at once while users are due)."""

# KEYS: schedule, checks. ARGV: now ms, most users to move, batch size, next round's start ms,
# jitter ms. Each user's offset in the round is a hash of their key, so it is the same every round.
_MOVE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due == 0 then return 0 end
local base, jitter, size = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[3])
for first = 1, #due, size do
  local last = math.min(first + size - 1, #due)
  local scores = {}
  for i = first, last do
    local offset = 0
    if jitter > 0 then offset = tonumber(string.sub(redis.sha1hex(due[i]), 1, 8), 16) % jitter end
    scores[#scores + 1] = string.format('%.0f', base + offset)
    scores[#scores + 1] = due[i]
  end
  redis.call('ZADD', KEYS[1], unpack(scores))
  redis.call('XADD', KEYS[2], '*', 'users', table.concat(due, ' ', first, last))
end
return #due
"""

# KEYS: the profiles of a batch of users. Seven values each, in order (nil where missing): the
# binding's head (``b``, or the whole binding of a user bound before that layout), threshold, alert,
# alert_sent, and the other kinds' watches: credit, family, family_seen. One command for the batch,
# where a pipeline of HMGETs costs the client as much again per user.
_READ = """
local out = {}
for _, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'b', 'threshold', 'alert', 'alert_sent', 'binding', 'credit', 'family', 'family_seen')
  out[#out + 1] = v[1] or v[5]; out[#out + 1] = v[2]; out[#out + 1] = v[3]; out[#out + 1] = v[4]
  out[#out + 1] = v[6]; out[#out + 1] = v[7]; out[#out + 1] = v[8]
end
return out
"""
ROW = 7

# The same on a cluster, for the users whose keys one master holds (their names in ARGV: see
# bot.storage.batch.CROSS_SLOT): one table per user.
_READ_CLUSTER = (
    CROSS_SLOT
    + """
local out = {}
for i, key in ipairs(ARGV) do
  local v = redis.call('HMGET', key, 'b', 'threshold', 'alert', 'alert_sent', 'binding', 'credit', 'family', 'family_seen')
  out[i] = {v[1] or v[5], v[2], v[3], v[4], v[6], v[7], v[8]}
end
return out
"""
)

PROFILE_FIELDS = ("b", "threshold", "alert", "alert_sent", OLD_BINDING, *KIND_FIELDS)

# KEYS: the user's profile. ARGV: the threshold and watch the check saw, the watch to write.
_MARK = """
if redis.call('HGET', KEYS[1], 'threshold') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'alert') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'alert', ARGV[3])
return 1
"""

# KEYS: the user's profile. ARGV: the kind's field, the watch the check saw, the watch to write, and
# for the family the field of its figures and the figures to write ("" for none).
_MARK_KIND = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], ARGV[4], ARGV[5]) end
return 1
"""

# KEYS: schedule. ARGV: users found with nothing to check (no threshold, no other kind on). One that just subscribed again has
# score 0 (set with the threshold) and stays.
_FORGET = """
local n = 0
for _, user in ipairs(ARGV) do
  local score = redis.call('ZSCORE', KEYS[1], user)
  if score and tonumber(score) > 0 then n = n + redis.call('ZREM', KEYS[1], user) end
end
return n
"""


@dataclass(slots=True)
class CheckReport:
    checked: int = 0
    alerts: int = 0
    rearmed: int = 0
    unknown: int = 0
    """No sure balance (a platform problem, a stale figure, no personal account): tried next round."""
    unsubscribed: int = 0
    unreachable: int = 0
    notices: int = 0
    """Alerts of the other kinds queued (a credit arrived, a family member spent)."""

    def add(self, other: CheckReport) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(slots=True)
class _Subscriber:
    user: UserKey
    platform: PlatformName
    member_id: MemberId
    threshold_raw: str
    threshold: Decimal | None
    mark: str
    watch: Watch
    balance: BalanceView | InsuranceProblem | None = field(default=None)
    credit: str | None = None
    """The credit alert's watch (``dialogs.notices``), None when it is off."""
    family: str | None = None
    family_seen: str | None = None
    months: tuple[ContributionView, ...] | None = None
    relatives: tuple[RelativeView, ...] | None = None


class Checker:
    def __init__(
        self,
        redis: Redis,
        *,
        keys: Keys,
        codec: StateCodec,
        insurance: PlatformRegistry,
        outbox: Outbox,
        rounds: Rounds,
        clock: Clock,
        consumer: str,
        batch_size: int = 100,
        platform_concurrency: int = 4,
        reclaim_after_seconds: float = 60.0,
        topology: Topology | None = None,
    ) -> None:
        self.redis = redis
        self.topology = topology or Topology()
        self.keys = keys
        self.codec = codec
        self.insurance = insurance
        self.outbox = outbox
        self.rounds = rounds
        self.clock = clock
        self.batch_size = batch_size
        self.concurrency = platform_concurrency
        self.reader = ShardedReader(
            redis,
            [keys.checks(shard) for shard in range(keys.shards)],
            GROUP,
            consumer,
            reclaim_after_seconds=reclaim_after_seconds,
        )
        self._cluster = as_cluster(redis)
        self._read_cluster = redis.register_script(_READ_CLUSTER)
        self._move = redis.register_script(_MOVE)
        self._read = redis.register_script(_READ)
        self._mark = redis.register_script(_MARK)
        self._forget = redis.register_script(_FORGET)
        self._mark_kind = redis.register_script(_MARK_KIND)
        self._slots: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(platform_concurrency)
        )

    # -- the schedule ---------------------------------------------------------------------------

    async def move_due(self) -> int:
        """Move every user now due into the checks stream; returns how many were moved."""
        now = self.clock.now()
        now_ms = int(now.timestamp() * 1000)
        base_ms = int(self.rounds.next_start(now).timestamp() * 1000)
        jitter_ms = int(self.rounds.jitter.total_seconds() * 1000)
        limit = self.batch_size * MOVE_LIMIT_BATCHES
        args = [now_ms, limit, self.batch_size, base_ms, jitter_ms]

        async def move(shard: int) -> int:
            keys = [self.keys.schedule(shard), self.keys.checks(shard)]
            total = 0
            while True:
                moved = int(await self._move(keys=keys, args=args))
                total += moved
                if moved < limit:
                    return total

        return sum(await asyncio.gather(*(move(shard) for shard in range(self.keys.shards))))

    # -- the checks -----------------------------------------------------------------------------

    async def work(self, block_ms: int = 1000) -> CheckReport:
        """Take batches (up to ``platform_concurrency`` at once), check them, acknowledge them."""
        entries = await self.reader.take(self.concurrency, block_ms)
        report = CheckReport()
        if not entries:
            return report
        for part in await asyncio.gather(*(self._entry(entry) for entry in entries)):
            report.add(part)
        return report

    async def _entry(self, entry: Entry) -> CheckReport:
        entry_id, fields = entry
        users = [UserKey(u) for u in fields.get(b"users", b"").decode().split()]
        report = await self.check(users)
        if report.unknown:
            log.info(
                "%d of %d users had no sure balance (platform problem or syncing); checked again next round",
                report.unknown,
                report.checked,
            )
        await send(self.redis, lambda pipe: self.reader.done(pipe, entry_id))
        return report

    async def check(self, users: list[UserKey]) -> CheckReport:
        """Check these users now: queue an alert for each new crossing, re-arm those back above."""
        report = CheckReport(checked=len(users))
        metrics.ALERTS_CHECKED.inc(len(users))
        subscribers, gone = await self._load(users)
        if gone:
            report.unsubscribed = await self._forget_all(gone)
        by_platform: defaultdict[PlatformName, list[_Subscriber]] = defaultdict(list)
        for s in subscribers:
            by_platform[s.platform].append(s)
        await asyncio.gather(*(self._fetch(platform, group) for platform, group in by_platform.items()))

        crossings: list[tuple[_Subscriber, BalanceView]] = []
        rearm: list[_Subscriber] = []
        for s in subscribers:
            if s.threshold is None:
                continue
            balance = s.balance
            if not isinstance(balance, BalanceView):
                report.unknown += 1
                continue
            verdict = judge(s.threshold, s.watch, balance)
            if verdict is Verdict.ALERT:
                crossings.append((s, balance))
            elif verdict is Verdict.REARM:
                rearm.append(s)
            elif balance.stale or balance.personal_account is None:
                report.unknown += 1
        if crossings:
            sent, unreachable = await self._alert(crossings)
            report.alerts += sent
            report.unreachable += unreachable
        if rearm:

            def fill(pipe: Pipeline) -> None:
                for s in rearm:
                    fresh = Watch(secrets.token_hex(6), told=False).mark()
                    profile = self.keys.user(s.user, UserKind.PROFILE)
                    call(pipe, self._mark, [profile], [s.threshold_raw, s.mark, fresh])

            report.rearmed += sum(map(int, await send(self.redis, fill, scripts=[self._mark])))
        await self._kinds(subscribers, report)
        return report

    async def _kinds(self, subscribers: list[_Subscriber], report: CheckReport) -> None:
        """The other alert kinds: a new credit, a family member's spending. Their data is asked one
        member at a time (the platforms have no batch call for it), under the same per-platform
        limit as the balances."""
        found_at = self.clock.now()
        year = found_at.astimezone(self.rounds.tz).year
        news: list[tuple[_Subscriber, AlertKind, News[CreditFacts] | News[FamilyFacts]]] = []
        for s in subscribers:
            if s.credit is not None and s.months is not None:
                credit = judge_credit(s.credit, s.months)
                if credit is not None:
                    news.append((s, AlertKind.CREDIT, credit))
            if s.family is not None and s.relatives is not None:
                family = judge_family(s.family, s.family_seen, year, s.relatives, found_at)
                if family is not None:
                    news.append((s, AlertKind.FAMILY, family))
        if not news:
            return
        told = [n for n in news if n[2].facts is not None]
        if told:

            def ask(pipe: Pipeline) -> None:
                for s, _, _ in told:
                    pipe.exists(self.keys.user(s.user, UserKind.UNREACHABLE))

            gone = await send(self.redis, ask)
            reachable = [n for n, away in zip(told, gone, strict=True) if not away]
            report.unreachable += len(told) - len(reachable)
            unreachable = {(s.user, k) for (s, k, _), away in zip(told, gone, strict=True) if away}
            news = [n for n in news if (n[0].user, n[1]) not in unreachable]

            def put(pipe: Pipeline) -> None:
                for s, kind, item in reachable:
                    assert item.facts is not None
                    self.outbox.put(pipe, s.user, token_of(item.mark), item.facts, found_at, kind=kind.value)

            if reachable:
                streams = {self.outbox.stream_of(s.user) for s, _, _ in reachable}
                await send(self.redis, put, topology=self.topology, protect=sorted(streams))
                for s, kind, _ in reachable:
                    metrics.ALERTS_QUEUED.labels(metrics.platform_of(s.user)).inc()
                    log.info("%s alert queued for %s", kind.value, s.user)
                report.notices += len(reachable)

        def mark(pipe: Pipeline) -> None:
            for s, kind, item in news:
                before = s.credit if kind is AlertKind.CREDIT else s.family
                seen = [FAMILY_SEEN, item.seen] if item.seen is not None else ["", ""]
                call(
                    pipe,
                    self._mark_kind,
                    [self.keys.user(s.user, UserKind.PROFILE)],
                    [kind.value, before or "", item.mark, *seen],
                )

        # A crash between the outbox and the mark queues the same token again: the sender sends it once.
        await send(self.redis, mark, scripts=[self._mark_kind])

    async def _forget_all(self, gone: list[str]) -> int:
        by_shard: defaultdict[int, list[str]] = defaultdict(list)
        for user in gone:
            by_shard[self.keys.shard_of(user)].append(user)
        counts = await asyncio.gather(
            *(self._forget(keys=[self.keys.schedule(shard)], args=users) for shard, users in by_shard.items())
        )
        return sum(map(int, counts))

    async def _read_profiles(self, users: list[UserKey]) -> list[list[bytes | None]]:
        """Four fields of each user's profile. One script for the batch on one Redis; on a cluster
        one script per master, in parallel, or (while slots move) an HMGET per user, pipelined."""
        profiles = [self.keys.user(user, UserKind.PROFILE) for user in users]
        if self._cluster is not None:
            rows = await per_node(self._cluster, self._read_cluster, [[p] for p in profiles])
            if rows is not None:
                return rows

            def fill(pipe: Pipeline) -> None:
                for profile in profiles:
                    pipe.hmget(profile, PROFILE_FIELDS)

            rows = await send(self.redis, fill)
            return [
                [head, threshold, mark, sent, *kinds] if head else [old, threshold, mark, sent, *kinds]
                for head, threshold, mark, sent, old, *kinds in rows
            ]
        flat = await self._read(keys=profiles)
        return [flat[i : i + ROW] for i in range(0, len(flat), ROW)]

    async def _load(self, users: list[UserKey]) -> tuple[list[_Subscriber], list[str]]:
        rows = await self._read_profiles(users)
        subscribers: list[_Subscriber] = []
        gone: list[str] = []
        for user, (binding, threshold, mark, sent, credit, family, family_seen) in zip(
            users, rows, strict=True
        ):
            if binding is None or (threshold is None and credit is None and family is None):
                gone.append(user)
                continue
            amount: Decimal | None = None
            if threshold is not None:
                try:
                    amount = Decimal(threshold.decode())
                except InvalidOperation:
                    log.warning("ignoring an unreadable threshold for %s", user)
                    if credit is None and family is None:
                        continue
            platform, member_id = self.codec.binding_member(binding)
            mark_text = mark.decode() if mark is not None else ""
            subscribers.append(
                _Subscriber(
                    user=user,
                    platform=platform,
                    member_id=member_id,
                    threshold_raw=threshold.decode() if threshold is not None else "",
                    threshold=amount,
                    mark=mark_text,
                    watch=Watch.parse(mark_text, sent.decode() if sent is not None else None),
                    credit=credit.decode() if credit is not None else None,
                    family=family.decode() if family is not None else None,
                    family_seen=family_seen.decode() if family_seen is not None else None,
                )
            )
        return subscribers, gone

    async def _fetch(self, platform: PlatformName, group: list[_Subscriber]) -> None:
        watched = [s for s in group if s.threshold is not None]
        if watched:
            async with self._slots[platform]:
                balances = await self.insurance.balances(platform, [s.member_id for s in watched])
            for s, balance in zip(watched, balances, strict=True):
                s.balance = balance
        asked = [s for s in group if s.credit is not None or s.family is not None]
        await asyncio.gather(*(self._fetch_kinds(platform, s) for s in asked))

    async def _fetch_kinds(self, platform: PlatformName, s: _Subscriber) -> None:
        """What the credit and family alerts watch; left None (nothing judged) when the platform
        cannot answer now."""
        async with self._slots[platform]:
            if s.credit is not None:
                try:
                    s.months = await self.insurance.contributions(platform, s.member_id)
                except InsuranceProblem as problem:
                    log.info("no contributions for %s now (%s)", s.user, problem.code)
            if s.family is not None:
                try:
                    s.relatives = await self.insurance.family(platform, s.member_id)
                except InsuranceProblem as problem:
                    log.info("no family for %s now (%s)", s.user, problem.code)

    async def _alert(self, crossings: list[tuple[_Subscriber, BalanceView]]) -> tuple[int, int]:
        """Outbox first, then the mark: a crash in between queues the same crossing again next time,
        and the sender sends it once. Users the chat platform cannot reach get nothing queued."""

        def ask(pipe: Pipeline) -> None:
            for s, _ in crossings:
                pipe.exists(self.keys.user(s.user, UserKind.UNREACHABLE))

        reachable = [c for c, gone in zip(crossings, await send(self.redis, ask), strict=True) if not gone]
        found_at = self.clock.now()

        def put(pipe: Pipeline) -> None:
            for s, balance in reachable:
                assert balance.personal_account is not None  # judge() alerts only on a personal account
                assert s.threshold is not None  # only those with a threshold are judged
                facts = AlertFacts(
                    balance=balance.personal_account, threshold=s.threshold, as_of=balance.as_of
                )
                self.outbox.put(pipe, s.user, s.watch.token, facts, found_at)

        if reachable:
            # The alerts wait for a replica (redis.wait_replicas) before the watches are marked told:
            # a failover must not keep the mark and lose the alert.
            streams = {self.outbox.stream_of(s.user) for s, _ in reachable}
            await send(self.redis, put, topology=self.topology, protect=sorted(streams))
        await self._mark_told(reachable)
        for s, _ in reachable:
            metrics.ALERTS_QUEUED.labels(metrics.platform_of(s.user)).inc()
            log.info("alert queued for %s (crossing %s)", s.user, s.watch.token)
        return len(reachable), len(crossings) - len(reachable)

    async def _mark_told(self, reachable: list[tuple[_Subscriber, BalanceView]]) -> None:
        """The alerts are in the outbox: mark the watches told, trying until Redis hears it (a
        Redis away now would leave the batch to be checked again). A repeat is harmless anyway: it
        finds the same crossing token, and the sender drops the second copy as a duplicate."""
        delay = 0.05
        failed_at: float | None = None

        def fill(pipe: Pipeline) -> None:
            for s, _ in reachable:
                told = Watch(s.watch.token, told=True).mark()
                call(
                    pipe,
                    self._mark,
                    [self.keys.user(s.user, UserKind.PROFILE)],
                    [s.threshold_raw, s.mark, told],
                )

        while reachable:
            try:
                await send(self.redis, fill, scripts=[self._mark])
                break
            except UNREACHABLE as e:
                if failed_at is None:
                    failed_at = time.monotonic()
                    log.warning(
                        "%d alerts queued, their watches not marked yet (%s); trying again until Redis is back",
                        len(reachable),
                        type(e).__name__,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        if failed_at is not None:
            log.warning(
                "watches of %d queued alerts marked, %.1f s late",
                len(reachable),
                time.monotonic() - failed_at,
            )

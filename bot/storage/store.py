"""The Redis store behind the dialogs' ``UserStore`` port, guarded per user.

An update costs two round trips: one pipeline that takes the user's guard and reads the session and
profile, and one script that checks the guard is still ours, writes what the step decided and lets
the guard go. The guard is a token under the user's ``lock`` key with a short expiry, so any number
of processes can serve one user without losing a write; inside one process an ``asyncio.Lock`` per
user queues messages before they contend in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from bot.storage.batch import CROSS_SLOT, as_cluster, call, per_node, send
from bot.storage.codec import OLD_BINDING, StateCodec
from bot.storage.connect import Topology
from bot.storage.health import UNREACHABLE, RedisHealth
from bot.storage.keys import Keys, UserKind
from dialogs.crossing import Watch
from dialogs.models import Outcome, UserKey, UserState
from dialogs.notices import FAMILY_SEEN, ON, AlertKind
from dialogs.ports import Step, StoreUnavailable

log = logging.getLogger(__name__)

# KEYS: lock, session, profile, balance, unreachable, then the user's other keys (erased with the rest).
# The user wrote, so they are reachable again: every write drops the unreachable mark.
# ARGV: token, mode ("write"|"erase"), session json ("" deletes), session ttl ms,
#       balance ("" keeps, "-" deletes, else the value), balance ttl ms,
#       number of profile fields to set n, n field/value pairs, then fields to delete.
_WRITE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == 'erase' then
  for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
  redis.call('DEL', KEYS[1])
  return 1
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
end
redis.call('DEL', KEYS[5])
if ARGV[5] == '-' then
  redis.call('DEL', KEYS[4])
elseif ARGV[5] ~= '' then
  redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
end
local n = tonumber(ARGV[7])
local i = 8
if n > 0 then
  local pairs = {}
  for j = i, i + 2 * n - 1 do pairs[#pairs + 1] = ARGV[j] end
  redis.call('HSET', KEYS[3], unpack(pairs))
end
for j = i + 2 * n, #ARGV do redis.call('HDEL', KEYS[3], ARGV[j]) end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: session, profile, balance, unreachable[, lock]. ARGV (with the lock): token, lock ms.
# One command instead of a pipeline of four: the same round trip, far less client work. With the
# lock key it first takes the guard, and reads nothing when the guard is someone else's.
_READ = """
if #KEYS == 5 and not redis.call('SET', KEYS[5], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return {redis.call('GET', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('GET', KEYS[3]),
        redis.call('EXISTS', KEYS[4])}
"""

# KEYS: session, profile, balance, unreachable of each of several users, in that order. One reply
# per user, as _READ's. Several users' peeks that arrive together share one command: redis-py's
# per-command work is the largest cost of a message that only reads.
_READ_MANY = """
local out = {}
for i = 1, #KEYS, 4 do
  out[#out + 1] = {redis.call('GET', KEYS[i]), redis.call('HGETALL', KEYS[i + 1]),
                   redis.call('GET', KEYS[i + 2]), redis.call('EXISTS', KEYS[i + 3])}
end
return out
"""

_READ_MANY_CLUSTER = CROSS_SLOT + _READ_MANY.replace("KEYS", "ARGV")
"""The same on a cluster, for the users whose keys one master holds (their names in ARGV: see
``bot.storage.batch.CROSS_SLOT``)."""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class UserBusy(Exception):
    """Another update for this user held the guard for longer than we may wait."""


class GuardLost(Exception):
    """Our guard expired while the step ran, so its result was not saved."""


class _LocalLocks:
    """One ``asyncio.Lock`` per user with updates in flight; forgotten when the last one leaves."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class RedisStore:
    def __init__(
        self,
        redis: Redis,
        *,
        keys: Keys,
        codec: StateCodec,
        session_ttl_seconds: int,
        balance_ttl_seconds: int = 60,
        lock_seconds: float = 30.0,
        lock_wait_seconds: float = 10.0,
        health: RedisHealth | None = None,
        topology: Topology | None = None,
    ) -> None:
        self.redis = redis
        self.topology = topology or Topology()
        self._cluster = as_cluster(redis)
        self.health = health or RedisHealth("?")
        self.keys = keys
        self.codec = codec
        self.session_ttl_ms = session_ttl_seconds * 1000
        self.balance_ttl_ms = max(1, balance_ttl_seconds) * 1000
        self.lock_ms = int(lock_seconds * 1000)
        self.lock_wait = lock_wait_seconds
        self._local = _LocalLocks()
        self._write = redis.register_script(_WRITE)
        self._read_script = redis.register_script(_READ)
        self._read_many = redis.register_script(_READ_MANY)
        self._read_many_cluster = redis.register_script(_READ_MANY_CLUSTER)
        self._peeks: list[tuple[UserKey, asyncio.Future[list[Any]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._release = redis.register_script(_RELEASE)

    async def update(self, user: UserKey, step: Step) -> Outcome:
        """As the port says; a Redis that does not answer (here or inside ``step``) is
        ``StoreUnavailable``, logged once by the health watch however many messages meet it."""
        try:
            outcome = await self._update(user, step)
        except UNREACHABLE as e:
            self.health.failed(e)
            raise StoreUnavailable(user) from e
        self.health.answered()
        return outcome

    async def _update(self, user: UserKey, step: Step) -> Outcome:
        async with self._local.hold(user):
            token, state = await self._acquire(user)
            try:
                outcome = await step(state)
            except BaseException:
                await self._release(keys=[self.keys.user(user, UserKind.LOCK)], args=[token])
                raise
            await self._save(user, token, outcome)
            return outcome

    async def peek(self, user: UserKey) -> UserState:
        """The user's state without taking the guard (for reading only): one round trip, shared
        with the other peeks asked for in the same turn of the event loop."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._peeks.append((user, future))
        if len(self._peeks) == 1:
            task = asyncio.create_task(self._read_peeks())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            answer = await future
        except UNREACHABLE as e:
            self.health.failed(e)
            raise StoreUnavailable(user) from e
        self.health.answered()
        return self._decode(user, *answer)

    async def _read_peeks(self) -> None:
        await asyncio.sleep(0)  # let the other updates of this turn ask too
        peeks, self._peeks = self._peeks, []
        try:
            if len(peeks) == 1:
                answers = [await self._read_script(keys=self._read_keys(peeks[0][0]))]
            elif self._cluster is not None:
                # One script per master for the users whose keys it holds, in parallel; while slots
                # move, one per user (a script's keys share a slot), pipelined.
                groups = [self._read_keys(user) for user, _ in peeks]
                found = await per_node(self._cluster, self._read_many_cluster, groups)
                if found is None:

                    def fill(pipe: Pipeline) -> None:
                        for keys in groups:
                            call(pipe, self._read_script, keys)

                    found = await send(self.redis, fill, scripts=[self._read_script])
                answers = found
            else:
                keys = [key for user, _ in peeks for key in self._read_keys(user)]
                answers = await self._read_many(keys=keys)
        except Exception as e:
            for _, future in peeks:
                if not future.done():
                    future.set_exception(e)
            return
        except BaseException:  # cancelled (shutting down): so are the peeks waiting on it
            for _, future in peeks:
                future.cancel()
            raise
        for (_, future), answer in zip(peeks, answers, strict=True):
            if not future.done():  # its caller may have been cancelled meanwhile
                future.set_result(answer)

    async def mark_unreachable(self, user: UserKey) -> None:
        """The chat platform cannot reach the user (a 403): nothing unprompted until they write again."""
        await self.redis.set(self.keys.user(user, UserKind.UNREACHABLE), b"1")

    def _read_keys(self, user: UserKey) -> list[str]:
        kinds = (UserKind.SESSION, UserKind.PROFILE, UserKind.BALANCE, UserKind.UNREACHABLE)
        return [self.keys.user(user, kind) for kind in kinds]

    def _decode(
        self,
        user: UserKey,
        session_raw: bytes | None,
        profile_raw: list[bytes],
        balance_raw: bytes | None,
        unreachable: int,
    ) -> UserState:
        fields = dict(zip(profile_raw[::2], profile_raw[1::2], strict=True))
        return UserState(
            session=self.codec.decode_session(user, session_raw),
            profile=self.codec.decode_profile(user, fields),
            balance=self.codec.decode_balance(user, balance_raw),
            unreachable=bool(unreachable),
        )

    async def _acquire(self, user: UserKey) -> tuple[str, UserState]:
        token = secrets.token_hex(12)
        lock_key = self.keys.user(user, UserKind.LOCK)
        deadline = time.monotonic() + self.lock_wait
        delay = 0.005
        keys = [*self._read_keys(user), lock_key]
        while True:
            raw = await self._read_script(keys=keys, args=[token, self.lock_ms])
            if raw:
                try:
                    return token, self._decode(user, *raw)
                except BaseException:
                    await self._release(keys=[lock_key], args=[token])
                    raise
            if time.monotonic() >= deadline:
                raise UserBusy(user)
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not a secret
            delay = min(delay * 2, 0.2)

    async def _save(self, user: UserKey, token: str, outcome: Outcome) -> None:
        first = (UserKind.LOCK, UserKind.SESSION, UserKind.PROFILE, UserKind.BALANCE, UserKind.UNREACHABLE)
        keys = [self.keys.user(user, kind) for kind in first]
        args: list[Any]
        profile_changed = outcome.erase
        if outcome.erase:
            keys += [self.keys.user(user, kind) for kind in UserKind if kind not in first]
            args = [token, "erase"]
        else:
            sets: list[str | bytes] = []
            dels: list[str] = []
            if outcome.set_binding is not None:
                for name, value in self.codec.encode_binding(user, outcome.set_binding).items():
                    sets += [name, value]
                dels.append(OLD_BINDING)
            if outcome.set_threshold is not None:
                # A new threshold arms a new watch (a fresh crossing token), checked at the next tick.
                sets += [
                    "threshold",
                    str(outcome.set_threshold),
                    "alert",
                    Watch(secrets.token_hex(6), False).mark(),
                ]
                if outcome.alert_locale is not None:
                    sets += ["alert_lang", outcome.alert_locale]
            elif outcome.clear_threshold:
                dels += ["threshold", "alert", "alert_sent"]
                if not outcome.keep_checking:
                    dels.append("alert_lang")
            for kind in sorted(outcome.kinds_on):
                # ``on``: the first check takes the platform's figures as its starting point.
                sets += [kind, ON]
            if outcome.kinds_on and outcome.alert_locale is not None and outcome.set_threshold is None:
                sets += ["alert_lang", outcome.alert_locale]
            for kind in sorted(outcome.kinds_off):
                dels += [kind, AlertKind(kind).sent_field]
                if kind == AlertKind.FAMILY:
                    dels.append(FAMILY_SEEN)
            if outcome.set_lang is not None:
                sets += ["lang", outcome.set_lang]
            session = self.codec.encode_session(user, outcome.session) or ""
            balance = ""
            if outcome.cache_balance is not None:
                balance = self.codec.encode_balance(user, outcome.cache_balance)
            elif outcome.set_binding is not None:
                balance = "-"  # a new binding: the cached balance was someone else's
            args = [token, "write", session, self.session_ttl_ms, balance, self.balance_ttl_ms]
            args += [len(sets) // 2, *sets, *dels]
            profile_changed = bool(sets or dels)
        schedule = self.keys.schedule_of(user)
        # A change to the profile (a completed bind, an alert set or turned off, a language) and an
        # erasure wait for a replica: a failover right after the user was told "bound" (or "erased")
        # must not undo it. A session alone does not: a half-done conversation is only retyped.
        protect = keys[2] if profile_changed else None
        if (outcome.set_threshold is not None or outcome.kinds_on) and not outcome.erase:
            # Scheduled before the threshold is written: a check that finds no threshold drops the
            # user, so a crash in between leaves nobody with a threshold and no checks.
            def fill(pipe: Pipeline) -> None:
                pipe.zadd(schedule, {user: 0})
                call(pipe, self._write, keys, args)

            written = (await self._send(fill, protect))[1]
        elif protect is not None:
            written = (await self._send(lambda pipe: call(pipe, self._write, keys, args), protect))[0]
        else:
            written = await self._write(keys=keys, args=args)
        if not written:
            log.warning("guard for %s expired before its update was saved", user)
            raise GuardLost(user)
        if outcome.erase or ((outcome.clear_threshold or outcome.kinds_off) and not outcome.keep_checking):
            await self.redis.zrem(schedule, user)

    async def _send(self, fill: Callable[[Pipeline], None], protect: str | None) -> list[Any]:
        """``protect``: the write waits for ``redis.wait_replicas`` replicas (``WAIT``, on the
        connection that made it)."""
        guarded = [] if protect is None else [protect]
        return await send(self.redis, fill, scripts=[self._write], topology=self.topology, protect=guarded)

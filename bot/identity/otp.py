"""One-time SMS codes for binding (NIST SP 800-63B, OWASP MFA cheat sheet), behind ``OtpPort``.

A code is 6 digits from ``secrets``, stored only as a keyed hash bound to the user and to that code's
nonce, compared in constant time, valid for ``code_ttl_seconds``, used once; a resend replaces it.
Each code allows ``max_attempts`` wrong tries. Sends are limited per user and per phone per hour and
spaced by ``resend_interval_seconds``. Failed bind attempts (voided codes, names or ID numbers the
platform rejects) within a window lock the user out of binding for ``lockout_seconds``. Failed
lookups of one ID number are also counted across all users, by the ID number's keyed hash: after
``max_failures_per_id`` within the window, nobody may look that ID number up until the window lets
the oldest of them go.

The code goes to the phone number the insurance platform has on file; the user never chooses it.
All decisions use the ``Clock`` port, so tests can move time; Redis expiries only clean up. Methods
are called inside the store's per-user guard, so one user's record needs no locking of its own; the
per-phone and per-ID counters are shared between users and are updated atomically in scripts.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from pydantic import SecretStr
from redis.asyncio import Redis

from bot import metrics
from bot.crypto.pii import PiiCipher, PiiError
from bot.identity.sms import SmsError, SmsGateway
from bot.storage.keys import Keys, UserKind
from dialogs.i18n import Catalogs
from dialogs.masking import mask_phone
from dialogs.models import UserKey
from dialogs.ports import (
    Clock,
    CodeCheck,
    CodeRefused,
    CodeSent,
    Failures,
    IdLookup,
    IdPaused,
    Refusal,
    Verdict,
)

log = logging.getLogger(__name__)

_HOUR = 3600.0
_CODE_FIELDS = ("code", "nonce", "exp", "tries")
_PHONE_FIELDS = ("phone",)

# KEYS: the phone's send log (a sorted set of send times). ARGV: now, window, limit, member.
# Returns -1 when the send is allowed (and recorded), else the time of the oldest send in the window.
_PHONE_SEND = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])))
return -1
"""

# The ID number's lookups: a sorted set of "f.<token>" (a failed lookup) and "r.<token>" (one running
# now) -> its time. A lookup holds a running place before it asks the platform, so that lookups
# running at once cannot pass the limit together; a place left by a process that died goes after
# ``_LOOKUP_LEASE`` seconds.
#
# KEYS: that set. ARGV: now, window, limit, lease, token. Returns -1 when the place is taken, -2 when
# running lookups fill what the limit leaves, else the time of the failure whose leaving the window
# lets lookups run again.
_ID_TAKE = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local failed, running = {}, 0
for i = 1, #entries, 2 do
  if string.sub(entries[i], 1, 2) == 'f.' then
    table.insert(failed, entries[i + 1])
  elseif tonumber(entries[i + 1]) > now - tonumber(ARGV[4]) then
    running = running + 1
  else
    redis.call('ZREM', KEYS[1], entries[i])
  end
end
if #failed >= limit then
  return failed[#failed - limit + 1]
end
if #failed + running >= limit then
  return -2
end
redis.call('ZADD', KEYS[1], ARGV[1], 'r.' .. ARGV[5])
redis.call('EXPIRE', KEYS[1], math.ceil(window))
return -1
"""

# KEYS: the same set. ARGV: now, window, token. The running place becomes a failure; returns the
# times of the failures within the window, oldest first.
_ID_FAIL = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREM', KEYS[1], 'r.' .. ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[1], 'f.' .. ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(window))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local failed = {}
for i = 1, #entries, 2 do
  if string.sub(entries[i], 1, 2) == 'f.' then
    table.insert(failed, entries[i + 1])
  end
end
return failed
"""
_LOOKUP_LEASE = 120.0
"""Longer than any lookup runs (``insurance.deadline_seconds`` is at most 120)."""
_BUSY_WAIT = 5.0
"""How long (real seconds) a lookup waits for running lookups of the same ID number to end."""


@dataclass(frozen=True, slots=True)
class OtpLimits:
    code_ttl_seconds: int = 300
    max_attempts: int = 5
    resend_interval_seconds: int = 60
    max_per_hour_per_user: int = 5
    max_per_hour_per_phone: int = 5
    lockout_after_failures: int = 3
    failure_window_seconds: int = 3600
    lockout_seconds: int = 900
    max_failures_per_id: int = 5
    code_digits: int = 6


class OtpService:
    def __init__(
        self,
        redis: Redis,
        *,
        keys: Keys,
        cipher: PiiCipher,
        gateway: SmsGateway,
        clock: Clock,
        catalogs: Catalogs,
        limits: OtpLimits,
        signature: str = "医保助手",
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.cipher = cipher
        self.gateway = gateway
        self.clock = clock
        self.catalogs = catalogs
        self.limits = limits
        self.signature = signature
        self._phone_send = redis.register_script(_PHONE_SEND)
        self._id_take = redis.register_script(_ID_TAKE)
        self._id_fail = redis.register_script(_ID_FAIL)
        self._ttl = int(
            max(_HOUR, limits.failure_window_seconds, limits.lockout_seconds, limits.code_ttl_seconds) + 60
        )

    # -- the record ----------------------------------------------------------------------------

    def _key(self, user: UserKey) -> str:
        return self.keys.user(user, UserKind.OTP)

    async def _load(self, user: UserKey) -> dict[str, str]:
        raw: dict[Any, Any] = await self.redis.hgetall(self._key(user))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def _save(self, user: UserKey, fields: dict[str, str], drop: tuple[str, ...] = ()) -> None:
        pipe = self.redis.pipeline(transaction=True)
        if drop:
            pipe.hdel(self._key(user), *drop)
        if fields:
            pipe.hset(self._key(user), mapping=cast("Mapping[Any, Any]", fields))
        pipe.expire(self._key(user), self._ttl)
        await pipe.execute()

    @staticmethod
    def _times(record: dict[str, str], field: str, since: float) -> list[float]:
        return [t for t in json.loads(record.get(field, "[]")) if t > since]

    def _locked(self, record: dict[str, str], now: float) -> datetime | None:
        until = float(record.get("locked", 0))
        return self._dt(until) if until > now else None

    def _dt(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, tz=self.clock.now().tzinfo)

    def _phone_field(self, user: UserKey, phone: str) -> dict[str, str]:
        """The phone a pending code goes to: encrypted, for /resend."""
        return {"phone": self.cipher.encrypt(phone, context=f"otp-phone|{user}")}

    def _hash(self, user: UserKey, nonce: str, code: str) -> str:
        return self.cipher.digest(f"{user}\x00{nonce}\x00{code}", purpose="otp")

    # -- the port ------------------------------------------------------------------------------

    @staticmethod
    def _count(user: UserKey, result: CodeSent | CodeRefused) -> CodeSent | CodeRefused:
        platform = metrics.platform_of(user)
        if isinstance(result, CodeSent):
            metrics.OTP_SENT.labels(platform).inc()
        else:
            metrics.OTP_REFUSED.labels(platform, result.reason.value).inc()
        return result

    async def send(self, user: UserKey, phone: SecretStr, locale: str) -> CodeSent | CodeRefused:
        return self._count(user, await self._send(user, phone, locale))

    async def resend(self, user: UserKey, locale: str) -> CodeSent | CodeRefused:
        return self._count(user, await self._resend(user, locale))

    async def verify(self, user: UserKey, code: str) -> CodeCheck:
        check = await self._verify(user, code)
        metrics.OTP_CHECKS.labels(metrics.platform_of(user), check.verdict.value).inc()
        return check

    async def locked_until(self, user: UserKey) -> datetime | None:
        return self._locked(await self._load(user), self.clock.now().timestamp())

    async def start_lookup(self, id_number: SecretStr) -> IdLookup | IdPaused:
        digest = self.cipher.digest(id_number.get_secret_value(), purpose="id")
        token = secrets.token_hex(8)
        lim = self.limits
        waited_until = time.monotonic() + _BUSY_WAIT
        while True:
            result = float(
                await self._id_take(
                    keys=[self.keys.id_lookups(digest)],
                    args=[
                        repr(self.clock.now().timestamp()),
                        lim.failure_window_seconds,
                        lim.max_failures_per_id,
                        _LOOKUP_LEASE,
                        token,
                    ],
                )
            )
            if result == -1:
                return IdLookup(slot=f"{digest}.{token}")
            if result >= 0:
                return IdPaused(until=self._dt(result + lim.failure_window_seconds))
            # Other lookups of this ID number are running and may yet fail: wait for them to end.
            if time.monotonic() >= waited_until:
                return IdPaused(until=self._dt(self.clock.now().timestamp() + _LOOKUP_LEASE), running=True)
            await asyncio.sleep(0.05)

    async def end_lookup(self, lookup: IdLookup) -> None:
        digest, _, token = lookup.slot.partition(".")
        await self.redis.zrem(self.keys.id_lookups(digest), f"r.{token}")

    async def record_failure(self, user: UserKey, lookup: IdLookup | None = None) -> Failures:
        record = await self._load(user)
        now = self.clock.now().timestamp()
        mine = await self._fail(user, record, now)
        if lookup is None:
            return mine
        window = self.limits.failure_window_seconds
        digest, _, token = lookup.slot.partition(".")
        raw = await self._id_fail(keys=[self.keys.id_lookups(digest)], args=[repr(now), window, token])
        times = [float(t) for t in raw]
        if mine.locked_until is not None:  # the user's own pause is the wider one
            return mine
        limit = self.limits.max_failures_per_id
        if len(times) >= limit:
            until = times[len(times) - limit] + window
            log.info("lookups of one ID number paused until %s", self._dt(until).isoformat())
            return Failures(
                left=0, pause_seconds=math.ceil(until - now), locked_until=self._dt(until), per_id=True
            )
        left = limit - len(times)
        if left < mine.left:
            # The next ``left`` failures, if they came now, would pause it until the oldest one leaves.
            return Failures(left=left, pause_seconds=math.ceil(times[0] + window - now), per_id=True)
        return mine

    def _failures(self, fails: list[float]) -> Failures:
        left = max(0, self.limits.lockout_after_failures - len(fails))
        return Failures(left=left, pause_seconds=self.limits.lockout_seconds)

    async def _fail(
        self, user: UserKey, record: dict[str, str], now: float, drop: tuple[str, ...] = ()
    ) -> Failures:
        fails = [*self._times(record, "fails", now - self.limits.failure_window_seconds), now]
        if len(fails) >= self.limits.lockout_after_failures:
            until = now + self.limits.lockout_seconds
            await self._save(user, {"locked": repr(until), "fails": "[]"}, drop=(*_CODE_FIELDS, *drop))
            log.info("bind lockout for %s until %s", user, self._dt(until).isoformat())
            return Failures(left=0, pause_seconds=self.limits.lockout_seconds, locked_until=self._dt(until))
        await self._save(user, {"fails": json.dumps(fails)}, drop=drop)
        return self._failures(fails)

    async def _send(self, user: UserKey, phone: SecretStr, locale: str) -> CodeSent | CodeRefused:
        record = await self._load(user)
        return await self._issue(user, record, phone.get_secret_value(), locale)

    async def _resend(self, user: UserKey, locale: str) -> CodeSent | CodeRefused:
        record = await self._load(user)
        if "phone" not in record:
            return CodeRefused(Refusal.NO_CODE)
        try:
            phone = self.cipher.decrypt(record["phone"], context=f"otp-phone|{user}")
        except PiiError:
            log.warning("the pending phone for %s does not decrypt; a new bind is needed", user)
            return CodeRefused(Refusal.NO_CODE)
        return await self._issue(user, record, phone, locale)

    async def _issue(
        self, user: UserKey, record: dict[str, str], phone: str, locale: str
    ) -> CodeSent | CodeRefused:
        lim = self.limits
        now = self.clock.now().timestamp()
        locked = self._locked(record, now)
        if locked is not None:
            return CodeRefused(Refusal.LOCKED_OUT, locked)
        digest = self.cipher.digest(phone, purpose="phone")
        masked = mask_phone(phone)
        last = float(record.get("sent", 0))
        # The interval spaces codes to one phone; a bind for another member is not a resend.
        if now - last < lim.resend_interval_seconds and record.get("sent_pd") == digest:
            # Keep the phone so that /resend works once the wait is over.
            await self._save(user, self._phone_field(user, phone))
            return CodeRefused(Refusal.TOO_SOON, self._dt(last + lim.resend_interval_seconds), masked)
        sends = self._times(record, "sends", now - _HOUR)
        if len(sends) >= lim.max_per_hour_per_user:
            return CodeRefused(Refusal.HOURLY_LIMIT, self._dt(min(sends) + _HOUR))
        oldest = await self._phone_send(
            keys=[self.keys.phone_sends(digest)],
            args=[repr(now), _HOUR, lim.max_per_hour_per_phone, secrets.token_hex(8)],
        )
        if float(oldest) >= 0:
            return CodeRefused(Refusal.HOURLY_LIMIT, self._dt(float(oldest) + _HOUR))

        code = f"{secrets.randbelow(10**lim.code_digits):0{lim.code_digits}d}"
        nonce = secrets.token_hex(8)
        await self._save(
            user,
            {
                "code": self._hash(user, nonce, code),
                "nonce": nonce,
                "exp": repr(now + lim.code_ttl_seconds),
                "tries": "0",
                "sent": repr(now),
                "sent_pd": digest,
                "sends": json.dumps([*sends, now]),
                **self._phone_field(user, phone),
            },
        )
        t = self.catalogs.get(locale)
        text = t.gettext(
            "[{signature}] Your code to link your medical-insurance account is {code}, valid for {minutes} "
            "minutes. Never share it: no one from the insurance service will ever ask you for it."
        ).format(signature=self.signature, code=code, minutes=lim.code_ttl_seconds // 60)
        try:
            await self.gateway.send(phone, text)
        except SmsError as e:
            log.warning("SMS to %s failed: %s", masked, e)
            await self._save(user, {}, drop=_CODE_FIELDS)
            return CodeRefused(Refusal.SMS_FAILED)
        log.info("sent a bind code to %s for %s", masked, user)
        return CodeSent(masked_phone=masked, expires_at=self._dt(now + lim.code_ttl_seconds))

    async def _verify(self, user: UserKey, code: str) -> CodeCheck:
        record = await self._load(user)
        now = self.clock.now().timestamp()
        locked = self._locked(record, now)
        if locked is not None:
            return CodeCheck(Verdict.LOCKED_OUT, locked_until=locked)
        if "code" not in record:
            return CodeCheck(Verdict.NO_CODE)
        if now >= float(record["exp"]):
            await self._save(user, {}, drop=_CODE_FIELDS)
            return CodeCheck(Verdict.EXPIRED)
        if hmac.compare_digest(self._hash(user, record["nonce"], code), record["code"]):
            await self._save(user, {"fails": "[]"}, drop=(*_CODE_FIELDS, *_PHONE_FIELDS))
            log.info("bind code accepted for %s", user)
            return CodeCheck(Verdict.OK)
        tries = int(record.get("tries", 0)) + 1
        if tries < self.limits.max_attempts:
            await self._save(user, {"tries": str(tries)})
            fails = self._times(record, "fails", now - self.limits.failure_window_seconds)
            return CodeCheck(
                Verdict.WRONG, tries_left=self.limits.max_attempts - tries, failures=self._failures(fails)
            )
        log.info("bind code voided after %d wrong tries for %s", tries, user)
        failures = await self._fail(user, record, now, drop=_CODE_FIELDS)
        return CodeCheck(Verdict.VOID, locked_until=failures.locked_until, failures=failures)

    async def discard(self, user: UserKey) -> None:
        await self._save(user, {}, drop=(*_CODE_FIELDS, *_PHONE_FIELDS))

"""Everything kept about one user, item by item and masked; their export; their erasure.

The items, in the order ``/mydata`` shows them (``HeldItem.what``, ``kept``):

- the profile (until /unbind): ``binding.platform``, ``binding.member_id`` (masked),
  ``binding.id_number``, ``binding.phone`` (masked; stored encrypted), ``binding.bound_at``,
  ``binding.personal_account``, ``alert.threshold``, ``alert.state``, ``alert.language``,
  ``alert.credit``, ``alert.family``, ``alert.family_seen`` (how many relatives it has figures of),
  ``settings.language``;
- ``session`` and what a bind in progress gathered (``session.name``, ``session.id_number``,
  ``session.phone``), deleted after ``redis.session_idle_seconds`` of silence;
- ``balance``: the last balance fetched (``insurance.balance_cache_seconds``);
- the SMS-code record (``otp.code``: only a keyed hash, ``otp.sends``, ``otp.failures``,
  ``otp.locked_until``), deleted when its window ends;
- ``unreachable``, ``alert.sending``, ``schedule`` (the next check), ``outbox`` (alerts waiting),
  ``alerts.dropped`` (records of alerts not sent; capped).

The audit trail names the user by a keyed hash only, so it is not listed (nor erased: it is the
record that the erasure happened).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis

from bot import metrics
from bot.alerts.outbox import GROUP as OUTBOX_GROUP
from bot.alerts.outbox import chat_platform
from bot.crypto.pii import PiiCipher, PiiError
from bot.storage.codec import StateCodec
from bot.storage.keys import Keys, UserKind
from bot.storage.store import RedisStore
from dialogs.crossing import Watch
from dialogs.masking import mask_id_number, mask_phone
from dialogs.models import Outcome, Session, UserKey, UserState
from dialogs.notices import parse_seen
from dialogs.ports import HeldItem

log = logging.getLogger(__name__)

_PAGE = 1000
SCAN_LIMIT = 20_000
"""``/mydata`` looks at most this far into a shared alert stream (an outbox in a big round holds
hundreds of thousands); the erasure reads them whole."""


def mask_name(name: str) -> str:
    return name[:1] + "*" * max(1, len(name) - 1) if name else ""


def mask_member(member_id: str) -> str:
    return member_id[:2] + "*" * max(1, len(member_id) - 4) + member_id[-2:] if len(member_id) > 4 else "****"


class SubjectData:
    def __init__(self, redis: Redis, *, keys: Keys, codec: StateCodec, cipher: PiiCipher, tz: tzinfo) -> None:
        self.redis = redis
        self.keys = keys
        self.codec = codec
        self.cipher = cipher
        self.tz = tz

    def _when(self, ts: float) -> str:
        return datetime.fromtimestamp(ts, self.tz).strftime("%Y-%m-%d %H:%M")

    async def held(self, user: UserKey) -> tuple[HeldItem, ...]:
        """The ``DataInventory`` port: everything kept about ``user``, masked."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k.user(user, UserKind.PROFILE))
        pipe.get(k.user(user, UserKind.SESSION))
        pipe.pttl(k.user(user, UserKind.SESSION))
        pipe.get(k.user(user, UserKind.BALANCE))
        pipe.pttl(k.user(user, UserKind.BALANCE))
        pipe.hgetall(k.user(user, UserKind.OTP))
        pipe.pttl(k.user(user, UserKind.OTP))
        pipe.exists(k.user(user, UserKind.UNREACHABLE))
        pipe.exists(k.user(user, UserKind.SENDING))
        pipe.zscore(k.schedule_of(user), user)
        pipe.hgetall(k.user(user, UserKind.CHANNEL))
        pipe.scard(k.user(user, UserKind.WEB))
        pipe.pttl(k.user(user, UserKind.WEB))
        (profile_raw, session_raw, session_ttl, balance_raw, balance_ttl, otp_raw, otp_ttl, unreachable,
         sending, due, channel_raw, pages, pages_ttl) = await pipe.execute()  # fmt: skip
        items: list[HeldItem] = []
        items += self._profile(user, profile_raw)
        items += self._session(user, session_raw, session_ttl)
        if balance_raw is not None:
            cached = self.codec.decode_balance(user, balance_raw)
            if cached is not None:
                b = cached.view
                value = (
                    f"¥{b.personal_account}" if b.personal_account is not None else f"¥{b.pooled_remaining}"
                )
                items.append(HeldItem("balance", value, "expires", _seconds(balance_ttl)))
        items += self._otp(otp_raw, otp_ttl)
        if unreachable:
            items.append(HeldItem("unreachable", "yes", "until_written"))
        if sending:
            items.append(HeldItem("alert.sending", "yes", "until_sent"))
        if due is not None:
            value = "as soon as possible" if float(due) <= 0 else self._when(float(due) / 1000)
            items.append(HeldItem("schedule", value, "until_unbind"))
        items += self._channel(channel_raw)
        if pages:  # the web pages' sessions (bot.storage.web)
            items.append(HeldItem("web.sessions", str(pages), "expires", _seconds(pages_ttl)))
        waiting = len(await self._outbox_entries(user, SCAN_LIMIT))
        if waiting:
            items.append(HeldItem("outbox", str(waiting), "until_sent"))
        dropped = len(await self._stream_entries(k.outbox_dropped(), user, SCAN_LIMIT))
        if dropped:
            items.append(HeldItem("alerts.dropped", str(dropped), "capped"))
        return tuple(items)

    def _channel(self, raw: dict[bytes, bytes]) -> list[HeldItem]:
        """What WeChat and WeCom keep in the user's channel hash (``bot.storage.wechat``)."""
        items: list[HeldItem] = []
        written = raw.get(b"in_at") or raw.get(b"ev_at")
        if written is not None:
            items.append(HeldItem("channel.window", self._when(int(written) / 1000), "until_unbind"))
        if b"choices" in raw:
            items.append(HeldItem("channel.choices", "yes (encrypted)", "until_unbind"))
        subscriptions = [k for k in raw if k.startswith(b"sub:")]
        if subscriptions:
            items.append(HeldItem("channel.subscriptions", str(len(subscriptions)), "until_unbind"))
        if b"held" in raw:
            items.append(HeldItem("channel.held", "yes (encrypted)", "until_sent"))
        return items

    def _profile(self, user: UserKey, raw: dict[bytes, bytes]) -> list[HeldItem]:
        if not raw:
            return []
        items = []
        profile = self.codec.decode_profile(user, raw)
        b = profile.binding
        if b is not None:
            items.append(HeldItem("binding.platform", b.platform, "until_unbind"))
            items.append(HeldItem("binding.member_id", mask_member(b.member_id), "until_unbind"))
            try:
                items.append(
                    HeldItem(
                        "binding.id_number", mask_id_number(b.id_number.get_secret_value()), "until_unbind"
                    )
                )
                items.append(
                    HeldItem("binding.phone", mask_phone(b.phone.get_secret_value()), "until_unbind")
                )
            except PiiError:
                items.append(HeldItem("binding.id_number", "(encrypted with an older key)", "until_unbind"))
            items.append(
                HeldItem(
                    "binding.bound_at", b.bound_at.astimezone(self.tz).strftime("%Y-%m-%d"), "until_unbind"
                )
            )
            if b.personal_account is not None:
                items.append(
                    HeldItem(
                        "binding.personal_account", "yes" if b.personal_account else "no", "until_unbind"
                    )
                )
        if profile.threshold is not None:
            items.append(
                HeldItem("alert.threshold", f"¥{profile.threshold.quantize(Decimal('0.01'))}", "until_unbind")
            )
        if b"alert" in raw:
            sent = raw[b"alert_sent"].decode() if b"alert_sent" in raw else None
            told = Watch.parse(raw[b"alert"].decode(), sent).told
            items.append(HeldItem("alert.state", "told" if told else "armed", "until_unbind"))
        if b"alert_lang" in raw:
            items.append(HeldItem("alert.language", raw[b"alert_lang"].decode(), "until_unbind"))
        if b"credit" in raw:
            items.append(HeldItem("alert.credit", "on", "until_unbind"))
        if b"family" in raw:
            items.append(HeldItem("alert.family", "on", "until_unbind"))
        if b"family_seen" in raw:
            # What each relative had spent when last told, by a digest of them, not their names.
            count = len(parse_seen(raw[b"family_seen"].decode())[1])
            items.append(HeldItem("alert.family_seen", f"{count}", "until_unbind"))
        if profile.lang is not None:
            items.append(HeldItem("settings.language", profile.lang, "until_unbind"))
        return items

    def _session(self, user: UserKey, raw: bytes | None, ttl: int) -> list[HeldItem]:
        if raw is None:
            return []
        session = self.codec.decode_session(user, raw)
        left = _seconds(ttl)
        items = [HeldItem("session", session.state.value, "expires", left)]
        p = session.pending
        if p is not None:
            if p.name is not None:
                items.append(HeldItem("session.name", mask_name(p.name.get_secret_value()), "expires", left))
            if p.id_number is not None:
                items.append(
                    HeldItem(
                        "session.id_number", mask_id_number(p.id_number.get_secret_value()), "expires", left
                    )
                )
            if p.phone is not None:
                items.append(
                    HeldItem("session.phone", mask_phone(p.phone.get_secret_value()), "expires", left)
                )
        return items

    def _otp(self, raw: dict[bytes, bytes], ttl: int) -> list[HeldItem]:
        if not raw:
            return []
        f = {k.decode(): v.decode() for k, v in raw.items()}
        left = _seconds(ttl)
        items = []
        if "code" in f:
            items.append(HeldItem("otp.code", "yes", "expires", left))
        sends = json.loads(f.get("sends", "[]"))
        if sends:
            items.append(HeldItem("otp.sends", str(len(sends)), "expires", left))
        fails = json.loads(f.get("fails", "[]"))
        if fails:
            items.append(HeldItem("otp.failures", str(len(fails)), "expires", left))
        locked = float(f.get("locked", 0))
        if locked > datetime.now(UTC).timestamp():
            items.append(HeldItem("otp.locked_until", self._when(locked), "expires", left))
        return items

    # -- the shared alert keys -----------------------------------------------------------------

    async def _stream_entries(self, stream: str, user: UserKey, limit: int | None = None) -> list[bytes]:
        found: list[bytes] = []
        start = "-"
        want = user.encode()
        read = 0
        while True:
            page: Any = await self.redis.xrange(stream, min=start, max="+", count=_PAGE)
            found += [entry_id for entry_id, fields in page if fields.get(b"user") == want]
            read += len(page)
            if len(page) < _PAGE or (limit is not None and read >= limit):
                return found
            start = "(" + page[-1][0].decode()

    async def _outbox_entries(self, user: UserKey, limit: int | None = None) -> list[bytes]:
        stream = self.keys.outbox(chat_platform(user), self.keys.shard_of(user))
        return await self._stream_entries(stream, user, limit)

    async def _later(self, user: UserKey) -> list[bytes]:
        later = self.keys.outbox_later(chat_platform(user), self.keys.shard_of(user))
        records: Any = await self.redis.zrange(later, 0, -1)
        out: list[bytes] = []
        for record in records:
            try:
                if json.loads(record).get("user") == user:
                    out.append(record)
            except ValueError:
                continue
        return out

    # -- export and erasure --------------------------------------------------------------------

    async def export(self, user: UserKey) -> dict[str, Any]:
        """What ``yibao admin export`` writes: the very items ``/mydata`` shows."""
        items = await self.held(user)
        return {
            "user": user,
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "items": [asdict(item) for item in items],
        }

    async def erase(self, store: RedisStore, user: UserKey) -> int:
        """Erase everything about ``user``: their keys (the /unbind script, under their guard), their
        place in the alert schedule, their alerts waiting or dropped, and the limits keyed by their
        phone and ID number. Returns how many records went."""
        profile_raw: Any = await self.redis.hgetall(self.keys.user(user, UserKind.PROFILE))
        session_raw: Any = await self.redis.get(self.keys.user(user, UserKind.SESSION))
        profile = self.codec.decode_profile(user, profile_raw)
        session = self.codec.decode_session(user, session_raw)
        digests: list[str] = []
        secrets_: list[tuple[str, str]] = []
        if profile.binding is not None:
            secrets_ += [
                ("phone", profile.binding.phone.get_secret_value()),
                ("id", profile.binding.id_number.get_secret_value()),
            ]
        if session.pending is not None:
            if session.pending.phone is not None:
                secrets_.append(("phone", session.pending.phone.get_secret_value()))
            if session.pending.id_number is not None:
                secrets_.append(("id", session.pending.id_number.get_secret_value()))
        for purpose, value in secrets_:
            try:
                digests.append(
                    self.keys.phone_sends(self.cipher.digest(value, purpose="phone"))
                    if purpose == "phone"
                    else self.keys.id_lookups(self.cipher.digest(value, purpose="id"))
                )
            except PiiError:
                continue
        existed = sum([await self.redis.exists(*self.keys.all_user(user))])

        async def step(state: UserState) -> Outcome:
            return Outcome(replies=(), session=Session(), erase=True)

        await store.update(user, step)
        gone = existed
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.keys.schedule_of(user), user)
        outbox = await self._outbox_entries(user)
        if outbox:
            stream = self.keys.outbox(chat_platform(user), self.keys.shard_of(user))
            pipe.xack(stream, OUTBOX_GROUP, *outbox)
            pipe.xdel(stream, *outbox)
        dropped = await self._stream_entries(self.keys.outbox_dropped(), user)
        if dropped:
            pipe.xdel(self.keys.outbox_dropped(), *dropped)
        later = await self._later(user)
        if later:
            pipe.zrem(self.keys.outbox_later(chat_platform(user), self.keys.shard_of(user)), *later)
        if digests:
            pipe.delete(*digests)
        results = await pipe.execute()
        gone += int(results[0]) + len(outbox) + len(dropped) + len(later)
        metrics.ERASURES.labels("admin").inc()
        return gone


def _seconds(pttl: int) -> int | None:
    return max(0, int(pttl) // 1000) if pttl is not None and int(pttl) > 0 else None

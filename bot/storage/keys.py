"""Every Redis key Yibao uses, built in this one place.

Per-user keys carry the user key in a ``{hash tag}`` so all of one user's keys live in one slot of a
Redis Cluster (and one Lua script may touch them all). ``USER_KINDS`` lists every per-user record,
which is what ``/unbind`` erases.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from enum import StrEnum

from dialogs.models import UserKey

_USER = re.compile(r"[a-z][a-z0-9]{0,15}:(?:[A-Za-z0-9]{1,32}:)?[A-Za-z0-9_.@-]{1,64}")
"""``tg:123``, ``wx:<openid>``, ``wecom:<corp id>:<userid>``."""


class UserKind(StrEnum):
    SESSION = "session"
    """The conversation state (JSON; expires after the idle time)."""
    PROFILE = "profile"
    """Binding, threshold and language (a hash; permanent until /unbind)."""
    OTP = "otp"
    """The pending SMS code, send history, failures and lockout (a hash; expires)."""
    LOCK = "lock"
    """The per-user guard (a token with a short expiry)."""
    BALANCE = "balance"
    """The last balance fetched (encrypted; expires after ``insurance.balance_cache_seconds``)."""
    UNREACHABLE = "unreachable"
    """The chat platform said the user cannot be reached (blocked the bot); gone when they write."""
    SENDING = "sending"
    """The claim of the one sender sending the user's alert ("<token> <sender> <nonce>"). No expiry on
    purpose: a delivery not yet recorded must hold it however long Redis is away; it ends with the
    record, a drop, a take-over from a stopped sender, or /unbind (``bot.alerts.outbox``)."""
    CHANNEL = "channel"
    """What the user's chat platform needs kept about them, shared by every instance (a hash; WeChat:
    the customer-service window, the choices last offered, accepted subscription messages, an alert
    held for their next message; ``bot.storage.wechat``)."""
    WEB = "web"
    """The hashes of the user's page sessions (a set; ``bot.storage.web``): erasing it ends them all."""


USER_KINDS = tuple(UserKind)


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "yibao"
    shards: int = 1
    """``alerts.shards``: how many parts the schedule, the checks and each outbox are split into."""

    def user(self, user: UserKey, kind: UserKind) -> str:
        if not _USER.fullmatch(user):
            raise ValueError(f"not a user key: {user!r}")
        return f"{self.prefix}:{{{user}}}:{kind.value}"

    def all_user(self, user: UserKey) -> list[str]:
        return [self.user(user, kind) for kind in USER_KINDS]

    # The alert machinery's shared keys. Each shard's keys share one hash tag, so each of their
    # scripts stays in one slot: ``{alerts}`` (who is checked when, and the batches waiting to be
    # checked) and ``{outbox}`` with one shard, ``{alerts.3}`` and ``{outbox.3}`` for shard 3 of
    # several, which a Redis Cluster spreads over its masters.

    def shard_of(self, user: str) -> int:
        """The shard of the user's schedule entry and alerts: fixed by the user key (CRC-32)."""
        return 0 if self.shards == 1 else zlib.crc32(user.encode()) % self.shards

    def _tag(self, name: str, shard: int) -> str:
        return f"{{{name}}}" if self.shards == 1 else f"{{{name}.{shard}}}"

    def schedule(self, shard: int = 0) -> str:
        """Sorted set: subscribed user -> when their next check is due (Unix ms; 0: as soon as possible)."""
        return f"{self.prefix}:{self._tag('alerts', shard)}:schedule"

    def schedule_of(self, user: str) -> str:
        return self.schedule(self.shard_of(user))

    def checks(self, shard: int = 0) -> str:
        """Stream of batches of users due a check, shared by the workers through a consumer group."""
        return f"{self.prefix}:{self._tag('alerts', shard)}:checks"

    def outbox(self, platform: str, shard: int = 0) -> str:
        """Stream of alerts to send on one chat platform (``tg``, ``console``), through a consumer group."""
        return f"{self.prefix}:{self._tag('outbox', shard)}:{platform}"

    def outbox_later(self, platform: str, shard: int = 0) -> str:
        """Sorted set: alerts held back by the quiet hours -> when they may go (Unix ms)."""
        return f"{self.prefix}:{self._tag('outbox', shard)}:{platform}:later"

    def outbox_pace(self, platform: str) -> str:
        """The next free send time on the platform, shared by every sender (Redis server time, µs)."""
        return f"{self.prefix}:{{outbox}}:{platform}:pace"

    def outbox_dropped(self) -> str:
        """Stream (capped) of alerts that were not sent, and why: the record an operator can read."""
        return f"{self.prefix}:{{outbox}}:dropped"

    def web_link(self, digest: str) -> str:
        """A ``/web`` link token, by its hash: the user key, encrypted (expires in minutes)."""
        return f"{self.prefix}:web:l:{digest}"

    def web_session(self, digest: str) -> str:
        """A page session, by the hash of its id: the user key (encrypted) and the CSRF token (expires)."""
        return f"{self.prefix}:web:s:{digest}"

    def web_rate(self, digest: str) -> str:
        """Requests to the pages in one bucket (a client, a session) in the current window (expires)."""
        return f"{self.prefix}:web:rate:{digest}"

    def wechat_seen(self, digest: str) -> str:
        """A WeChat callback (its message id, or a nonce) seen lately, by its hash (expires)."""
        return f"{self.prefix}:wx:seen:{digest}"

    def wechat_token(self, app_id: str) -> str:
        """The official account's access_token and its expiry (JSON), shared by every instance."""
        return f"{self.prefix}:wx:{{{app_id}}}:token"

    def wechat_token_lock(self, app_id: str) -> str:
        """Held by the one instance fetching the next access_token (expires)."""
        return f"{self.prefix}:wx:{{{app_id}}}:token:lock"

    def wecom_token(self, corp_id: str, agent_id: int) -> str:
        """The WeCom app's access_token and its expiry (JSON), shared by every instance."""
        return f"{self.prefix}:wecom:{{{corp_id}:{agent_id}}}:token"

    def wecom_token_lock(self, corp_id: str, agent_id: int) -> str:
        return f"{self.prefix}:wecom:{{{corp_id}:{agent_id}}}:token:lock"

    def member_pace(self, digest: str) -> str:
        """WeCom: the times of the messages sent to one member in the last hour (a sorted set), for its
        per-member limits, keyed by the user key's keyed hash (it outlives an erasure by the hour)."""
        return f"{self.prefix}:pace:{digest}"

    def phone_sends(self, phone_digest: str) -> str:
        """SMS codes sent to one phone in the last hour, keyed by the phone's keyed hash."""
        return f"{self.prefix}:phone:{phone_digest}:sends"

    def id_lookups(self, id_digest: str) -> str:
        """Failed (and running) lookups of one ID number, by any chat account, within the failure
        window, keyed by the ID number's keyed hash (a sorted set: slot -> time)."""
        return f"{self.prefix}:idnum:{id_digest}:lookups"

    # The operator's records: no user key in them, only keyed hashes and aggregates.

    def audit(self) -> str:
        """Stream (capped, append-only): who (a keyed hash), what, when, from which platform."""
        return f"{self.prefix}:audit"

    def figures(self, day: str) -> str:
        """Hash of one day's aggregate counts (``bot.audit.figures``), ``day`` as ``YYYY-MM-DD``."""
        return f"{self.prefix}:figures:{day}"

    def profiles_pattern(self) -> str:
        """SCAN pattern of every user's profile (the operator's counts of bound users)."""
        return f"{self.prefix}:{{*}}:{UserKind.PROFILE.value}"

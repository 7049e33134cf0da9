"""The audit trail: an append-only, capped Redis stream (``Keys.audit``), and optionally a file.

Each record says who (``who``: a keyed hash of the user key, the same in every record of that user
and useless without the operator's key), what (``action``: ``bound``, ``bind_failed``, ``unbound``,
``locked_out``, ``erased``, ``exported``), when (``at``, UTC), from where (``platform``: the chat
platform, ``source``: ``chat`` or ``admin``) and a closed ``reason`` word. No name, ID number,
phone, code, member number or message text is ever in it. The stream keeps about ``audit.keep``
records (``XADD MAXLEN ~``); the file, when configured, keeps everything (one JSON line a record).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bot import metrics
from bot.crypto.pii import PiiCipher
from bot.storage.keys import Keys

log = logging.getLogger(__name__)

ACTIONS = frozenset({"bound", "bind_failed", "unbound", "locked_out", "erased", "exported"})


def user_hash(cipher: PiiCipher, user: str) -> str:
    """The keyed hash that names a user in the audit trail and in JSON log lines (16 hex characters)."""
    return cipher.digest(user, purpose="audit-user")[:16]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: str
    at: str
    action: str
    who: str
    platform: str
    source: str
    reason: str
    insurer: str

    def as_dict(self) -> dict[str, str]:
        return {
            "id": self.id,
            "at": self.at,
            "action": self.action,
            "who": self.who,
            "platform": self.platform,
            "source": self.source,
            "reason": self.reason,
            "insurer": self.insurer,
        }


class AuditTrail:
    def __init__(
        self, redis: Redis, *, keys: Keys, cipher: PiiCipher, keep: int = 100_000, file: Path | None = None
    ) -> None:
        self.redis = redis
        self.key = keys.audit()
        self.cipher = cipher
        self.keep = keep
        self.file = file

    def who(self, user: str) -> str:
        return user_hash(self.cipher, user)

    async def record(
        self, action: str, user: str, *, source: str = "chat", reason: str = "", insurer: str = ""
    ) -> None:
        """Append one record. Raises what Redis raises (the caller decides whether that may stop it)."""
        assert action in ACTIONS, action
        fields = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "action": action,
            "who": self.who(user),
            "platform": metrics.platform_of(user),
            "source": source,
            "reason": reason,
            "insurer": insurer,
        }
        entry_id: Any = await self.redis.xadd(self.key, fields, maxlen=self.keep, approximate=True)  # type: ignore[arg-type]
        metrics.AUDIT_RECORDS.labels(action).inc()
        if self.file is not None:
            self._append({"id": entry_id.decode(), **fields})

    def _append(self, record: dict[str, str]) -> None:
        try:
            assert self.file is not None
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        except OSError as e:
            log.warning("could not append to the audit file %s: %s", self.file, e)

    async def tail(self, *, since: datetime | None = None, count: int = 100) -> list[AuditRecord]:
        """The latest ``count`` records (at or after ``since``), oldest first."""
        start = "-" if since is None else str(int(since.timestamp() * 1000))
        raw: Any = await self.redis.xrevrange(self.key, max="+", min=start, count=count)
        out = []
        for entry_id, fields in reversed(raw):
            f = {k.decode(): v.decode() for k, v in fields.items()}
            out.append(
                AuditRecord(
                    id=entry_id.decode(),
                    at=f.get("at", ""),
                    action=f.get("action", ""),
                    who=f.get("who", ""),
                    platform=f.get("platform", ""),
                    source=f.get("source", ""),
                    reason=f.get("reason", ""),
                    insurer=f.get("insurer", ""),
                )
            )
        return out

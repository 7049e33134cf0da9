"""What the WeCom platform keeps, shared by every instance: implemented in Redis by
``bot.storage.wecom`` (per-member parts under the member's own keys, so ``/unbind`` erases them)."""

from __future__ import annotations

from typing import Protocol

from dialogs.models import UserKey
from platforms.wechat.state import Choices


class WecomState(Protocol):
    async def first(self, key: str, ttl_seconds: int) -> bool:
        """True the first time ``key`` is offered within ``ttl_seconds`` (deduplication, replays)."""
        ...

    async def set_choices(self, user: UserKey, choices: Choices | None) -> None: ...

    async def choices(self, user: UserKey) -> Choices | None: ...

    async def pace(self, user: UserKey) -> float:
        """Seconds until one more message may go to this member under WeCom's per-member limits
        (``0``: it may go now, and is counted), across every instance."""
        ...

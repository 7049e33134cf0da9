"""What the WeChat platform keeps, shared by every instance: implemented in Redis by
``bot.storage.wechat`` (per-user parts under the user's own keys, so ``/unbind`` erases them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dialogs.models import UserKey


@dataclass(frozen=True, slots=True)
class Choices:
    """The options last offered to a user: a number ``n`` (or a menu option ``<gen>-<n>``) answers
    ``payloads[n-1]``. ``gen`` tells one offer's menu from an older one's."""

    gen: str
    payloads: tuple[str, ...]
    labels: tuple[str, ...] = ()
    """What the options showed (WeCom writes the chosen one on the card it disables)."""


class WechatState(Protocol):
    async def first(self, key: str, ttl_seconds: int) -> bool:
        """True the first time ``key`` is offered within ``ttl_seconds`` (deduplication, replays)."""
        ...

    async def opened(self, user: UserKey, *, event: bool) -> None:
        """The user wrote (``event`` false: 5 customer-service messages within 48 hours) or clicked
        the menu / followed (``event`` true: 3 within a minute)."""
        ...

    async def take_quota(self, user: UserKey, n: int = 1) -> bool:
        """Take ``n`` customer-service messages from the user's window, all or none."""
        ...

    async def close_window(self, user: UserKey) -> None:
        """WeChat said the window is closed (45015/45047), whatever we counted."""
        ...

    async def set_choices(self, user: UserKey, choices: Choices | None) -> None: ...

    async def choices(self, user: UserKey) -> Choices | None: ...

    async def subscribed(self, user: UserKey, template_id: str, *, accepted: bool, long_term: bool) -> None:
        """The user accepted (one more message, or for good when ``long_term``) or rejected a template."""
        ...

    async def take_subscription(self, user: UserKey, template_id: str) -> bool:
        """Use one accepted subscription message (a long-term one is not used up)."""
        ...

    async def drop_subscription(self, user: UserKey, template_id: str) -> None:
        """WeChat said the user has none (43101)."""
        ...

    async def hold(self, user: UserKey, text: str) -> None:
        """Keep an alert that could not be sent, for the user's next answer (the latest one wins)."""
        ...

    async def take_held(self, user: UserKey) -> str | None:
        """The held alert, removed as it is taken."""
        ...

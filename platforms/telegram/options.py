"""What both Telegram engines are built from, and what they offer ``bot/`` (``Engine``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

EngineName = Literal["aiogram", "ptb"]

Claims = Callable[[int, str], Awaitable[bool]]
"""Mounted in a host's bot: does Yibao answer this user's text (its command, its button, or a user in
one of its flows)? If not, the update is left to the host's handlers."""


@dataclass(frozen=True, slots=True)
class TelegramOptions:
    token: str
    api_base_url: str = "https://api.telegram.org"
    global_rate: float = 30.0
    per_chat_rate: float = 1.0
    max_retries: int = 3
    concurrent_updates: int = 64
    webhook: bool = False
    """No polling is set up: updates arrive through ``Engine.feed``."""


class Engine(Protocol):
    """One Telegram library driving a ``TelegramCore`` for ``yibao run`` and ``yibao worker``."""

    name: str

    async def initialize(self) -> None:
        """Connect and check the token (``getMe``)."""

    async def start(self) -> None:
        """Start taking updates (after ``initialize``)."""

    async def start_polling(self) -> None: ...

    async def register_webhook(self, url: str, secret: str) -> None: ...

    async def feed(self, data: dict[str, Any]) -> None:
        """One webhook update, handled before this returns."""

    async def stop(self) -> None:
        """Stop taking updates, finish the ones in flight, close."""

    async def close(self) -> None:
        """Close a send-only engine (no ``start``)."""

"""SMS gateways: where a one-time code is sent. The code is in the text, so no gateway logs it."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from dialogs.masking import mask_phone
from dialogs.ports import Clock


class SmsError(Exception):
    """The gateway did not take the message."""


class SmsGateway(Protocol):
    async def send(self, phone: str, text: str) -> None:
        """Raises ``SmsError`` when the message could not be handed over."""
        ...


ShowSms = Callable[[str, str], Awaitable[None]]
"""Shows an SMS in a terminal chat: ``(masked destination, text)``."""


class ConsoleSmsGateway:
    """For the terminal demo: the SMS appears in the chat itself, addressed to the masked number."""

    def __init__(self, show: ShowSms) -> None:
        self._show = show

    async def send(self, phone: str, text: str) -> None:
        await self._show(mask_phone(phone), text)


class FileSmsGateway:
    """Appends one JSON line ``{"to", "text", "at"}`` per SMS to a file (mode 0600).

    For tests and for an operator's own sender that tails the file. Like any real gateway it needs
    the full destination number, so the file holds phone numbers and codes: keep it private.
    """

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self._clock = clock
        self._lock = asyncio.Lock()

    async def send(self, phone: str, text: str) -> None:
        line = json.dumps(
            {"to": phone, "text": text, "at": self._clock.now().isoformat()}, ensure_ascii=False
        )
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, line + "\n")
            except OSError as e:
                raise SmsError(f"cannot write to {self.path}: {e.strerror}") from None

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(line)

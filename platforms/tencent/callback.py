"""The checks a callback request passes before its message is looked at, the same for WeChat and WeCom.

In this order, so that nothing unsigned costs a Redis call: the signature (in constant time), the
timestamp (no more than ``max_skew_seconds`` from our clock), the nonce (not seen before within
twice that, across every instance: ``Seen`` is a Redis ``SET NX`` with an expiry). A request that
fails any of them is refused (403) and nothing of it is processed. WeChat's own retries of a
callback come with a new nonce and timestamp, so they pass here and are recognised one level up,
by the message's id (``dedup_key``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from platforms.tencent.crypto import CryptoError, MessageCrypto, signature_matches
from platforms.tencent.xmlmsg import BadXml, XmlMessage, element, parse

MAX_SKEW_SECONDS = 300


class Seen(Protocol):
    async def first(self, key: str, ttl_seconds: int) -> bool:
        """True the first time ``key`` is offered within ``ttl_seconds`` (by any instance)."""
        ...


class Refused(Exception):
    """The request is not from the platform, or is a replay: answer 403, process nothing.
    ``reason`` is for the log (``signature``, ``timestamp``, ``replay``, ``crypto``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class CallbackGuard:
    """Opens callback requests for one receiver: ``token`` from the admin console, ``crypto`` set in
    safe mode (always for WeCom)."""

    token: str
    seen: Seen
    crypto: MessageCrypto | None = None
    max_skew_seconds: int = MAX_SKEW_SECONDS
    clock: Callable[[], float] = field(default=time.time)
    namespace: str = "wx"

    def _fresh(self, timestamp: str) -> None:
        try:
            skew = abs(self.clock() - int(timestamp))
        except ValueError:
            raise Refused("timestamp") from None
        if skew > self.max_skew_seconds:
            raise Refused("timestamp")

    async def _not_replayed(self, timestamp: str, nonce: str) -> None:
        if not nonce or len(nonce) > 64:
            raise Refused("replay")
        key = f"{self.namespace}:nonce:{timestamp}:{nonce}"
        if not await self.seen.first(key, 2 * self.max_skew_seconds):
            raise Refused("replay")

    async def verify_plain(self, query: Mapping[str, str]) -> None:
        """A request signed with ``signature`` = SHA-1(token, timestamp, nonce) (WeChat's URL check and
        plaintext callbacks). Raises ``Refused``."""
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        if not signature_matches(query.get("signature", ""), self.token, timestamp, nonce):
            raise Refused("signature")
        self._fresh(timestamp)
        await self._not_replayed(timestamp, nonce)

    async def open_encrypted(self, query: Mapping[str, str], encrypted: str) -> bytes:
        """``msg_signature`` over the ciphertext checked, then decrypted (and the receiver id in it
        checked). Raises ``Refused``."""
        if self.crypto is None:
            raise Refused("crypto")
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        if not signature_matches(query.get("msg_signature", ""), self.token, timestamp, nonce, encrypted):
            raise Refused("signature")
        self._fresh(timestamp)
        try:
            plain = self.crypto.decrypt(encrypted)
        except CryptoError:
            raise Refused("crypto") from None
        await self._not_replayed(timestamp, nonce)
        return plain

    async def open_message(self, query: Mapping[str, str], body: bytes) -> XmlMessage:
        """A POSTed message, plaintext or (``encrypt_type=aes``) encrypted. ``Refused`` for a request
        that is not the platform's; ``BadXml`` for a signed one whose message cannot be read."""
        if query.get("encrypt_type", "raw") == "aes" or self.crypto is not None:
            if self.crypto is None:
                raise Refused("crypto")
            outer = parse(body)
            encrypted = outer.get("Encrypt")
            if not encrypted:
                raise Refused("crypto")
            return parse(await self.open_encrypted(query, encrypted))
        await self.verify_plain(query)
        return parse(body)

    def seal(self, reply: bytes, *, nonce: str, timestamp: str | None = None) -> bytes:
        """A passive reply as the platform wants it back: as is in plaintext mode, else wrapped in
        ``<Encrypt>`` with its ``MsgSignature``."""
        if self.crypto is None:
            return reply
        stamp = timestamp or str(int(self.clock()))
        encrypted = self.crypto.encrypt(reply)
        return element(
            {
                "Encrypt": encrypted,
                "MsgSignature": self.crypto.sign(stamp, nonce, encrypted),
                "TimeStamp": int(stamp),
                "Nonce": nonce,
            }
        )


__all__ = ["BadXml", "CallbackGuard", "Refused", "Seen"]

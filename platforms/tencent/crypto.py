"""Signatures and safe-mode encryption of WeChat / WeCom callbacks (Tencent's ``WXBizMsgCrypt``).

- ``signature(token, timestamp, nonce[, encrypt])``: the SHA-1 hex digest of the parts sorted as
  strings and joined. WeChat signs a plaintext callback with the first three (``signature``); a
  safe-mode one also with the ciphertext (``msg_signature``), and so does WeCom, always.
- The key is ``base64(EncodingAESKey + "=")``: 32 bytes; the IV is its first 16.
- The plaintext is 16 random bytes, the message's length (4 bytes, network order), the message, and
  the receiver's id (the official account's app id, or the WeCom corp id), padded PKCS#7-style to a
  multiple of **32** bytes (not AES's 16), then AES-256-CBC encrypted and base64-encoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_KEY_SHAPE = re.compile(r"[A-Za-z0-9+/]{43}")
_BLOCK = 32


class CryptoError(Exception):
    """A ciphertext that does not open with this key, or opens to something not for this receiver."""


def signature(token: str, *parts: str) -> str:
    joined = "".join(sorted((token, *parts)))
    return hashlib.sha1(joined.encode(), usedforsecurity=False).hexdigest()  # Tencent's algorithm


def signature_matches(given: str, token: str, *parts: str) -> bool:
    return hmac.compare_digest(given.lower().encode(), signature(token, *parts).encode())


def parse_aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte key of an EncodingAESKey; ``ValueError`` saying what is wrong (never the key)."""
    if not _KEY_SHAPE.fullmatch(encoding_aes_key):
        raise ValueError(
            f"must be 43 characters of A-Z, a-z, 0-9, + and / (got {len(encoding_aes_key)} characters)"
        )
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error:
        raise ValueError("is not base64 (43 characters of A-Z, a-z, 0-9, + and /)") from None
    if len(key) != 32:
        raise ValueError("does not decode to 32 bytes")
    return key


class MessageCrypto:
    """Encrypts and decrypts one receiver's callback messages; ``receive_id`` is the app or corp id."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        self.token = token
        self.key = parse_aes_key(encoding_aes_key)
        self.iv = self.key[:16]
        self.receive_id = receive_id.encode()

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.iv))

    def encrypt(self, message: bytes, *, random: bytes | None = None) -> str:
        body = (random or os.urandom(16)) + struct.pack(">I", len(message)) + message + self.receive_id
        pad = _BLOCK - len(body) % _BLOCK
        body += bytes([pad]) * pad
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(body) + encryptor.finalize()).decode()

    def decrypt(self, encrypted: str) -> bytes:
        try:
            raw = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise CryptoError("not base64") from None
        if not raw or len(raw) % 16:
            raise CryptoError("not whole AES blocks")
        decryptor = self._cipher().decryptor()
        body = decryptor.update(raw) + decryptor.finalize()
        pad = body[-1]
        if not 1 <= pad <= _BLOCK or body[-pad:] != bytes([pad]) * pad:
            raise CryptoError("bad padding")
        body = body[:-pad]
        if len(body) < 20:
            raise CryptoError("too short")
        (length,) = struct.unpack(">I", body[16:20])
        message, receiver = body[20 : 20 + length], body[20 + length :]
        if len(message) != length:
            raise CryptoError("length out of range")
        if not hmac.compare_digest(receiver, self.receive_id):
            raise CryptoError("for another receiver")
        return message

    def sign(self, timestamp: str, nonce: str, encrypted: str) -> str:
        return signature(self.token, timestamp, nonce, encrypted)

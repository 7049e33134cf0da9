"""The callback protocol WeChat and WeCom share: signatures, safe-mode crypto, safe XML, the checks."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from platforms.tencent.callback import CallbackGuard, Refused
from platforms.tencent.crypto import CryptoError, MessageCrypto, parse_aes_key, signature
from platforms.tencent.xmlmsg import MAX_BODY, BadXml, element, parse
from platforms.wechat.render import split_bytes

KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APP = "wx0123456789abcdef"


def test_the_signature_is_sha1_of_the_sorted_parts() -> None:
    # WeChat's documented recipe: sort token, timestamp and nonce as strings, join, SHA-1, hex.
    expected = hashlib.sha1(b"".join(sorted([b"tok", b"1409304348", b"xxxxxx"]))).hexdigest()
    assert signature("tok", "1409304348", "xxxxxx") == expected
    assert signature("tok", "xxxxxx", "1409304348") == expected


def test_the_aes_key_must_be_43_base64_characters() -> None:
    assert len(parse_aes_key(KEY)) == 32
    for bad in ("short", KEY + "A", KEY[:-1] + "!"):
        with pytest.raises(ValueError, match="43 characters") as e:
            parse_aes_key(bad)
        assert bad not in str(e.value)


def _reference_encrypt(message: bytes, receiver: bytes, random: bytes) -> str:
    """The documented layout, written out: random(16) + len(4, big-endian) + msg + id, PKCS#7 to 32."""
    key = base64.b64decode(KEY + "=")
    body = random + struct.pack(">I", len(message)) + message + receiver
    pad = 32 - len(body) % 32
    body += bytes([pad]) * pad
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(body) + enc.finalize()).decode()


def test_safe_mode_encryption_matches_the_documented_layout() -> None:
    crypto = MessageCrypto("tok", KEY, APP)
    message = "<xml><Content><![CDATA[你好]]></Content></xml>".encode()
    ours = crypto.encrypt(message, random=b"r" * 16)
    assert ours == _reference_encrypt(message, APP.encode(), b"r" * 16)
    assert crypto.decrypt(ours) == message
    assert crypto.sign("1", "2", ours) == signature("tok", "1", "2", ours)


def test_a_message_for_another_app_or_a_broken_one_does_not_open() -> None:
    crypto = MessageCrypto("tok", KEY, APP)
    other = _reference_encrypt(b"<xml/>", b"wxffffffffffffffff", b"r" * 16)
    for bad in (
        other,
        "not base64!",
        base64.b64encode(b"x" * 15).decode(),
        base64.b64encode(b"x" * 32).decode(),
    ):
        with pytest.raises(CryptoError):
            crypto.decrypt(bad)


def test_xml_bombs_entities_and_junk_are_refused_by_kind() -> None:
    bomb = b'<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><xml><C>&b;</C></xml>'
    external = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><C>&e;</C></xml>'
    cases = {bomb: "forbidden", external: "forbidden", b"<xml><a>": "malformed", b"<html/>": "malformed"}
    cases[b"<xml>" + b"x" * MAX_BODY + b"</xml>"] = "too_large"
    for body, kind in cases.items():
        with pytest.raises(BadXml) as e:
            parse(body)
        assert e.value.kind == kind


def test_replies_are_cdata_that_cannot_be_broken_out_of() -> None:
    raw = element({"Content": "a]]><evil/>\x00b", "CreateTime": 5})
    msg = parse(raw)
    assert msg.get("Content") == "a]]><evil/>b"
    assert msg.get("CreateTime") == "5"


class _Seen:
    def __init__(self) -> None:
        self.keys: set[str] = set()

    async def first(self, key: str, ttl_seconds: int) -> bool:
        new = key not in self.keys
        self.keys.add(key)
        return new


async def test_the_guard_checks_signature_then_time_then_nonce() -> None:
    seen = _Seen()
    guard = CallbackGuard("tok", seen, clock=lambda: 1_000_000.0)

    def query(ts: str, nonce: str, sig: str | None = None) -> dict[str, str]:
        return {"timestamp": ts, "nonce": nonce, "signature": sig or signature("tok", ts, nonce)}

    await guard.verify_plain(query("1000000", "n1"))
    for q, reason in (
        (query("1000000", "n2", "0" * 40), "signature"),
        (query("999000", "n3"), "timestamp"),
        (query("1000000", "n1"), "replay"),
    ):
        with pytest.raises(Refused) as e:
            await guard.verify_plain(q)
        assert e.value.reason == reason
    assert len(seen.keys) == 1  # a bad signature or an old timestamp never reached the store


async def test_safe_mode_opens_only_signed_ciphertexts_and_seals_replies() -> None:
    crypto = MessageCrypto("tok", KEY, APP)
    guard = CallbackGuard("tok", _Seen(), crypto=crypto, clock=lambda: 1_000_000.0)
    inner = element({"MsgType": "text", "Content": "hi"})
    encrypted = crypto.encrypt(inner)
    body = element({"ToUserName": "gh_x", "Encrypt": encrypted})
    q = {"timestamp": "1000000", "nonce": "n", "encrypt_type": "aes"}
    msg = await guard.open_message({**q, "msg_signature": crypto.sign("1000000", "n", encrypted)}, body)
    assert msg.get("Content") == "hi"
    with pytest.raises(Refused):
        await guard.open_message({**q, "nonce": "m", "msg_signature": "0" * 40}, body)
    with pytest.raises(Refused):  # a plaintext body when safe mode is on
        await guard.open_message(
            {"timestamp": "1000000", "nonce": "p", "signature": signature("tok", "1000000", "p")}, inner
        )
    sealed = parse(guard.seal(inner, nonce="n2", timestamp="1000001"))
    assert sealed.get("MsgSignature") == crypto.sign("1000001", "n2", sealed.get("Encrypt"))
    assert crypto.decrypt(sealed.get("Encrypt")) == inner


def test_long_texts_are_cut_below_wechats_byte_limit_without_breaking_characters() -> None:
    text = "\n".join(f"第 {n} 笔：康宁大药房 ¥12.34" for n in range(300))
    pieces = split_bytes(text)
    assert len(pieces) > 1
    assert all(len(p.encode()) <= 2000 for p in pieces)
    assert "".join(p.replace("\n", "") for p in pieces) == text.replace("\n", "")

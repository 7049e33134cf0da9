"""Personal data at rest: ``bot.crypto.pii``."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from bot.crypto.pii import KEY_BYTES, PiiCipher, PiiError, load_or_create_key, new_key_text, parse_key

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
ID = "11010519491231002X"
CONTEXT = "id|tg:123"


@pytest.fixture
def cipher() -> PiiCipher:
    return PiiCipher(KEY)


@pytest.mark.parametrize("text", [ID, "13812345678", "张伟", ""])
def test_round_trip(cipher: PiiCipher, text: str) -> None:
    token = cipher.encrypt(text, context=CONTEXT)
    assert cipher.decrypt(token, context=CONTEXT) == text
    # a new cipher from the same key reads it too (as after a restart)
    assert PiiCipher(KEY).decrypt(token, context=CONTEXT) == text


def test_another_context_does_not_decrypt(cipher: PiiCipher) -> None:
    token = cipher.encrypt(ID, context="id|tg:123")
    with pytest.raises(PiiError):
        cipher.decrypt(token, context="id|tg:124")
    with pytest.raises(PiiError):
        cipher.decrypt(token, context="phone|tg:123")


def test_another_key_does_not_decrypt(cipher: PiiCipher) -> None:
    token = cipher.encrypt(ID, context=CONTEXT)
    with pytest.raises(PiiError):
        PiiCipher(OTHER_KEY).decrypt(token, context=CONTEXT)


def test_tampered_ciphertext(cipher: PiiCipher) -> None:
    token = cipher.encrypt(ID, context=CONTEXT)
    version, _, body = token.partition(".")
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    for i in (0, 12, len(raw) - 1):  # the nonce, the ciphertext, the tag
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        bad = f"{version}.{base64.urlsafe_b64encode(bytes(flipped)).decode().rstrip('=')}"
        with pytest.raises(PiiError):
            cipher.decrypt(bad, context=CONTEXT)
    for bad in (token[:-4], token + "AAAA", "v2." + body, body, "v1.", "v1.!!!", ""):
        with pytest.raises(PiiError):
            cipher.decrypt(bad, context=CONTEXT)


def test_encryptions_differ(cipher: PiiCipher) -> None:
    tokens = {cipher.encrypt(ID, context=CONTEXT) for _ in range(20)}
    assert len(tokens) == 20
    assert all(cipher.decrypt(t, context=CONTEXT) == ID for t in tokens)


def test_ciphertext_holds_no_plaintext(cipher: PiiCipher) -> None:
    for text in (ID, "13812345678"):
        token = cipher.encrypt(text, context=CONTEXT)
        assert text not in token
        assert text.lower() not in token.lower()
        digits = "".join(ch for ch in text if ch.isdigit())
        assert digits not in token
        assert digits[:8] not in token
        assert token.startswith("v1.")


def test_digest(cipher: PiiCipher) -> None:
    d = cipher.digest("13812345678", purpose="phone")
    assert len(d) == 32
    assert all(ch in "0123456789abcdef" for ch in d)
    assert "13812345678" not in d
    assert d == cipher.digest("13812345678", purpose="phone")
    assert d == PiiCipher(KEY).digest("13812345678", purpose="phone")
    assert d != PiiCipher(OTHER_KEY).digest("13812345678", purpose="phone")
    assert d != cipher.digest("13812345678", purpose="id")
    assert d != cipher.digest("13812345679", purpose="phone")


def test_digest_separates_purpose_from_value(cipher: PiiCipher) -> None:
    assert cipher.digest("b", purpose="a") != cipher.digest("", purpose="ab")


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_cipher_needs_32_bytes(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PiiCipher(b"k" * length)


def test_parse_key_accepts_standard_and_url_safe_base64() -> None:
    # a key whose base64 holds both '+'/'/' (standard) or '-'/'_' (URL-safe)
    key = bytes([0xFB, 0xFF, 0xBF] * 10 + [0xFE, 0xFF])
    standard = base64.b64encode(key).decode()
    url_safe = base64.urlsafe_b64encode(key).decode()
    assert "+" in standard or "/" in standard
    assert "-" in url_safe or "_" in url_safe
    assert parse_key(standard) == key
    assert parse_key(url_safe) == key
    assert parse_key(url_safe.rstrip("=")) == key
    assert parse_key(f"  {standard}\n") == key


def test_new_key_text_parses() -> None:
    text = new_key_text()
    assert len(parse_key(text)) == KEY_BYTES
    assert new_key_text() != text


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(b"k" * 31).decode(),
        base64.b64encode(b"k" * 33).decode(),
        base64.urlsafe_b64encode(b"k" * 31).decode(),
        "",
        "not base64!!",
        "@" * 44,
        "密钥" * 22,
    ],
)
def test_parse_key_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="PII key"):
        parse_key(text)


def test_parse_key_rejects_stray_characters() -> None:
    good = base64.b64encode(KEY).decode()
    for bad in (good[:20] + "!" + good[20:], good + "#", '"' + good + '"'):
        with pytest.raises(ValueError):
            parse_key(bad)


def test_load_or_create_key(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "k"
    key, created = load_or_create_key(path)
    assert created is True
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert parse_key(path.read_text(encoding="ascii")) == key
    again, created_again = load_or_create_key(path)
    assert (again, created_again) == (key, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_load_or_create_key_ignores_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_key(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_load_or_create_key_reads_an_operator_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(base64.b64encode(KEY).decode() + "\n", encoding="ascii")
    assert load_or_create_key(path) == (KEY, False)
    path.write_text("too short\n", encoding="ascii")
    with pytest.raises(ValueError, match="PII key"):
        load_or_create_key(path)

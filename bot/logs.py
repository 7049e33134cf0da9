"""Logging set-up, with a last line of defence against personal data in log lines.

Yibao's own code logs only user keys and masked forms. The redacting filter sits on the handler, so
it also covers third-party loggers and exception texts (a validation error quoting its input, say):
anything shaped like a Resident ID number or a mainland mobile number is masked before it is written.

WeChat's openids are the people's ids on a platform that guards them, and a WeCom userid is often the
employee's name in pinyin: a user key ``wx:<openid>`` is written as ``wx:#<keyed hash>``, and
``wecom:<corp>:<userid>`` as ``wecom:<corp>:#<keyed hash>`` (the same person, the same hash, in every
instance's log, keyed with the operator's key so it cannot be reversed by trying ids), once
``build_runtime`` gave the key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import sys
from pathlib import Path

from dialogs.masking import mask_id_number, mask_phone

_ID = re.compile(r"(?<![0-9])[1-9]\d{16}[\dXx](?![0-9])")
# also after +86 / 86 / 0086, the E.164 forms SMS gateways and their errors use
_PHONE = re.compile(r"(?:(?<![0-9])|(?<=86))1[3-9]\d{9}(?![0-9])")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PSEUDONYMIZED = re.compile(r"\bwx:([A-Za-z0-9_-]{6,64})|\bwecom:([A-Za-z0-9]{1,32}):([A-Za-z0-9_.@-]{1,64})")
_pseudonym_key = b"not yet keyed"


def pseudonymize_with(key: bytes) -> None:
    """Key the hashes that stand for openids in log lines (the process's operator key)."""
    global _pseudonym_key
    _pseudonym_key = hmac.new(key, b"yibao log pseudonyms", hashlib.sha256).digest()


def pseudonym(openid: str) -> str:
    return hmac.new(_pseudonym_key, openid.encode(), hashlib.sha256).hexdigest()[:12]


def _pseudonymize(m: re.Match[str]) -> str:
    if m.group(1) is not None:
        return "wx:#" + pseudonym(m.group(1))
    return f"wecom:{m.group(2)}:#{pseudonym(m.group(3))}"


def redact(text: str) -> str:
    text = _PSEUDONYMIZED.sub(_pseudonymize, text)
    text = _ID.sub(lambda m: mask_id_number(m.group()), text)
    return _PHONE.sub(lambda m: mask_phone(m.group()), text)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(level: str, file: Path | None) -> logging.Handler:
    """Route all logging to ``file`` (created 0600) or stderr, redacted. Returns the handler."""
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.touch(mode=0o600, exist_ok=True)
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request's URL at INFO; our client logs what matters, once per call.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    # PTB logs whole updates at DEBUG: what people type, SMS codes included, which no pattern can
    # tell from other numbers. It never goes below INFO.
    logging.getLogger("telegram").setLevel(max(logging.INFO, root.level))
    return handler

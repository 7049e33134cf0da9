"""Logging set-up, with a last line of defence against personal data in log lines.

Yibao's own code logs only user keys and masked forms. The redacting filter sits on the handler, so
it also covers third-party loggers and exception texts (a validation error quoting its input, say):
anything shaped like a Resident ID number or a mainland mobile number is masked before it is written.

In text lines, WeChat's openids (the people's ids on a platform that guards them) and WeCom's userids
(often the employee's name in pinyin) are never written either: a user key ``wx:<openid>`` is written
as ``wx:#<keyed hash>``, and ``wecom:<corp>:<userid>`` as ``wecom:<corp>:#<keyed hash>`` (the same
person, the same hash, in every instance's log, keyed with the operator's key so it cannot be
reversed by trying ids), once ``build_runtime`` gave the key.

``logging.format = "json"`` writes one JSON object a line: ``time`` (UTC), ``level``, ``logger``,
``event`` (the message, redacted), ``platform`` and ``user``. Every user key in the message
(``tg:123``, ``console:local``, ``wx:<openid>``, ``wecom:<corp>:<userid>``: the prefixes in
``USER_PREFIXES``) is replaced by ``u:<keyed hash>``, the hash the audit trail names users by, so a
chat id or an openid never reaches the log; an exception is its type and where it was raised, never
its message (which may quote what a user typed).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
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


USER_PREFIXES = ("tg", "console", "wx", "wecom")
"""The chat platforms' user key prefixes; a new platform adds its own here."""
_USER_KEY = re.compile(
    r"(?<![A-Za-z0-9])(" + "|".join(USER_PREFIXES) + r"):((?:[A-Za-z0-9]{1,32}:)?[A-Za-z0-9_.@\-]{1,64})"
)

UserHasher = Callable[[str], str]
_hasher: list[UserHasher] = []


def set_user_hasher(hasher: UserHasher | None) -> None:
    """How JSON lines name a user (the runtime sets the audit trail's keyed hash once it has the key)."""
    _hasher.clear()
    if hasher is not None:
        _hasher.append(hasher)


def _hash_user(user: str) -> str:
    return f"u:{_hasher[0](user)}" if _hasher else "u:?"


def redact(text: str) -> str:
    text = _PSEUDONYMIZED.sub(_pseudonymize, text)
    text = _ID.sub(lambda m: mask_id_number(m.group()), text)
    return _PHONE.sub(lambda m: mask_phone(m.group()), text)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with user keys hashed (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: its template, never its arguments
            message = str(record.msg)
        users = _USER_KEY.findall(message)
        event = redact(_USER_KEY.sub(lambda m: _hash_user(m.group(0)), message))
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": event,
        }
        platform = getattr(record, "platform", None) or (users[0][0] if users else None)
        if platform:
            line["platform"] = platform
        if users:
            line["user"] = _hash_user(":".join(users[0]))
        if record.exc_info and record.exc_info[0] is not None:
            kind, _, tb = record.exc_info
            line["exc_type"] = kind.__name__
            line["exc_where"] = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_tb(tb)][-5:]
        return json.dumps(line, ensure_ascii=False)


def setup_logging(level: str, file: Path | None, format: str = "text") -> logging.Handler:
    """Route all logging to ``file`` (created 0600) or stderr, redacted, as ``text`` or ``json``
    lines. Returns the handler."""
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.touch(mode=0o600, exist_ok=True)
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else RedactingFormatter(_FORMAT))
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

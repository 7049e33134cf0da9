"""The Telegram Mini App's ``initData``, validated as Telegram specifies ("Validating data received
via the Mini App", core.telegram.org/bots/webapps):

- ``secret_key = HMAC_SHA256(key="WebAppData", msg=bot_token)``;
- ``data_check_string``: every received field but ``hash``, as ``key=value`` (the value URL-decoded),
  sorted by key, joined by ``"\\n"``;
- valid when ``hex(HMAC_SHA256(key=secret_key, msg=data_check_string))`` equals ``hash`` (compared in
  constant time), and ``auth_date`` is recent (``[web] max_age_seconds``), so a captured ``initData``
  does not open a session for ever.

The user is ``user.id`` from the ``user`` field (JSON), which is the chat's user key ``tg:<id>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import parse_qsl

MAX_INIT_DATA = 8192
"""Longer than any real ``initData`` (a few hundred bytes): refused unparsed."""


def data_check_string(fields: dict[str, str]) -> str:
    return "\n".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "hash")


def telegram_user(init_data: str, bot_token: str, *, max_age_seconds: int, now: float) -> int | None:
    """The Telegram user id ``init_data`` vouches for, or None: not signed with this bot's token,
    tampered with, too old (or from the future), or without a user."""
    if not init_data or len(init_data) > MAX_INIT_DATA:
        return None
    try:
        pairs = parse_qsl(init_data, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    fields = dict(pairs)
    if len(fields) != len(pairs):  # a field given twice: which one was signed?
        return None
    received = fields.get("hash", "")
    secret_key = hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()
    expected = hmac.new(secret_key, data_check_string(fields).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, received.lower()):
        return None
    try:
        auth_date = int(fields["auth_date"])
        user = json.loads(fields["user"])
        user_id = user["id"]
    except (KeyError, ValueError, TypeError):
        return None
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
        return None
    if not -60 <= now - auth_date <= max_age_seconds:
        return None
    return user_id

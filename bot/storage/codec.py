"""How the dialogs' state is written to Redis, with personal data encrypted.

Session: JSON ``{"state": ..., "pending": <ciphertext of the pending bind>}``; an idle session with
nothing pending is not stored at all. Profile: a hash with the binding in three fields — ``b``, a
JSON array ``[member id, platform, bound at (Unix s), personal account (true/false/null)]``, and
``id`` and ``ph``, the ID and phone numbers sealed in binary — then ``threshold``, ``lang`` and the
alert's fields. Every field stays under Redis's ``hash-max-listpack-value`` (64 bytes), so the hash
is kept as a listpack, not a hashtable: 565 bytes a bound user before, about half now (the README's
Benchmark). Ciphertexts are bound to the user, so a record copied to another user's key does not
decrypt.

The binding of a user bound before this layout is one field, ``binding`` (JSON with text
ciphertexts), and is still read as it is (:data:`OLD_BINDING`); it is replaced by the three fields
the next time the user binds. Nothing needs migrating at an upgrade.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import partial

from pydantic import SecretStr, ValidationError

from bot.crypto.pii import PiiCipher, PiiError
from dialogs.crossing import AlertFacts
from dialogs.models import (
    Binding,
    CachedBalance,
    MemberId,
    PendingBind,
    PlatformName,
    Profile,
    Session,
    State,
    UserKey,
)
from dialogs.notices import AlertKind, AnyFacts, CreditFacts, FamilyFacts

log = logging.getLogger(__name__)

BINDING_FIELDS = ("b", "id", "ph")
"""The profile fields that hold a binding."""
OLD_BINDING = "binding"
"""The one field that held a binding before ``BINDING_FIELDS`` (JSON, text ciphertexts): still read."""


class LazySecret(SecretStr):
    """A secret decrypted the first time it is used: most messages (a /balance) never show the ID
    number or phone of the binding they load, so they need not pay for decrypting them."""

    def __init__(self, decrypt: Callable[[], str]) -> None:
        self._decrypt: Callable[[], str] | None = decrypt
        self._plain = ""

    @property
    def _secret_value(self) -> str:  # type: ignore[override]
        if self._decrypt is not None:
            self._plain, self._decrypt = self._decrypt(), None
        return self._plain


class StateCodec:
    def __init__(self, cipher: PiiCipher) -> None:
        self.cipher = cipher

    # -- session -------------------------------------------------------------------------------

    def encode_session(self, user: UserKey, session: Session) -> str | None:
        """None: nothing worth keeping (idle, nothing pending), so the key is deleted."""
        if session.state is State.IDLE and session.pending is None and session.history_cursor is None:
            return None
        record: dict[str, str] = {"state": session.state.value}
        if session.history_cursor is not None:
            record["history_cursor"] = session.history_cursor
        if session.pending is not None:
            pending = {
                k: (v.get_secret_value() if isinstance(v, SecretStr) else v)
                for k, v in session.pending
                if v is not None
            }
            # default: the face check's start (a datetime) as ISO text, which PendingBind reads back.
            text = json.dumps(pending, default=lambda v: v.isoformat())
            record["pending"] = self.cipher.encrypt(text, context=f"pending|{user}")
        return json.dumps(record)

    def decode_session(self, user: UserKey, raw: bytes | None) -> Session:
        if raw is None:
            return Session()
        try:
            record = json.loads(raw)
            pending = None
            if "pending" in record:
                pending = PendingBind.model_validate_json(
                    self.cipher.decrypt(record["pending"], context=f"pending|{user}")
                )
            return Session(
                state=State(record["state"]), pending=pending, history_cursor=record.get("history_cursor")
            )
        except (ValueError, KeyError, PiiError, ValidationError):
            # A half-finished conversation is not worth failing every later message for.
            log.warning("discarding an unreadable session for %s", user)
            return Session()

    # -- balance cache -------------------------------------------------------------------------
    # Balances are financial data: encrypted like the rest, though they live only a minute.

    def encode_balance(self, user: UserKey, cached: CachedBalance) -> str:
        return self.cipher.encrypt(cached.model_dump_json(), context=f"balance|{user}")

    def decode_balance(self, user: UserKey, raw: bytes | None) -> CachedBalance | None:
        if raw is None:
            return None
        try:
            return CachedBalance.model_validate_json(
                self.cipher.decrypt(raw.decode(), context=f"balance|{user}")
            )
        except (ValueError, PiiError, ValidationError):
            return None  # a cache: not worth failing for

    # -- alerts waiting in the outbox ----------------------------------------------------------
    # A balance, a threshold and where the user last paid: financial data, so encrypted like the rest.

    def encode_alert(self, user: UserKey, facts: AnyFacts) -> str:
        return self.cipher.encrypt(facts.model_dump_json(), context=f"alert|{user}")

    def decode_alert(self, user: UserKey, raw: bytes | str, kind: str = "") -> AnyFacts:
        """The facts of an alert of ``kind`` ("" for the low balance, else an ``AlertKind``). Raises
        ``PiiError`` or ``ValueError`` for a record that is not this user's alert of that kind."""
        token = raw.decode() if isinstance(raw, bytes) else raw
        text = self.cipher.decrypt(token, context=f"alert|{user}")
        if kind == "":
            return AlertFacts.model_validate_json(text)
        if kind == AlertKind.CREDIT:
            return CreditFacts.model_validate_json(text)
        if kind == AlertKind.FAMILY:
            return FamilyFacts.model_validate_json(text)
        raise ValueError(f"unknown alert kind {kind!r}")

    # -- profile -------------------------------------------------------------------------------

    def encode_binding(self, user: UserKey, binding: Binding) -> dict[str, bytes]:
        """The profile fields of a binding (``BINDING_FIELDS``); write them and delete ``OLD_BINDING``."""
        head = [
            binding.member_id,
            binding.platform,
            int(binding.bound_at.timestamp()),
            binding.personal_account,
        ]
        return {
            "b": json.dumps(head, separators=(",", ":")).encode(),
            "id": self.cipher.seal(binding.id_number.get_secret_value(), context=f"id|{user}"),
            "ph": self.cipher.seal(binding.phone.get_secret_value(), context=f"phone|{user}"),
        }

    @staticmethod
    def binding_member(raw: bytes) -> tuple[PlatformName, MemberId]:
        """The platform and member id of a stored binding (the ``b`` field, or an ``OLD_BINDING``),
        which are not encrypted (not personal), without decrypting anything: what the alert checks
        and sender need of a binding."""
        record = json.loads(raw.decode())
        if isinstance(record, list):
            return PlatformName(record[1]), MemberId(record[0])
        return PlatformName(record["platform"]), MemberId(record["member_id"])

    def decode_profile(self, user: UserKey, fields: dict[bytes, bytes]) -> Profile:
        """The binding's ID number and phone are decrypted when first used; that raises ``PiiError``
        if they do not decrypt (the operator's key changed)."""
        binding = None
        head = fields.get(b"b")
        old = fields.get(OLD_BINDING.encode())
        if head is not None:
            member_id, platform, bound_at, personal = json.loads(head)
            sealed_id, sealed_phone = fields.get(b"id", b""), fields.get(b"ph", b"")
            binding = Binding(
                member_id=MemberId(member_id),
                platform=PlatformName(platform),
                id_number=LazySecret(partial(self.cipher.unseal, sealed_id, context=f"id|{user}")),
                phone=LazySecret(partial(self.cipher.unseal, sealed_phone, context=f"phone|{user}")),
                bound_at=datetime.fromtimestamp(bound_at, tz=UTC),
                personal_account=personal,
            )
        elif old is not None:
            record = json.loads(old)
            binding = Binding(
                member_id=MemberId(record["member_id"]),
                platform=PlatformName(record["platform"]),
                id_number=LazySecret(partial(self.cipher.decrypt, record["id"], context=f"id|{user}")),
                phone=LazySecret(partial(self.cipher.decrypt, record["phone"], context=f"phone|{user}")),
                bound_at=datetime.fromisoformat(record["bound_at"]),
                personal_account=record.get("personal_account"),
            )
        threshold = None
        if b"threshold" in fields:
            try:
                threshold = Decimal(fields[b"threshold"].decode())
            except InvalidOperation:
                log.warning("ignoring an unreadable threshold for %s", user)
        lang = fields[b"lang"].decode() if b"lang" in fields else None
        kinds = frozenset(k.value for k in AlertKind if k.value.encode() in fields)
        return Profile(binding=binding, threshold=threshold, lang=lang, alert_kinds=kinds)

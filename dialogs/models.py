"""Values that cross the boundary of the conversation core.

Everything here is a pydantic model so that what is persisted passes through JSON and fails early
when it cannot. Personal data (names, ID numbers, phone numbers) is held as ``SecretStr`` so it never
shows up in a ``repr`` or a log line by accident; storage adapters encrypt those fields at rest.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NewType

from pydantic import BaseModel, ConfigDict, SecretStr

UserKey = NewType("UserKey", str)
"""A chatting person, ``<platform>:<id>`` (``tg:123``, ``console:local``)."""

MemberId = NewType("MemberId", str)
"""An insured member as one insurance platform knows them."""

PlatformName = NewType("PlatformName", str)
"""The configured name of an insurance platform (``sandbox``, ``beijing``...)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Location(_Frozen):
    """A place a user shared (WGS 84 degrees)."""

    lat: float
    lon: float


class Inbound(_Frozen):
    """One thing a user said: a message or a pressed button (whose payload is plain text)."""

    user: UserKey
    text: str
    location: Location | None = None
    """A shared location (Telegram's, WeChat's location message): the nearest designated
    institutions are its answer, whatever ``text`` (usually empty) says."""
    locale: str | None = None
    """The chat platform's language code for the user (``zh-hans``, ``en-US``), if it has one."""
    directory_name: SecretStr | None = None
    """The user's name as the chat platform's directory has it (a WeCom company's), given with
    ``/bind`` when the operator wants it proposed; the insurance platform still has to match it."""
    from_page: bool = False
    """Sent from one of Yibao's own pages (``platforms.web``), not typed in the chat: nothing of it
    stays in a chat history (the bind's consent need not warn that the ID number will)."""


class Button(_Frozen):
    label: str
    payload: str
    """Text the platform feeds back as an ``Inbound`` when the button is pressed."""


class Attachment(_Frozen):
    """A file sent with a reply (a chart): Telegram sends a photo, the console saves a file."""

    filename: str
    content: bytes
    media_type: str = "image/png"


class Reply(_Frozen):
    text: str
    buttons: tuple[Button, ...] = ()
    attachment: Attachment | None = None
    sensitive_input: bool = False
    """The message this replies to held personal data (an ID number, an SMS code); platforms that
    can delete the user's message should do so."""
    deleted_note: str = ""
    """What to tell the user if the platform did delete it (empty: delete silently)."""
    fields: tuple[tuple[str, str], ...] = ()
    """The message's facts by name, for platforms that send a template with fields rather than the
    text (WeChat's subscription messages): an alert's ``balance``, ``threshold``, ``time``, ``note``."""
    erased: bool = False
    """This reply tells the user that everything kept about them was erased (``/unbind``, once the
    store has done it): a platform that keeps anything of the user's itself (the console's chart
    files) deletes it too."""
    web_link: str | None = None
    """A link to one of Yibao's pages (``platforms.web``: ``/web``'s single-use link) that goes with
    the text. Telegram shows it as a button under the message (a Mini App ``web_app`` button for an
    https link, else a plain ``url`` button); WeChat, WeCom and the console put it on a line of its
    own after the text (``text_with_link``), so the text must read well either way."""

    def text_with_link(self) -> str:
        """The text, and the web link on a line of its own after it (platforms without buttons)."""
        if not self.web_link:
            return self.text
        return f"{self.text}\n{self.web_link}" if self.text else self.web_link


class State(StrEnum):
    IDLE = "idle"
    BIND_NAME = "bind_name"
    BIND_ID = "bind_id"
    BIND_PLATFORM = "bind_platform"
    BIND_CARD = "bind_card"
    BIND_FACE = "bind_face"
    BIND_CODE = "bind_code"
    ALERT_AMOUNT = "alert_amount"
    UNBIND_CONFIRM = "unbind_confirm"


class PendingBind(_Frozen):
    """What the bind flow has gathered so far. Sensitive: stored encrypted."""

    name: SecretStr | None = None
    id_number: SecretStr | None = None
    member_id: MemberId | None = None
    platform: PlatformName | None = None
    phone: SecretStr | None = None
    masked_phone: str | None = None
    card_number: SecretStr | None = None
    """The local social-security card number, for a platform whose bind needs it."""
    ticket: str | None = None
    """The platform's face-check ticket, while the bind waits for it."""
    face_url: str | None = None
    face_since: datetime | None = None
    """When the face check was asked for: the bind waits ``verification_wait_seconds`` from then."""
    locale: str | None = None
    """The language the bind was answered in, for what the background poll says unprompted."""


class Session(_Frozen):
    """Short-lived conversation state; expires after the configured idle time."""

    state: State = State.IDLE
    pending: PendingBind | None = None
    history_cursor: str | None = None
    """Where ``/history more`` goes on from."""


class Binding(_Frozen):
    """The proven link between a user and an insured member. Permanent until ``/unbind``."""

    member_id: MemberId
    platform: PlatformName
    id_number: SecretStr
    phone: SecretStr
    bound_at: datetime
    personal_account: bool | None = None
    """Whether the member had a personal account when bound (None: not known), so that what needs
    one (alerts) is neither offered nor promised to a member without it."""


class Profile(_Frozen):
    """What Yibao keeps about a user beyond the session."""

    binding: Binding | None = None
    threshold: Decimal | None = None
    lang: str | None = None
    alert_kinds: frozenset[str] = frozenset()
    """The alert kinds beyond the low balance that are on (``dialogs.notices.AlertKind`` values)."""


class BalanceView(_Frozen):
    personal_account: Decimal | None
    """None: the member has no personal account (most residents' insurance)."""
    pooled_used: Decimal
    pooled_remaining: Decimal
    pooled_year: int
    as_of: datetime
    stale: bool = False
    """The platform says its data is still syncing: these are the last known figures."""


class CachedBalance(_Frozen):
    """A balance fetched moments ago, so a repeated ``/balance`` does not ask the platform again."""

    view: BalanceView
    fetched_at: datetime


class UserState(_Frozen):
    """Everything one update needs, loaded in one round trip."""

    session: Session = Session()
    profile: Profile = Profile()
    balance: CachedBalance | None = None
    unreachable: bool = False
    """The chat platform could not reach the user; their message clears it (a write)."""


class EventKind(StrEnum):
    """Things a turn did that the operator counts (aggregates) or audits; never what was said."""

    BIND_STARTED = "bind_started"
    CODE_SENT = "code_sent"
    """The member was found and the first code went out (the funnel's middle step)."""
    BOUND = "bound"
    BIND_FAILED = "bind_failed"
    LOCKED_OUT = "locked_out"
    """This turn's failure paused binding (the user's own limit, or the ID number's)."""
    UNBOUND = "unbound"
    """The user was erased from the chat (/unbind)."""
    ANSWER_FAILED = "answer_failed"
    """The message got the apology: ``store_unavailable`` or ``error`` (counted, not audited)."""


class Event(_Frozen):
    kind: EventKind
    reason: str = ""
    """For ``BIND_FAILED``: a short closed word (``member_not_found``, ``code_wrong``...)."""
    insurer: str = ""
    """The insurance platform concerned, when there is one."""


class Outcome(_Frozen):
    """What a step decided: the replies, the next session and what changes in the profile.

    Profile changes are explicit so the store can write them in the same guarded round trip as the
    session. ``erase`` wins over everything else: every key about the user goes, and the replies
    say so to the platform (``Reply.erased``).
    """

    replies: tuple[Reply, ...]
    session: Session
    set_binding: Binding | None = None
    set_threshold: Decimal | None = None
    alert_locale: str | None = None
    """With ``set_threshold``: the language the user was answered in, which their alerts will speak
    (unless they chose one with ``/lang``)."""
    clear_threshold: bool = False
    kinds_on: frozenset[str] = frozenset()
    """Alert kinds turned on (``dialogs.notices.AlertKind`` values): checked from the next tick."""
    kinds_off: frozenset[str] = frozenset()
    keep_checking: bool = False
    """With ``clear_threshold`` or ``kinds_off``: other alerts stay on, so the user stays scheduled."""
    set_lang: str | None = None
    cache_balance: CachedBalance | None = None
    """Keep this balance for the configured cache time (a new binding drops any cached one)."""
    erase: bool = False
    events: tuple[Event, ...] = ()
    """What the operator counts or audits about this turn (``EventSink``); never what was said."""

    def changes_nothing(self, before: UserState) -> bool:
        """Nothing to write: the user was and stays idle, and no record changes. Such an outcome may
        be answered without the user's guard (it only reads)."""
        idle = Session()
        return (
            before.session == idle
            and self.session == idle
            and not before.unreachable
            and self.set_binding is None
            and self.set_threshold is None
            and not self.clear_threshold
            and not self.kinds_on
            and not self.kinds_off
            and self.set_lang is None
            and self.cache_balance is None
            and not self.erase
            and not self.events
        )

"""The other alert kinds (issue 17): the monthly credit arrived, and a family member spent from the
personal account. The part the dialogs own: when what a platform shows is news, and what the alert says.

Each kind is on for a user when their profile has its field; the field is also the kind's watch:

- ``on``: turned on, nothing seen yet. The first check takes what the platform shows as the starting
  point and alerts nothing (turning the credit alert on in the middle of the month does not announce
  last month's credit).
- ``t:<token>``: told up to this point. For the credit, the token is when the newest credit seen was
  made (epoch seconds); a newer one is news. For the family, the token is a short digest of what each
  relative had spent this year (``family_seen`` keeps the figures themselves); more spent by anyone is news.

The token is the alert's idempotency key, as the crossing token is for the low balance: a check
repeated after a crash queues the same token again, and the sender recognises the repeat (the
kind's ``*_sent`` field). Unlike a crossing's, the token is new when the alert is queued: the check
writes the entry first and the watch after it, so the sender holds such an alert current for as long
as its kind is on (turned off, it is dropped as ``superseded``), not only while the watch names it.

Figures that may be wrong never move a watch: a platform that cannot answer now leaves it as it is.
The family figures restart each year: a relative's spending in a new year is counted from zero.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Generic, TypeVar

from dialogs.amounts import format_money
from dialogs.crossing import AlertFacts, alert_replies
from dialogs.i18n import Translator
from dialogs.models import Button, Reply, _Frozen
from dialogs.ports import ContributionView, RelativeView

ON = "on"
TOLD = "t:"


class AlertKind(StrEnum):
    """An alert kind beyond the low balance; its value is its profile field and its outbox kind."""

    CREDIT = "credit"
    """The monthly credit (划入) into the personal account arrived."""
    FAMILY = "family"
    """A family member (家庭共济) spent from the personal account."""

    @property
    def sent_field(self) -> str:
        return f"{self.value}_sent"


FAMILY_SEEN = "family_seen"
"""The profile field with what each relative had spent when last told: ``<year>;<id>=<fen>,...``."""

KIND_FIELDS = (AlertKind.CREDIT.value, AlertKind.FAMILY.value, FAMILY_SEEN)
"""Every profile field of the kinds but the ``*_sent`` ones."""


def token_of(mark: str | None) -> str:
    """The token a watch was told up to ("" for ``on`` or none)."""
    return mark[len(TOLD) :] if mark is not None and mark.startswith(TOLD) else ""


class CreditFacts(_Frozen):
    """The credit(s) a check found, kept (encrypted) in the outbox until the alert is sent."""

    month: str
    """``YYYY-MM`` of the newest credit."""
    amount: Decimal
    credited_at: datetime
    base: Decimal | None = None
    rate: Decimal | None = None
    earlier: Decimal = Decimal(0)
    """Other credits made since the last alert (a platform that credited two months at once)."""


class RelativeSpend(_Frozen):
    masked_name: str
    relation: str
    amount: Decimal
    """Spent since the last alert."""
    year_total: Decimal


class FamilyFacts(_Frozen):
    year: int
    spends: tuple[RelativeSpend, ...]
    found_at: datetime


F = TypeVar("F")


@dataclass(frozen=True, slots=True)
class News(Generic[F]):
    """A check's verdict on one kind: the mark (and for the family, the figures) to write, and the
    facts to send (None: only the starting point is taken, nothing to tell)."""

    mark: str
    facts: F | None
    seen: str | None = None


def judge_credit(mark: str | None, months: tuple[ContributionView, ...]) -> News[CreditFacts] | None:
    """None: nothing new (or nothing sure)."""
    credited = [m for m in months if m.credited_at is not None and m.credit > 0]
    if not credited:  # none yet: the starting point is "none", so the first one is news
        return None if token_of(mark) else News(mark=TOLD + "0", facts=None)
    newest = max(credited, key=lambda m: m.credited_at or datetime.min)
    assert newest.credited_at is not None
    stamp = str(int(newest.credited_at.timestamp()))
    told = token_of(mark)
    if not told:
        return News(mark=TOLD + stamp, facts=None)
    try:
        told_at = int(told)
    except ValueError:
        return News(mark=TOLD + stamp, facts=None)
    if int(stamp) <= told_at:
        return None
    earlier = sum(
        (
            m.credit
            for m in credited
            if m is not newest and m.credited_at is not None and m.credited_at.timestamp() > told_at
        ),
        Decimal(0),
    )
    facts = CreditFacts(
        month=newest.month,
        amount=newest.credit,
        credited_at=newest.credited_at,
        base=newest.base,
        rate=newest.rate,
        earlier=earlier,
    )
    return News(mark=TOLD + stamp, facts=facts)


def relative_id(r: RelativeView) -> str:
    """A short name for one relative in ``family_seen``: not their name, nothing that reads back."""
    text = f"{r.masked_name}|{r.relation}|{r.since.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def parse_seen(seen: str | None) -> tuple[int, dict[str, int]]:
    """``family_seen`` as (year, fen spent by each relative); (0, {}) when missing or unreadable."""
    if not seen:
        return 0, {}
    year_text, _, rest = seen.partition(";")
    try:
        year = int(year_text)
        spent = {}
        for part in filter(None, rest.split(",")):
            name, _, fen = part.partition("=")
            spent[name] = int(fen)
    except ValueError:
        return 0, {}
    return year, spent


def _fen(amount: Decimal) -> int:
    try:
        return int((amount * 100).to_integral_value())
    except InvalidOperation:
        return 0


def judge_family(
    mark: str | None, seen: str | None, year: int, relatives: tuple[RelativeView, ...], found_at: datetime
) -> News[FamilyFacts] | None:
    """None: nothing new. ``year``: the year the figures are of (the platform's, else now's)."""
    now_spent = {relative_id(r): _fen(r.spent_this_year) for r in relatives}
    new_seen = f"{year};" + ",".join(f"{k}={v}" for k, v in sorted(now_spent.items()))
    token = hashlib.sha256(new_seen.encode()).hexdigest()[:12]
    if not token_of(mark):
        return News(mark=TOLD + token, facts=None, seen=new_seen)
    seen_year, before = parse_seen(seen)
    if seen_year > year:  # figures older than what was seen: a lagging replica of the platform
        return None
    if seen_year != year:
        before = {}
    spends = []
    for r in relatives:
        more = now_spent[relative_id(r)] - before.get(relative_id(r), 0)
        if more > 0:
            spends.append(
                RelativeSpend(
                    masked_name=r.masked_name,
                    relation=r.relation,
                    amount=Decimal(more) / 100,
                    year_total=r.spent_this_year,
                )
            )
    if new_seen == seen:
        return None
    if not spends:  # less spent (a refund), or a relative added or gone: the new point, no alert
        return News(mark=TOLD + token, facts=None, seen=new_seen)
    return News(
        mark=TOLD + token,
        facts=FamilyFacts(year=year, spends=tuple(spends), found_at=found_at),
        seen=new_seen,
    )


def _buttons(t: Translator, kind: AlertKind) -> tuple[Button, ...]:
    return (
        Button(label=t.gettext("Balance"), payload="/balance"),
        Button(label=t.gettext("Turn this alert off"), payload=f"/alert {kind.value} off"),
    )


def credit_replies(t: Translator, facts: CreditFacts, tz: tzinfo) -> tuple[Reply, ...]:
    lines = [
        t.gettext(
            "💰 Your monthly credit arrived: {amount} into your personal account for {month}, on {date}."
        ).format(
            amount=format_money(facts.amount),
            month=facts.month,
            date=facts.credited_at.astimezone(tz).strftime("%Y-%m-%d"),
        )
    ]
    if facts.earlier > 0:
        lines.append(
            t.gettext("With the credits before it since my last alert: {total} in all.").format(
                total=format_money(facts.amount + facts.earlier)
            )
        )
    if facts.base is not None and facts.rate is not None:
        percent = f"{(facts.rate * 100).normalize():f}"
        lines.append(
            t.gettext("Why this much: your contribution base {base} × {rate}% = {amount}.").format(
                base=format_money(facts.base), rate=percent, amount=format_money(facts.amount)
            )
        )
    lines.append(t.gettext("/contributions shows the months before. /alert credit off turns this alert off."))
    return (Reply(text="\n".join(lines), buttons=_buttons(t, AlertKind.CREDIT)),)


def relation_label(t: Translator, relation: str) -> str:
    return {
        "spouse": t.gettext("spouse"),
        "child": t.gettext("child"),
        "parent": t.gettext("parent"),
    }.get(relation, t.gettext("family"))


def family_replies(t: Translator, facts: FamilyFacts, tz: tzinfo) -> tuple[Reply, ...]:
    lines = [t.gettext("👪 Your family used your personal account (家庭共济):")]
    for s in facts.spends:
        lines.append(
            t.gettext("• {name} ({relation}) spent {amount}; {total} this year.").format(
                name=s.masked_name,
                relation=relation_label(t, s.relation),
                amount=format_money(s.amount),
                total=format_money(s.year_total),
            )
        )
    lines.append(
        t.gettext("As of {at}. /family shows everyone; /alert family off turns this alert off.").format(
            at=facts.found_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        )
    )
    return (Reply(text="\n".join(lines), buttons=_buttons(t, AlertKind.FAMILY)),)


AnyFacts = AlertFacts | CreditFacts | FamilyFacts
"""What any alert in the outbox carries."""


def notice_replies(t: Translator, facts: AnyFacts, tz: tzinfo) -> tuple[Reply, ...]:
    """The alert's messages, in ``t``'s language, for any kind."""
    if isinstance(facts, CreditFacts):
        return credit_replies(t, facts, tz)
    if isinstance(facts, FamilyFacts):
        return family_replies(t, facts, tz)
    return alert_replies(t, facts, tz)

"""Low-balance alerts, the part the dialogs own: when a balance is a crossing, and what the alert says.

A *crossing* is the personal-account balance going from at-or-above the user's threshold to below it;
one crossing gives one alert. The user's watch over their threshold is *armed* (the next balance
below it is a crossing) or *told* (they were alerted; nothing more until it re-arms). It re-arms when
the balance is back at or above the threshold (the monthly credit) or the threshold changes. Each
arming has a fresh random token, which is the crossing's idempotency key: a check repeated after a
crash finds the same token, so the alert it queues again is recognised as the same one.

Figures that may be wrong never move the watch: a stale balance (the platform is still syncing) or
no balance at all (the platform could not be reached) neither alerts nor re-arms.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from enum import StrEnum

from dialogs.amounts import format_money
from dialogs.i18n import Translator
from dialogs.models import BalanceView, Button, Reply, _Frozen

ARMED = "a"
TOLD = "t"


@dataclass(frozen=True, slots=True)
class Watch:
    """The state of one user's threshold, as kept in their profile (``a:<token>`` or ``t:<token>``)."""

    token: str
    told: bool

    @classmethod
    def parse(cls, mark: str | None, sent: str | None = None) -> Watch:
        """``sent``: the token of the last alert delivered, which also counts as told (the check
        that queued it may have stopped before writing ``t:``)."""
        state, _, token = (mark or "").partition(":")
        return cls(token=token, told=state == TOLD or (bool(token) and token == sent))

    def mark(self) -> str:
        return f"{TOLD if self.told else ARMED}:{self.token}"


class Verdict(StrEnum):
    ALERT = "alert"
    """Below the threshold, not told about it yet: queue one alert for this crossing."""
    REARM = "rearm"
    """Back at or above the threshold after an alert: the next drop is a new crossing."""
    NOTHING = "nothing"


def judge(threshold: Decimal, watch: Watch, balance: BalanceView) -> Verdict:
    if balance.stale or balance.personal_account is None or not watch.token:
        return Verdict.NOTHING
    below = balance.personal_account < threshold
    if below and not watch.told:
        return Verdict.ALERT
    if not below and watch.told:
        return Verdict.REARM
    return Verdict.NOTHING


class Spend(_Frozen):
    at: datetime
    place: str
    amount: Decimal
    """Paid from the personal account (a positive amount)."""


class AlertFacts(_Frozen):
    """What a check found, kept (encrypted) in the outbox until the alert is sent; the text is made
    at sending time, in the language the user has then."""

    balance: Decimal
    threshold: Decimal
    as_of: datetime
    latest_spend: Spend | None = None


def alert_replies(t: Translator, facts: AlertFacts, tz: tzinfo) -> tuple[Reply, ...]:
    def stamp(when: datetime) -> str:
        return when.astimezone(tz).strftime("%Y-%m-%d %H:%M")

    lines = [
        t.gettext(
            "🔔 Low balance: your personal account has {balance} (as of {as_of}), below your alert at "
            "{threshold}."
        ).format(
            balance=format_money(facts.balance),
            as_of=stamp(facts.as_of),
            threshold=format_money(facts.threshold),
        )
    ]
    spend = facts.latest_spend
    if spend is not None:
        lines.append(
            t.gettext("Latest payment: {amount} at {place}, {at}.").format(
                amount=format_money(spend.amount), place=spend.place, at=stamp(spend.at)
            )
        )
    lines.append(
        t.gettext("Send /alert with a new amount to change the alert, or /alert off to turn it off.")
    )
    buttons = (
        Button(label=t.gettext("Balance"), payload="/balance"),
        Button(label=t.gettext("Turn the alert off"), payload="/alert off"),
    )
    fields = (
        ("balance", format_money(facts.balance)),
        ("threshold", format_money(facts.threshold)),
        ("time", stamp(facts.as_of)),
        ("note", t.gettext("Below your alert amount")),
    )
    return (Reply(text="\n".join(lines), buttons=buttons, fields=fields),)

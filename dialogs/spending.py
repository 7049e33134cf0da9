"""Arithmetic over transactions: periods, totals, the balance over time, spending per month.

Pure functions (no ports), in the user's time zone. Amounts follow the contract's signs: spending is
negative on the personal account and the pooled fund, a credit is positive on the personal account.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

from dialogs.intents import Fund, Period
from dialogs.ports import TransactionView

SPENDING_CATEGORIES = ("pharmacy", "outpatient", "inpatient")
CREDIT = "credit"


def month_start(day: date, back: int = 0) -> date:
    """The first day of the month ``back`` months before ``day``'s."""
    index = day.year * 12 + day.month - 1 - back
    return date(index // 12, index % 12 + 1, 1)


def at_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=tz)


def period_bounds(period: Period, now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime, date]:
    """``[start, end)`` of the period, and the first day of it (for its label)."""
    today = now.astimezone(tz).date()
    match period:
        case Period.THIS_MONTH:
            first, after = month_start(today), month_start(today, -1)
        case Period.LAST_MONTH:
            first, after = month_start(today, 1), month_start(today)
        case Period.THIS_YEAR:
            first, after = date(today.year, 1, 1), date(today.year + 1, 1, 1)
        case Period.LAST_YEAR:
            first, after = date(today.year - 1, 1, 1), date(today.year, 1, 1)
    return at_midnight(first, tz), at_midnight(after, tz), first


@dataclass
class Part:
    """What one fund (or both together) paid: the amount, by category, and in how many payments.
    The categories always add up to the amount."""

    amount: Decimal = Decimal(0)
    by_category: dict[str, Decimal] = field(default_factory=dict)
    count: int = 0

    def add(self, category: str, paid: Decimal) -> None:
        if paid == 0:
            return
        self.amount += paid
        self.by_category[category] = self.by_category.get(category, Decimal(0)) + paid
        self.count += 1


@dataclass
class Totals:
    parts: dict[Fund, Part] = field(default_factory=lambda: {fund: Part() for fund in Fund})

    @property
    def personal(self) -> Decimal:
        """Paid from the personal account (positive)."""
        return self.parts[Fund.PERSONAL].amount

    @property
    def pooled(self) -> Decimal:
        """Paid by the pooled fund (positive)."""
        return self.parts[Fund.POOLED].amount

    @property
    def total(self) -> Decimal:
        return self.parts[Fund.ALL].amount

    @property
    def count(self) -> int:
        return self.parts[Fund.ALL].count


def totals(items: Iterable[TransactionView]) -> Totals:
    """Spending (credits left out) split by who paid: each fund's part has its own categories and
    count, so a breakdown shown under a fund's figure is of that figure."""
    out = Totals()
    for tx in items:
        if tx.category == CREDIT:
            continue
        out.parts[Fund.PERSONAL].add(tx.category, -tx.personal)
        out.parts[Fund.POOLED].add(tx.category, -tx.pooled)
        out.parts[Fund.ALL].add(tx.category, -(tx.personal + tx.pooled))
    return out


def balance_series(
    current: Decimal, newest_first: Sequence[TransactionView], since: date, today: date, tz: ZoneInfo
) -> tuple[tuple[date, Decimal], ...]:
    """The personal-account balance at the end of each day that changed it, from ``since`` to
    ``today``, worked back from the current balance (oldest first)."""
    opening = current - sum((tx.personal for tx in newest_first), Decimal(0))
    points: dict[date, Decimal] = {since: opening}
    running = opening
    for tx in reversed(newest_first):
        running += tx.personal
        points[tx.at.astimezone(tz).date()] = running
    points[today] = current
    return tuple(sorted(points.items()))


def monthly_spending(
    items: Iterable[TransactionView], months: Sequence[date], tz: ZoneInfo
) -> dict[str, list[Decimal]]:
    """Per spending category, the amount spent in each of ``months`` (first days, oldest first)."""
    index = {(m.year, m.month): i for i, m in enumerate(months)}
    out: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * len(months))
    for tx in items:
        if tx.category == CREDIT:
            continue
        local = tx.at.astimezone(tz)
        i = index.get((local.year, local.month))
        if i is not None:
            out[tx.category][i] += -(tx.personal + tx.pooled)
    return {c: out[c] for c in SPENDING_CATEGORIES if c in out}

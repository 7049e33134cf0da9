"""What the account holds: /balance (with its short cache), /history, spending questions, /chart."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from dialogs.i18n import Translator
from dialogs.intents import Fund, Period
from dialogs.models import (
    Attachment,
    BalanceView,
    Binding,
    Button,
    Outcome,
    Reply,
    Session,
)
from dialogs.ports import (
    ChartData,
    InsuranceProblem,
    TransactionView,
)
from dialogs.spending import (
    SPENDING_CATEGORIES,
    at_midnight,
    balance_series,
    month_start,
    monthly_spending,
    period_bounds,
    totals,
)
from dialogs.turn import Turn

_MORE = frozenset({"more", "next", "更多", "下一页"})
_MAX_PAGES = 20
"""Pages of transactions read for one answer (at 100 a page, more than a year of them)."""


class AccountFlow(Turn):
    async def cmd_balance(self, _arg: str = "") -> Outcome:
        binding = self.profile.binding
        if binding is None:
            return self.not_bound()
        try:
            view, fresh = await self.current_balance(binding)
        except InsuranceProblem as problem:
            return self.out(self.account_problem(problem))
        outcome = self.out(*self.balance_texts(view), cache_balance=fresh)
        first = outcome.replies[0].model_copy(update={"fields": self.balance_fields(view)})
        return outcome.model_copy(update={"replies": (first, *outcome.replies[1:])})

    def balance_fields(self, view: BalanceView) -> tuple[tuple[str, str], ...]:
        """The figures of the balance reply by name, formatted as its text says them, for a
        platform that lays them out itself (the web page's account card)."""
        personal = "" if view.personal_account is None else self.money(view.personal_account)
        return (
            ("personal", personal),
            ("pooled_used", self.money(view.pooled_used)),
            ("pooled_remaining", self.money(view.pooled_remaining)),
            ("pooled_year", str(view.pooled_year)),
            ("as_of", self.stamp(view.as_of)),
            ("stale", "1" if view.stale else ""),
        )

    def balance_texts(self, view: BalanceView) -> tuple[str, ...]:
        t = self.t
        if view.personal_account is None:
            personal = t.gettext(
                "Personal account (个人账户): none — residents' insurance usually has no personal account"
            )
        else:
            personal = t.gettext("Personal account (个人账户): {amount}").format(
                amount=self.money(view.personal_account)
            )
        body = "\n".join(
            (
                t.gettext("Your medical-insurance account, as of {as_of}:").format(
                    as_of=self.stamp(view.as_of)
                ),
                personal,
                t.gettext("Pooled fund (统筹基金) {year}: used {used}, remaining {remaining}").format(
                    year=view.pooled_year,
                    used=self.money(view.pooled_used),
                    remaining=self.money(view.pooled_remaining),
                ),
            )
        )
        if not view.stale:
            return (body,)
        warning = t.gettext(
            "⚠️ The insurance platform is still syncing. These are the last known figures, from {as_of}, "
            "and may not include recent spending. Check again later, or call {hotline} to confirm."
        ).format(as_of=self.stamp(view.as_of), hotline=self.cfg.hotline)
        return (warning + "\n\n" + body,)

    def category(self, name: str, t: Translator | None = None) -> str:
        t = t or self.t
        return {
            "pharmacy": t.gettext("pharmacy"),
            "outpatient": t.gettext("outpatient"),
            "inpatient": t.gettext("inpatient"),
            "credit": t.gettext("credit"),
        }.get(name, name)

    def tx_line(self, tx: TransactionView) -> str:
        t = self.t
        day = tx.at.astimezone(self.cfg.timezone).strftime("%Y-%m-%d")
        if tx.category == "credit":
            return t.gettext("{date} {place}: +{amount} to the personal account").format(
                date=day, place=tx.place, amount=self.money(tx.personal)
            )
        parts = []
        if tx.personal:
            parts.append(t.gettext("personal account {amount}").format(amount=self.money(-tx.personal)))
        if tx.pooled:
            parts.append(t.gettext("pooled fund {amount}").format(amount=self.money(-tx.pooled)))
        return t.gettext("{date} {place} ({category}): {total}, paid by {parts}").format(
            date=day,
            place=tx.place,
            category=self.category(tx.category),
            total=self.money(-(tx.personal + tx.pooled)),
            parts=" + ".join(parts),
        )

    async def cmd_history(self, arg: str = "") -> Outcome:
        binding = self.profile.binding
        if binding is None:
            return self.not_bound()
        cursor = None
        limit = self.cfg.history_page
        if arg.lower() in _MORE:
            cursor = self.session.history_cursor
            if cursor is None:
                return self.out(
                    self.t.gettext("There are no more transactions to show. /history starts again.")
                )
        elif arg:
            if not arg.isdigit() or not 1 <= int(arg) <= self.cfg.history_max:
                return self.out(
                    self.t.gettext("Give a number of transactions from 1 to {max}, e.g. /history 30.").format(
                        max=self.cfg.history_max
                    )
                )
            limit = int(arg)
        try:
            page = await self.insurance.transactions(
                binding.platform, binding.member_id, cursor=cursor, limit=limit
            )
        except InsuranceProblem as problem:
            return self.out(self.account_problem(problem))
        if not page.items:
            return self.out(self.t.gettext("No transactions in the last 12 months."))
        n = len(page.items)
        header = (
            self.t.gettext("More transactions:")
            if cursor
            else self.t.ngettext("Your latest {n} transaction:", "Your latest {n} transactions:", n).format(
                n=n
            )
        )
        text = "\n".join([header, *(self.tx_line(tx) for tx in page.items)])
        if page.next_cursor is None:
            return self.out(text)
        more = Button(label=self.t.gettext("More ▸"), payload="/history more")
        return Outcome(
            replies=(Reply(text=text, buttons=(more,)),), session=Session(history_cursor=page.next_cursor)
        )

    async def transactions_since(
        self, binding: Binding, start: datetime, end: datetime
    ) -> list[TransactionView]:
        items: list[TransactionView] = []
        cursor = None
        for _ in range(_MAX_PAGES):
            page = await self.insurance.transactions(
                binding.platform, binding.member_id, start=start, end=end, cursor=cursor, limit=100
            )
            items += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        return items

    def period_label(self, period: Period, first: date) -> str:
        t = self.t
        month = first.strftime("%Y-%m")
        return {
            Period.THIS_MONTH: t.gettext("this month ({month})").format(month=month),
            Period.LAST_MONTH: t.gettext("last month ({month})").format(month=month),
            Period.THIS_YEAR: t.gettext("this year ({year})").format(year=first.year),
            Period.LAST_YEAR: t.gettext("last year ({year})").format(year=first.year),
        }[period]

    async def spending(self, period: Period, fund: Fund) -> Outcome:
        binding = self.profile.binding
        if binding is None:
            return self.not_bound()
        start, end, first = period_bounds(period, self.now, self.cfg.timezone)
        try:
            items = await self.transactions_since(binding, start, end)
        except InsuranceProblem as problem:
            return self.out(self.account_problem(problem))
        t, sums, when = self.t, totals(items), self.period_label(period, first)
        if sums.count == 0:
            return self.out(t.gettext("No medical spending {period}.").format(period=when))
        part = sums.parts[fund]
        if fund is Fund.POOLED:
            if part.count == 0:
                return self.out(
                    t.gettext("{period}: the pooled fund paid nothing for you.").format(period=when)
                )
            head = t.gettext("{period}: the pooled fund paid {amount} for you.").format(
                period=when, amount=self.money(part.amount)
            )
        elif fund is Fund.PERSONAL:
            if part.count == 0:
                return self.out(
                    t.gettext("{period}: nothing was paid from your personal account.").format(period=when)
                )
            head = t.gettext("{period}: you paid {amount} from your personal account.").format(
                period=when, amount=self.money(part.amount)
            )
        else:
            head = t.gettext(
                "{period}: you spent {total}, {personal} from your personal account and {pooled} from the pooled fund."
            ).format(
                period=when,
                total=self.money(sums.total),
                personal=self.money(sums.personal),
                pooled=self.money(sums.pooled),
            )
        # The breakdown is of the figure just given: that fund's payments only.
        split = " · ".join(
            t.gettext("{category} {amount}").format(
                category=self.category(c), amount=self.money(part.by_category[c])
            )
            for c in SPENDING_CATEGORIES
            if c in part.by_category
        )
        count = t.ngettext("{n} payment", "{n} payments", part.count).format(n=part.count)
        breakdown = t.gettext("{breakdown} ({count})").format(breakdown=split, count=count)
        return self.out(f"{head[:1].upper()}{head[1:]}\n{breakdown}")

    async def cmd_chart(self, _arg: str = "") -> Outcome:
        binding = self.profile.binding
        if binding is None:
            return self.not_bound()
        charts = self.conv.charts
        if charts is None:
            return self.out(self.t.gettext("Charts are not available here."))
        tz = self.cfg.timezone
        today = self.now.astimezone(tz).date()
        months = tuple(month_start(today, back) for back in range(11, -1, -1))
        try:
            view, fresh = await self.current_balance(binding)
            items = await self.transactions_since(binding, at_midnight(months[0], tz), self.now)
        except InsuranceProblem as problem:
            return self.out(self.account_problem(problem))
        # Without a CJK font the picture is labelled in English rather than with empty boxes.
        t = self.t if charts.can_draw_chinese() else self.conv.catalogs.get("en")
        per_month = monthly_spending(items, months, tz)
        if view.personal_account is None:
            balance: tuple[tuple[date, Decimal], ...] = ()
            note = t.gettext(
                "No personal account: residents' insurance usually has none, so there is no balance "
                "to draw. The bars below are what was spent, by you and by the pooled fund."
            )
        else:
            # A syncing platform's figure is as of its time, not of today: the line ends there.
            last = view.as_of.astimezone(tz).date() if view.stale else today
            balance = balance_series(view.personal_account, items, months[0], max(last, months[0]), tz)
            note = (
                t.gettext(
                    "Last known balance, from {as_of}: the insurance platform is still syncing."
                ).format(as_of=self.stamp(view.as_of))
                if view.stale
                else ""
            )
        data = ChartData(
            title=t.gettext("Medical insurance, {start} to {end}").format(
                start=months[0].strftime("%Y-%m"), end=today.strftime("%Y-%m")
            ),
            balance_label=(
                t.gettext("Personal account balance (¥)")
                if view.personal_account is not None
                else t.gettext("Personal account: none")
            ),
            spending_label=t.gettext("Spending per month (¥)"),
            balance=balance,
            months=months,
            spending=tuple((self.category(c, t), tuple(v)) for c, v in per_month.items()),
            balance_note=note,
        )
        png = await charts.render(data)
        as_of = self.stamp(view.as_of)
        if view.personal_account is None:
            caption = self.t.gettext(
                "Your spending over the last 12 months, as of {as_of}. You have no personal account, so "
                "the chart shows no balance."
            ).format(as_of=as_of)
        else:
            caption = self.t.gettext(
                "Your personal account and spending over the last 12 months, as of {as_of}."
            ).format(as_of=as_of)
        if view.stale:
            caption = (
                self.t.gettext(
                    "⚠️ The insurance platform is still syncing: these are the last known figures, from {as_of}."
                ).format(as_of=as_of)
                + "\n"
                + caption
            )
        # One file per request (to the second, and the console never overwrites one).
        stamp = self.now.astimezone(tz).strftime("%Y%m%d-%H%M%S")
        image = Attachment(filename=f"yibao-chart-{stamp}.png", content=png)
        return Outcome(
            replies=(Reply(text=caption, attachment=image),), session=Session(), cache_balance=fresh
        )

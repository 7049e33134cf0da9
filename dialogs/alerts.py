"""/alert: show, set and remove the threshold under which the user wants to hear from Yibao, and
the other alert kinds where the platform provides their data (``/alert credit on``: the monthly
credit arrived; ``/alert family on``: a family member spent from the account; ``dialogs.notices``).

An alert watches the personal account (个人账户). A member without one (most residents' insurance)
is never promised an alert that cannot come: they are told why, and what Yibao can tell them instead.
"""

from __future__ import annotations

from decimal import Decimal

from dialogs.amounts import AmountProblem, parse_amount
from dialogs.models import (
    Button,
    CachedBalance,
    Outcome,
    Reply,
    Session,
    State,
)
from dialogs.notices import AlertKind
from dialogs.ports import InsuranceProblem, ProblemCode
from dialogs.turn import Turn

_OFF = frozenset({"off", "stop", "none", "关闭", "关", "取消", "停止", "不用了"})
_ON = frozenset({"on", "start", "yes", "开", "开启", "打开", "开通"})
_KINDS = {
    "credit": AlertKind.CREDIT,
    "划入": AlertKind.CREDIT,
    "到账": AlertKind.CREDIT,
    "family": AlertKind.FAMILY,
    "家庭": AlertKind.FAMILY,
    "共济": AlertKind.FAMILY,
    "家人": AlertKind.FAMILY,
}


class AlertFlow(Turn):
    async def cmd_alert(self, arg: str) -> Outcome:
        if self.profile.binding is None:
            return self.out(
                self.t.gettext("Bind your insurance account first (/bind), then I can watch its balance.")
            )
        first, _, rest = arg.partition(" ")
        kind = _KINDS.get(first.lower())
        if kind is not None:
            return await self.kind_alert(kind, rest.strip().lower())
        if arg.lower() in _OFF:
            if self.profile.threshold is None and self.profile.alert_kinds:
                # Only the other kinds are on: "off" means them.
                return self.with_kinds(
                    self.out(self.t.gettext("Alert turned off.")), off=self.profile.alert_kinds
                )
            if self.profile.threshold is None:
                return self.out(self.t.gettext("No alert was set."))
            return self.out(
                self.t.gettext("Alert turned off."),
                clear_threshold=True,
                keep_checking=bool(self.profile.alert_kinds),
            )
        cannot = await self.cannot_alert()
        if cannot is not None:
            return cannot
        if arg:
            return await self.set_alert(arg, checked=True)
        if self.profile.threshold is None:
            text = self.t.gettext(
                "No alert is set. Send an amount, e.g. 100, and I'll tell you when your personal account "
                "drops below it."
            )
        else:
            text = self.t.gettext(
                "I'll alert you when your personal account drops below {amount}. Send a new amount to "
                "change it, or /alert off to turn it off."
            ).format(amount=self.money(self.profile.threshold))
        kinds = await self.kinds_lines()
        return self.out("\n".join((text, *kinds)), session=Session(state=State.ALERT_AMOUNT))

    async def offered_kinds(self) -> tuple[AlertKind, ...]:
        """The alert kinds the bound member's platform provides the data for."""
        binding = self.profile.binding
        if binding is None or binding.personal_account is False:
            return ()
        offers = await self.insurance.offers(binding.platform)
        return tuple(
            kind
            for kind, given in (
                (AlertKind.CREDIT, offers.credit_alerts),
                (AlertKind.FAMILY, offers.family_alerts),
            )
            if given
        )

    async def kinds_lines(self) -> tuple[str, ...]:
        t = self.t
        lines = []
        for kind in await self.offered_kinds():
            on = kind.value in self.profile.alert_kinds
            if kind is AlertKind.CREDIT:
                lines.append(
                    t.gettext("The monthly credit arrived: on (/alert credit off).")
                    if on
                    else t.gettext("The monthly credit arrived: off (/alert credit on).")
                )
            else:
                lines.append(
                    t.gettext("A family member spent from your account: on (/alert family off).")
                    if on
                    else t.gettext("A family member spent from your account: off (/alert family on).")
                )
        return tuple(lines)

    async def kind_alert(self, kind: AlertKind, switch: str) -> Outcome:
        """``/alert credit on|off``, ``/alert family on|off`` (and their Chinese words)."""
        t = self.t
        on = kind.value in self.profile.alert_kinds
        if switch in _OFF:
            if not on:
                return self.out(t.gettext("That alert was not on."))
            keep = self.profile.threshold is not None or bool(self.profile.alert_kinds - {kind.value})
            return self.with_kinds(
                self.out(t.gettext("Alert turned off.")), off=frozenset({kind.value}), keep_checking=keep
            )
        if switch and switch not in _ON:
            return self.out(
                t.gettext("Send /alert {kind} on to turn it on, or /alert {kind} off.").format(
                    kind=kind.value
                )
            )
        if kind not in await self.offered_kinds():
            return self.out(
                t.gettext(
                    "Your insurance platform does not provide the data for this alert. /alert shows the "
                    "alerts it can give."
                )
            )
        if on:
            return self.out(
                t.gettext("That alert is on already. /alert {kind} off turns it off.").format(kind=kind.value)
            )
        text = (
            t.gettext(
                "OK: I'll tell you when the monthly credit (划入) arrives in your personal account. "
                "/alert credit off turns it off."
            )
            if kind is AlertKind.CREDIT
            else t.gettext(
                "OK: I'll tell you when a family member (家庭共济) spends from your personal account. "
                "/alert family off turns it off."
            )
        )
        return self.with_kinds(self.out(text), on=frozenset({kind.value}))

    def with_kinds(
        self,
        outcome: Outcome,
        *,
        on: frozenset[str] = frozenset(),
        off: frozenset[str] = frozenset(),
        keep_checking: bool = False,
    ) -> Outcome:
        update: dict[str, object] = {"kinds_on": on, "kinds_off": off, "keep_checking": keep_checking}
        if on and self.profile.threshold is None and not self.profile.alert_kinds:
            update["alert_locale"] = self.locale
        return outcome.model_copy(update=update)

    async def cannot_alert(self) -> Outcome | None:
        """Why no alert can be set for this member (no personal account, a platform gone), or None.

        The balance says whether there is a personal account; when the platform cannot answer now,
        what was seen at binding decides (unknown: the alert may be set, the checks skip a member
        without a personal account)."""
        binding = self.profile.binding
        assert binding is not None
        try:
            view, fresh = await self.current_balance(binding)
        except InsuranceProblem as problem:
            if problem.code is ProblemCode.PLATFORM_GONE:
                return self.out(self.account_problem(problem))
            if binding.personal_account is False:
                return self.no_personal_account(None, None, None)
            return None
        if view.personal_account is not None:
            return None
        return self.no_personal_account(view.pooled_used, view.pooled_remaining, view.pooled_year, fresh)

    def no_personal_account(
        self,
        used: Decimal | None,
        remaining: Decimal | None,
        year: int | None,
        fresh: CachedBalance | None = None,
    ) -> Outcome:
        t = self.t
        texts = [
            t.gettext(
                "Your insurance has no personal account (个人账户) — residents' insurance usually has "
                "none — so there is no balance that could drop below an amount, and I won't set an "
                "alert that can never come."
            )
        ]
        if remaining is not None and used is not None:
            texts.append(
                t.gettext(
                    "What I can tell you instead: this year's pooled fund (统筹基金, {year}) has {remaining} "
                    "left of what it covers, {used} used so far. /balance shows it any time, and "
                    '"今年统筹用了多少" what it paid for you.'
                ).format(year=year, remaining=self.money(remaining), used=self.money(used))
            )
        else:
            texts.append(
                t.gettext(
                    "What I can tell you instead: /balance shows this year's pooled fund (统筹基金), and "
                    '"今年统筹用了多少" what it paid for you.'
                )
            )
        clear = self.profile.threshold is not None
        if clear:
            texts.append(
                t.gettext("I removed the alert at {amount} you had set: it could never come.").format(
                    amount=self.money(self.profile.threshold or Decimal(0))
                )
            )
        outcome = self.out("\n".join(texts), clear_threshold=clear, cache_balance=fresh)
        if self.profile.alert_kinds:  # they watch a personal account too
            texts.append(
                t.gettext("The credit and family alerts are off too: they watch a personal account.")
            )
            outcome = self.out("\n".join(texts), clear_threshold=clear, cache_balance=fresh)
            return outcome.model_copy(update={"kinds_off": self.profile.alert_kinds})
        return outcome

    async def set_alert(self, text: str, *, checked: bool = False) -> Outcome:
        t = self.t
        if self.profile.binding is None:
            return self.out(
                t.gettext("Bind your insurance account first (/bind), then I can watch its balance.")
            )
        amount = parse_amount(text, maximum=self.cfg.max_threshold)
        if isinstance(amount, AmountProblem):
            message = {
                AmountProblem.EMPTY: t.gettext("Please give an amount, e.g. /alert 100."),
                AmountProblem.NOT_A_NUMBER: t.gettext(
                    '"{text}" is not an amount I can read. Write it in digits, e.g. /alert 100 or /alert 100.50.'
                ).format(text=text[:20]),
                AmountProblem.ZERO: t.gettext(
                    "The amount must be more than zero, e.g. /alert 100. To turn alerts off, send /alert off."
                ),
                AmountProblem.NEGATIVE: t.gettext("The amount can't be negative. Try e.g. /alert 100."),
                AmountProblem.TOO_PRECISE: t.gettext(
                    "Amounts go down to the fen (two decimals), e.g. /alert 100.50."
                ),
                AmountProblem.TOO_LARGE: t.gettext(
                    "That is more than {max}, higher than a personal account balance gets. Try e.g. /alert 100."
                ).format(max=self.money(self.cfg.max_threshold)),
            }[amount]
            keep = self.session if self.session.state is State.ALERT_AMOUNT else Session()
            return self.out(message, session=keep)
        if not checked:
            cannot = await self.cannot_alert()
            if cannot is not None:
                return cannot
        return self.out(
            t.gettext(
                "OK: I'll tell you when your personal account drops below {amount}. /alert off turns it off."
            ).format(amount=self.money(amount)),
            set_threshold=amount,
        )

    async def suggest_alert(self, text: str) -> Outcome | None:
        """A bare amount ("100元"): the alert it may mean, as a button, never set unasked. None when
        it is no amount after all."""
        amount = parse_amount(text, maximum=self.cfg.max_threshold)
        if isinstance(amount, AmountProblem):
            return None
        t = self.t
        plain = f"{amount.normalize():f}"
        if self.profile.binding is None:
            return self.out(
                t.gettext(
                    "If you want an alert when your balance drops below {amount}: bind your account first "
                    "(/bind), then send /alert {plain}."
                ).format(amount=self.money(amount), plain=plain)
            )
        cannot = await self.cannot_alert()
        if cannot is not None:
            return cannot
        button = Button(
            label=t.gettext("Alert me below {amount}").format(amount=self.money(amount)),
            payload=f"/alert {plain}",
        )
        question = t.gettext(
            "Do you want me to tell you when your personal account drops below {amount}? Press the "
            "button, or send /alert {plain}."
        ).format(amount=self.money(amount), plain=plain)
        return Outcome(replies=(Reply(text=question, buttons=(button,)),), session=Session())

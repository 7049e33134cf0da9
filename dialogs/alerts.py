"""/alert: show, set and remove the threshold under which the user wants to hear from Yibao."""

from __future__ import annotations

from dialogs.amounts import AmountProblem, parse_amount
from dialogs.models import (
    Outcome,
    Session,
    State,
)
from dialogs.turn import Turn

_OFF = frozenset({"off", "stop", "none", "关闭", "关", "取消", "停止", "不用了"})


class AlertFlow(Turn):
    async def cmd_alert(self, arg: str) -> Outcome:
        if self.profile.binding is None:
            return self.out(
                self.t.gettext("Bind your insurance account first (/bind), then I can watch its balance.")
            )
        if arg.lower() in _OFF:
            if self.profile.threshold is None:
                return self.out(self.t.gettext("No alert was set."))
            return self.out(self.t.gettext("Alert turned off."), clear_threshold=True)
        if arg:
            return self.set_alert(arg)
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
        return self.out(text, session=Session(state=State.ALERT_AMOUNT))

    def set_alert(self, text: str) -> Outcome:
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
        return self.out(
            t.gettext(
                "OK: I'll tell you when your personal account drops below {amount}. /alert off turns it off."
            ).format(amount=self.money(amount)),
            set_threshold=amount,
        )

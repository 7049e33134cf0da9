"""What a platform may tell a bound member beyond the balance: the e-voucher (/voucher), the
contributions and the monthly credit (/contributions, "这个月划入了多少"), and family sharing (/family).

The voucher is the platform's: its deep link into the official channel, and the QR as an image only
where the platform issued a payload (a certified issuer), drawn from that payload as it is. Yibao
never makes a voucher of its own.
"""

from __future__ import annotations

from decimal import Decimal

from dialogs.amounts import format_percent
from dialogs.models import Attachment, Outcome, Reply, Session
from dialogs.notices import relation_label
from dialogs.ports import InsuranceProblem, Offer
from dialogs.turn import Turn


class MemberInfoFlow(Turn):
    async def member_offer(self, offer: Offer) -> Outcome | None:
        """None when the bound member's platform offers ``offer``; else what to answer."""
        binding = self.profile.binding
        if binding is None:
            return self.not_bound()
        if offer not in (await self.insurance.offers(binding.platform)).features:
            return self.out(
                self.t.gettext(
                    "Your insurance platform does not offer this through Yibao. /help lists what it offers."
                )
            )
        return None

    async def cmd_voucher(self, _arg: str = "") -> Outcome:
        refused = await self.member_offer(Offer.VOUCHER)
        if refused is not None:
            return refused
        binding = self.profile.binding
        assert binding is not None
        t = self.t
        try:
            voucher = await self.insurance.voucher(binding.platform, binding.member_id)
        except InsuranceProblem as problem:
            return self.out(self.account_problem(problem))
        text = t.gettext(
            "Your medical-insurance e-voucher (医保电子凭证) opens in the official channel: {link}"
        ).format(link=voucher.deep_link)
        qr = self.conv.qr
        if voucher.qr_payload is None or qr is None:
            return self.out(text)
        expiry = voucher.expires_at
        note = (
            t.gettext(
                "Show this QR code at the counter. It was issued by your insurance platform and works until {time}."
            ).format(time=expiry.astimezone(self.cfg.timezone).strftime("%H:%M:%S"))
            if expiry is not None
            else t.gettext("Show this QR code at the counter. It was issued by your insurance platform.")
        )
        image = Attachment(filename="voucher.png", content=qr.render(voucher.qr_payload))
        return Outcome(replies=(Reply(text=text), Reply(text=note, attachment=image)), session=Session())

    async def cmd_contributions(self, _arg: str = "") -> Outcome:
        refused = await self.member_offer(Offer.CONTRIBUTIONS)
        if refused is not None:
            return refused
        binding = self.profile.binding
        assert binding is not None
        t = self.t
        try:
            months = await self.insurance.contributions(binding.platform, binding.member_id)
        except InsuranceProblem as problem:
            return self.out(self.account_problem(problem))
        if not months:
            return self.out(
                t.gettext(
                    "The insurance platform shows no monthly credit into a personal account for you "
                    "(residents' insurance has none)."
                )
            )
        latest = months[0]
        lines = [
            t.gettext("The latest credit into your personal account: {credit} for {month}{when}.").format(
                credit=self.money(latest.credit),
                month=latest.month,
                when=(
                    t.gettext(", on {date}").format(
                        date=latest.credited_at.astimezone(self.cfg.timezone).strftime("%Y-%m-%d")
                    )
                    if latest.credited_at is not None
                    else ""
                ),
            )
        ]
        if latest.base is not None and latest.rate is not None:
            lines.append(
                t.gettext(
                    "Why: your contribution base (缴费基数) is {base} a month, and {rate}% of it goes "
                    "into your personal account: {base} × {rate}% = {credit}."
                ).format(
                    base=self.money(latest.base),
                    rate=format_percent(latest.rate),
                    credit=self.money(latest.credit),
                )
            )
        if latest.employer:
            lines.append(t.gettext("Paid by: {employer}").format(employer=latest.employer))
        recent = months[:6]
        lines.append(t.gettext("Recent months:"))
        for m in recent:
            mark = "✓" if m.paid else "✗"
            lines.append(f"• {m.month} {mark} {self.money(m.credit)}")
        total = sum((m.credit for m in months), Decimal(0))
        lines.append(
            t.gettext("{n} months shown: {total} credited in all.").format(
                n=len(months), total=self.money(total)
            )
        )
        return self.out("\n".join(lines))

    async def cmd_family(self, _arg: str = "") -> Outcome:
        refused = await self.member_offer(Offer.FAMILY)
        if refused is not None:
            return refused
        binding = self.profile.binding
        assert binding is not None
        t = self.t
        try:
            relatives = await self.insurance.family(binding.platform, binding.member_id)
        except InsuranceProblem as problem:
            return self.out(self.account_problem(problem))
        if not relatives:
            return self.out(
                t.gettext(
                    "Nobody else may use your personal account (家庭共济). You can add family members in "
                    "the National Medical Insurance Service app."
                )
            )
        lines = [t.gettext("Family members who may use your personal account (家庭共济):")]
        for r in relatives:
            lines.append(
                t.gettext("• {name} ({relation}), since {since}: {spent} spent this year").format(
                    name=r.masked_name,
                    relation=relation_label(t, r.relation),
                    since=r.since.isoformat(),
                    spent=self.money(r.spent_this_year),
                )
            )
        total = sum((r.spent_this_year for r in relatives), Decimal(0))
        lines.append(t.gettext("Together: {total} this year.").format(total=self.money(total)))
        return self.out("\n".join(lines))

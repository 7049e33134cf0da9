"""The public lists a platform may offer: designated hospitals and pharmacies (/hospitals,
/pharmacies, a shared location) and the reimbursement drug list (/drug).

They need no binding: a bound user asks their own platform, anyone else the first configured
platform that offers the list. A platform that does not offer it is said to, never guessed at.
"""

from __future__ import annotations

from dialogs.amounts import format_percent
from dialogs.models import Outcome, PlatformName
from dialogs.ports import InstitutionView, InsuranceProblem, Offer, ProblemCode
from dialogs.turn import Turn

MAX_QUERY = 32
"""The longest place, name or drug passed to the platform."""


class PlacesFlow(Turn):
    async def platform_offering(self, offer: Offer) -> PlatformName | None:
        """The platform to ask for ``offer``: the user's own, else the first that offers it."""
        binding = self.profile.binding
        if binding is not None:
            offers = await self.insurance.offers(binding.platform)
            return binding.platform if offer in offers.features else None
        for info in self.insurance.platforms():
            if offer in (await self.insurance.offers(info.name)).features:
                return info.name
        return None

    def not_offered(self) -> Outcome:
        return self.out(
            self.t.gettext(
                "Your insurance platform does not offer this through Yibao. /help lists what it offers."
            )
        )

    async def cmd_hospitals(self, arg: str = "") -> Outcome:
        return await self.institutions("hospital", arg)

    async def cmd_pharmacies(self, arg: str = "") -> Outcome:
        return await self.institutions("pharmacy", arg)

    async def institutions(self, kind: str | None, arg: str) -> Outcome:
        platform = await self.platform_offering(Offer.INSTITUTIONS)
        if platform is None:
            return self.not_offered()
        query = arg.strip()[:MAX_QUERY]
        try:
            found = await self.insurance.institutions(
                platform, kind=kind, query=query or None, limit=self.cfg.nearby_limit
            )
        except InsuranceProblem as problem:
            return self.out(self.platform_problem(problem))
        t = self.t
        if not found:
            return self.out(
                t.gettext(
                    'I found no designated institution for "{query}". Try a district or a shorter name.'
                ).format(query=query)
            )
        head = (
            t.gettext('Designated institutions for "{query}":').format(query=query)
            if query
            else t.gettext(
                "Designated institutions (send a place or a name after the command, or share your location, for the nearest):"
            )
        )
        return self.out("\n".join((head, *(self.institution_line(i) for i in found))))

    async def on_location(self, lat: float, lon: float) -> Outcome:
        """A shared location: the nearest designated institutions, with their distance."""
        platform = await self.platform_offering(Offer.INSTITUTIONS)
        if platform is None:
            return self.not_offered()
        try:
            found = await self.insurance.institutions(platform, near=(lat, lon), limit=self.cfg.nearby_limit)
        except InsuranceProblem as problem:
            return self.out(self.platform_problem(problem))
        if not found:
            return self.out(self.t.gettext("I found no designated institution near you."))
        head = self.t.gettext("The nearest designated institutions:")
        return self.out("\n".join((head, *(self.institution_line(i) for i in found))))

    def institution_line(self, i: InstitutionView) -> str:
        t = self.t
        kind = t.gettext("pharmacy") if i.kind == "pharmacy" else (i.level or t.gettext("hospital"))
        parts = [f"• {i.name} ({kind})"]
        if i.distance_m is not None:
            parts.append(
                t.gettext("{km} km").format(km=f"{i.distance_m / 1000:.1f}")
                if i.distance_m >= 1000
                else t.gettext("{m} m").format(m=i.distance_m)
            )
        parts.append(
            t.gettext("cross-region settlement ✓")
            if i.cross_region
            else t.gettext("no cross-region settlement")
        )
        return " · ".join(parts) + f"\n  {i.address} · ☎ {i.phone}"

    async def cmd_drug(self, arg: str = "") -> Outcome:
        name = arg.strip()[:MAX_QUERY]
        t = self.t
        if not name:
            return self.out(t.gettext("Which drug? Send its generic name, e.g. /drug 阿莫西林."))
        platform = await self.platform_offering(Offer.DRUGS)
        if platform is None:
            return self.not_offered()
        binding = self.profile.binding
        try:
            found = await self.insurance.drugs(
                platform, name, member_id=binding.member_id if binding is not None else None
            )
        except InsuranceProblem as problem:
            if problem.code is ProblemCode.INVALID_INPUT:
                found = ()
            else:
                return self.out(self.platform_problem(problem))
        if not found:
            return self.out(
                t.gettext(
                    '"{name}" is not on the reimbursement drug list I can see: the fund probably does not '
                    "pay for it. Check the generic name (not the brand) on the box."
                ).format(name=name)
            )
        classes = {
            "A": t.gettext("class A (甲类): covered like any other cost"),
            "B": t.gettext("class B (乙类): you pay a share first"),
            "C": t.gettext("class C (丙类): you pay it yourself"),
        }
        lines = [t.gettext("On the reimbursement drug list (医保药品目录):")]
        for d in found:
            line = t.gettext("• {name} ({form}): {drug_class}").format(
                name=d.generic_name, form=d.dosage_form, drug_class=classes.get(d.drug_class, d.drug_class)
            )
            if d.self_pay_share is not None and d.drug_class == "B":
                line += t.gettext(" ({share}% in your region)").format(share=format_percent(d.self_pay_share))
            if d.restriction:
                line += "\n  " + t.gettext("Paid only: {restriction}").format(restriction=d.restriction)
            lines.append(line)
        return self.out("\n".join(lines))

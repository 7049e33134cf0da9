"""What the sandbox serves beyond the balance: its designated institutions, its drug list, the
e-voucher, contributions, family sharing, local card numbers and the face check.

Everything is generated from the data file and fixed seeds, so it is the same on every run and agrees
with the people's history: the institutions are the places their transactions name (with a few more
pharmacies), at made-up coordinates inside the region; a contribution month is a credit in the
history, and explains it (base × rate = credit); a family member's spending this year is the part of
the member's pharmacy payments made for them. The drug list is ``data/drugs.txt``: real generic
names, sandbox classes and restrictions.

A sandbox runs as one of several ``SandboxProfile``: the national platform (everything, a certified
voucher issuer), a local platform that needs the local card number to bind, one that asks for its
face check first, and a 1.0 platform that serves nothing extra.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from importlib import resources

from insurance.models import (
    BindRequirement,
    Capabilities,
    Drug,
    DrugClass,
    FamilyMember,
    Feature,
    GeoPoint,
    Institution,
    InstitutionKind,
)
from insurance.sandbox_data import SandboxData, SandboxPerson

__all__ = [
    "REGION_CENTRES",
    "SandboxProfile",
    "build_drugs",
    "build_institutions",
    "capabilities_of",
    "distance_m",
    "family_of",
    "local_card_number",
    "relation_of",
]


class SandboxProfile(StrEnum):
    NATIONAL = "national"
    """Every feature; a certified e-voucher issuer (the voucher has a QR payload); a plain bind."""
    LOCAL_CARD = "local_card"
    """A local bureau's gateway: every feature but the QR, and the bind needs the local card number."""
    FACE_CHECK = "face_check"
    """Every feature but the QR; the bind goes through the platform's face check first."""
    BASIC = "basic"
    """A contract-1.0 platform: balances and transactions only (``/v1/capabilities`` is empty)."""


def capabilities_of(profile: SandboxProfile) -> Capabilities:
    if profile is SandboxProfile.BASIC:
        return Capabilities()
    bind = {
        SandboxProfile.LOCAL_CARD: [BindRequirement.LOCAL_CARD_NUMBER],
        SandboxProfile.FACE_CHECK: [BindRequirement.FACE_CHECK],
    }.get(profile, [])
    return Capabilities(
        features=list(Feature),
        bind=bind,
        voucher_qr=profile is SandboxProfile.NATIONAL,
        alerts=["credit", "family_spend"],
    )


REGION_CENTRES: dict[str, tuple[float, float]] = {
    "110101": (39.9288, 116.4160),  # 北京市东城区
    "310101": (31.2304, 121.4846),  # 上海市黄浦区
    "440305": (22.5329, 113.9305),  # 深圳市南山区
    "330106": (30.2592, 120.1300),  # 杭州市西湖区
    "510107": (30.6420, 104.0431),  # 成都市武侯区
}
"""Near each sandbox region's centre; institutions lie within about 4 km of it."""

_EXTRA_PHARMACIES = ("仁和堂大药房", "百姓安康药房", "同心大药房")
_EARTH_RADIUS_M = 6_371_008.8


def distance_m(a: GeoPoint, b: GeoPoint) -> int:
    """Great-circle (haversine) distance in whole metres."""
    la1, la2 = math.radians(a.lat), math.radians(b.lat)
    dla, dlo = la2 - la1, math.radians(b.lon - a.lon)
    h = math.sin(dla / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin(dlo / 2) ** 2
    return round(2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h))))


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:8], "big")


def _level(name: str) -> str:
    if "社区" in name:
        return "一级"
    if "第二" in name or "南山" in name:
        return "三级乙等"
    return "三级甲等"


def build_institutions(data: SandboxData) -> list[Institution]:
    """The designated institutions of every region, in a fixed order (region, kind, name)."""
    out: list[Institution] = []
    for region in data.regions:
        centre = REGION_CENTRES.get(region.code)
        if centre is None:
            continue
        places: dict[str, InstitutionKind] = {}
        for person in data.people:
            if person.region != region.code:
                continue
            for tx in person.transactions:
                if tx.category.value in ("outpatient", "inpatient"):
                    places.setdefault(tx.place, InstitutionKind.HOSPITAL)
                elif tx.category.value == "pharmacy":
                    places.setdefault(tx.place, InstitutionKind.PHARMACY)
        district = region.name[3:] or region.name
        for brand in _EXTRA_PHARMACIES:
            places.setdefault(f"{brand}({district}店)", InstitutionKind.PHARMACY)
        for i, (name, kind) in enumerate(sorted(places.items(), key=lambda item: (item[1], item[0]))):
            rng = random.Random(_seed(region.code, name))  # noqa: S311 - fictional data, not secrets
            lat = round(centre[0] + rng.uniform(-0.035, 0.035), 6)
            lon = round(centre[1] + rng.uniform(-0.04, 0.04), 6)
            hospital = kind is InstitutionKind.HOSPITAL
            level = _level(name) if hospital else None
            out.append(
                Institution(
                    id=f"sbx-{region.code}-{'h' if hospital else 'p'}{i + 1:02d}",
                    name=name,
                    kind=kind,
                    level=level,
                    region=region.code,
                    address=f"{region.name}示范路{rng.randint(1, 399)}号",
                    phone=f"0{rng.randint(10, 99)}-{rng.randint(5000_0000, 8999_9999)}",
                    location=GeoPoint(lat=lat, lon=lon),
                    cross_region=level == "三级甲等" if hospital else rng.random() < 0.5,
                )
            )
    return out


_SELF_PAY_B = {"110101": "0.100", "310101": "0.100", "440305": "0.050", "330106": "0.100", "510107": "0.150"}
"""The sandbox regions' self-pay share (个人先行自付比例) for class-B drugs."""


def build_drugs() -> list[Drug]:
    """The drug list from ``data/drugs.txt``, in file order."""
    text = resources.files("insurance").joinpath("data/drugs.txt").read_text(encoding="utf-8")
    out: list[Drug] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, form, klass, restriction = line.split("|")
        out.append(
            Drug(
                code=f"SBX{len(out) + 1:04d}",
                generic_name=name,
                dosage_form=form,
                drug_class=DrugClass(klass),
                restriction=restriction or None,
            )
        )
    return out


def self_pay_share(drug: Drug, region: str | None) -> Decimal | None:
    """The member's first share of the drug's price in ``region`` (None: not a sandbox region)."""
    if region is None or region not in _SELF_PAY_B:
        return None
    if drug.drug_class is DrugClass.A:
        return Decimal("0.000")
    if drug.drug_class is DrugClass.C:
        return Decimal("1.000")
    return Decimal(_SELF_PAY_B[region])


def local_card_number(member_id: str) -> str:
    """The member's local social-security card number in the sandbox: ``SB`` and 8 digits."""
    return f"SB{_seed('card', member_id) % 10**8:08d}"


_GIVEN = ("明", "芳", "静", "强", "丽", "军", "敏", "涛", "欣", "宇")


@dataclass(frozen=True, slots=True)
class _Relative:
    masked_name: str
    relation: str
    since: date


def relation_of(person: SandboxPerson) -> list[_Relative]:
    """0 to 2 relatives sharing an employee's personal account (a resident has none to share)."""
    if person.opening_balance is None:
        return []
    rng = random.Random(_seed("family", person.member_id))  # noqa: S311 - fictional data
    count = rng.choice((0, 1, 1, 2))
    out = []
    for relation in ("spouse", "child")[:count]:
        surname = person.name[0] if relation == "child" else rng.choice("王李张刘陈杨赵黄")
        out.append(
            _Relative(
                masked_name=f"{surname}*{rng.choice(_GIVEN)}",
                relation=relation,
                since=date(2024, rng.randint(1, 12), rng.randint(1, 28)),
            )
        )
    return out


def family_of(person: SandboxPerson, pharmacy_paid: list[Decimal]) -> list[FamilyMember]:
    """The relatives and what they spent: of the member's pharmacy payments this year (oldest first,
    negative amounts), every third is the first relative's, every fifth the second's."""
    relatives = relation_of(person)
    spent = [Decimal("0.00") for _ in relatives]
    for i, amount in enumerate(pharmacy_paid):
        whose = family_share_index(i, len(relatives))
        if whose is not None:
            spent[whose] -= amount
    return [
        FamilyMember(masked_name=r.masked_name, relation=r.relation, since=r.since, spent_this_year=s)
        for r, s in zip(relatives, spent, strict=True)
    ]


def family_share_index(i: int, relatives: int) -> int | None:
    """Whose the ``i``-th pharmacy payment of the year was (None: the member's own)."""
    if relatives and i % 3 == 2:
        return 0
    if relatives > 1 and i % 5 == 4:
        return 1
    return None


def credit_rate(base: Decimal | None, credit: Decimal) -> Decimal | None:
    if not base:
        return None
    return (credit / base).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def month_of(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"

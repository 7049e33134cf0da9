"""What the platforms offer beyond the balance, through the runtime, each capability on and off:
designated institutions (by place, by shared location, free text), the drug list, the e-voucher,
contributions and the monthly credit, family sharing, and /help listing only what is offered."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from conftest import Harness, HarnessFactory, person

from dialogs.models import Inbound, Location, UserKey


def one_platform(profile: str) -> dict[str, Any]:
    return {"platforms": [{"name": "sandbox", "label": "Sandbox", "sandbox_profile": profile}]}


@pytest.fixture
async def national(make_harness: HarnessFactory) -> Harness:
    return await make_harness(insurance=one_platform("national"))


@pytest.fixture
async def basic(make_harness: HarnessFactory) -> Harness:
    return await make_harness(insurance=one_platform("basic"))


async def test_hospitals_by_place_and_pharmacies_by_free_text(national: Harness) -> None:
    found = await national.say("/hospitals 东城")
    assert 'Designated institutions for "东城"' in found
    assert "北京市第九示范医院" in found  # a place the sandbox people's history names
    assert "cross-region settlement ✓" in found
    zh = await national.say("附近的定点药店", locale="zh")
    assert "药房" in zh or "药店" in zh
    assert "医院" not in zh.split("\n", 1)[1]  # pharmacies only
    assert "位置" in zh  # where to share a location for the nearest


async def test_a_shared_location_gives_the_nearest_with_distances(national: Harness) -> None:
    replies = await national.runtime.conversation.handle(
        Inbound(user=UserKey("tg:1"), text="", locale="en", location=Location(lat=31.2304, lon=121.4846))
    )
    text = replies[0].text
    assert text.startswith("The nearest designated institutions:")
    lines = [line for line in text.splitlines() if line.startswith("•")]
    assert len(lines) == 5
    assert all(" km" in line or " m ·" in line for line in lines), text
    assert "黄浦区" in text  # Shanghai's, not Beijing's


async def test_drug_class_restriction_and_the_members_self_pay_share(national: Harness) -> None:
    unbound = await national.say("/drug 阿莫西林")
    assert "• 阿莫西林 (胶囊): class A" in unbound
    assert "%" not in unbound  # no member, no region: no share
    await national.bind(person("normal"))  # Beijing: 10 % for class B
    bound = await national.say("/drug 头孢克肟")
    assert "class B" in bound
    assert "(10% in your region)" in bound
    assert "Paid only: 限儿童及吞咽困难者" in bound
    assert "not on the reimbursement drug list" in await national.say("/drug 不存在的药")
    assert "class A" in await national.say("布洛芬能报销吗")
    assert "/drug 阿莫西林" in await national.say("/drug")


async def test_voucher_link_and_the_platforms_qr_as_an_image(national: Harness) -> None:
    assert "haven't bound" in await national.say("/voucher")
    await national.bind(person("normal"))
    text = await national.say("/voucher")
    assert "https://sandbox.yibao.invalid/ecard/sbx-110101-0001" in text
    assert "works until 10:01:00" in text  # the platform's expiry: a minute after the test clock's 10:00
    image = national.last[1].attachment
    assert image is not None
    assert image.content.startswith(b"\x89PNG\r\n\x1a\n")


async def test_a_local_platform_gives_the_link_only(make_harness: HarnessFactory) -> None:
    h = await make_harness(insurance=one_platform("local_card"))
    who = person("normal")
    await h.start_bind(who)
    await h.say(who.local_card_number)
    await h.say(h.last_code())
    text = await h.say("/voucher")
    assert "https://sandbox.yibao.invalid/ecard/" in text
    assert all(reply.attachment is None for reply in h.last)


async def test_contributions_explain_the_credit(national: Harness) -> None:
    await national.bind(person("normal"))  # base 15,600, 2 % a month
    text = await national.say("/contributions")
    assert "¥312.00" in text
    assert "¥15,600.00 × 2% = ¥312.00" in text
    assert "示范科技有限公司" in text
    zh = await national.say("这个月划入了多少", locale="zh")
    assert "¥312.00" in zh
    assert "缴费基数" in zh


async def test_contributions_of_a_resident(national: Harness) -> None:
    await national.bind(person("resident"))
    assert "no monthly credit" in await national.say("/contributions")


async def test_family_shows_who_and_what_they_spent(national: Harness) -> None:
    await national.bind(person("high_balance"))  # the sandbox gives 李娜 a spouse and a child
    sandbox = national.runtime.sandboxes["sandbox"]
    family = await sandbox.family(person("high_balance").member_id)
    text = await national.say("/family")
    for relative in family.members:
        assert relative.masked_name in text
        assert f"¥{relative.spent_this_year:,.2f}" in text
    total = sum((m.spent_this_year for m in family.members), Decimal(0))
    assert f"Together: ¥{total:,.2f} this year." in text
    assert "spouse" in text


async def test_help_lists_what_the_platform_offers(national: Harness, basic: Harness) -> None:
    full = await national.say("/help")
    for command in ("/hospitals", "/drug", "/voucher", "/contributions", "/family"):
        assert command in full
    plain = await basic.say("/help")
    for command in ("/hospitals", "/drug", "/voucher", "/contributions", "/family"):
        assert command not in plain


@pytest.mark.parametrize("command", ["/hospitals", "/drug 阿莫西林", "/voucher", "/contributions", "/family"])
async def test_a_platform_without_the_capability_says_so(basic: Harness, command: str) -> None:
    await basic.bind(person("normal"))
    assert "does not offer this" in await basic.say(command)


async def test_a_shared_location_on_a_platform_without_institutions(basic: Harness) -> None:
    replies = await basic.runtime.conversation.handle(
        Inbound(user=UserKey("tg:2"), text="", locale="en", location=Location(lat=39.9, lon=116.4))
    )
    assert "does not offer this" in replies[0].text


async def test_a_contract_1_0_platform_offers_nothing_extra() -> None:
    """A platform that never heard of /v1/capabilities answers it 404: empty capabilities."""
    import httpx
    from fastapi import FastAPI

    from insurance.client import HttpPlatformClient
    from insurance.models import Capabilities

    old = FastAPI()  # a platform of contract 1.0 serves none of the new routes
    client = HttpPlatformClient(
        "http://old.invalid", key_id="k", secret=b"s", transport=httpx.ASGITransport(app=old)
    )
    try:
        assert await client.capabilities() == Capabilities()
    finally:
        await client.aclose()

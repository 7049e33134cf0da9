"""One alert per crossing: the watch, the verdict, and what the alert says."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from dialogs.crossing import AlertFacts, Spend, Verdict, Watch, alert_replies, judge
from dialogs.i18n import Catalogs
from dialogs.models import BalanceView

SHANGHAI = ZoneInfo("Asia/Shanghai")
AT = datetime(2026, 11, 24, 14, 5, tzinfo=SHANGHAI)


def view(personal: str | None, *, stale: bool = False) -> BalanceView:
    return BalanceView(
        personal_account=None if personal is None else Decimal(personal),
        pooled_used=Decimal(0),
        pooled_remaining=Decimal(1000),
        pooled_year=2026,
        as_of=AT,
        stale=stale,
    )


def test_watch_marks() -> None:
    assert Watch.parse("a:abc") == Watch("abc", told=False)
    assert Watch.parse("t:abc") == Watch("abc", told=True)
    assert Watch.parse("a:abc", sent="abc") == Watch("abc", told=True)  # sent counts as told
    assert Watch.parse("a:abc", sent="old") == Watch("abc", told=False)
    assert Watch.parse(None) == Watch("", told=False)
    assert Watch("abc", told=True).mark() == "t:abc"


@pytest.mark.parametrize(
    ("balance", "told", "verdict"),
    [
        ("99.99", False, Verdict.ALERT),
        ("99.99", True, Verdict.NOTHING),  # the same crossing: told already
        ("100.00", False, Verdict.NOTHING),  # at the threshold is not below it
        ("100.00", True, Verdict.REARM),  # back at it: the next drop is a new crossing
        ("500", True, Verdict.REARM),
        ("500", False, Verdict.NOTHING),
    ],
)
def test_judge(balance: str, told: bool, verdict: Verdict) -> None:
    assert judge(Decimal(100), Watch("tok", told), view(balance)) is verdict


def test_unsure_figures_never_move_the_watch() -> None:
    for told in (False, True):
        assert judge(Decimal(100), Watch("tok", told), view("10", stale=True)) is Verdict.NOTHING
        assert judge(Decimal(100), Watch("tok", told), view("500", stale=True)) is Verdict.NOTHING
        assert judge(Decimal(100), Watch("tok", told), view(None)) is Verdict.NOTHING  # no personal account
    assert judge(Decimal(100), Watch("", False), view("10")) is Verdict.NOTHING  # no watch armed


def test_the_alert_in_both_languages() -> None:
    facts = AlertFacts(
        balance=Decimal("85.2"),
        threshold=Decimal(100),
        as_of=AT,
        latest_spend=Spend(at=AT, place="同仁堂药店", amount=Decimal("32.5")),
    )
    [en] = alert_replies(Catalogs().get("en"), facts, SHANGHAI)
    assert en.text.splitlines() == [
        "🔔 Low balance: your personal account has ¥85.20 (as of 2026-11-24 14:05), below your alert at ¥100.00.",
        "Latest payment: ¥32.50 at 同仁堂药店, 2026-11-24 14:05.",
        "Send /alert with a new amount to change the alert, or /alert off to turn it off.",
    ]
    assert [b.payload for b in en.buttons] == ["/balance", "/alert off"]
    [zh] = alert_replies(Catalogs().get("zh"), facts.model_copy(update={"latest_spend": None}), SHANGHAI)
    assert zh.text.startswith("🔔 医保余额提醒：你的个人账户余额为 ¥85.20（数据截至 2026-11-24 14:05）")
    assert "最近一笔" not in zh.text
    assert [b.label for b in zh.buttons] == ["查余额", "关闭提醒"]

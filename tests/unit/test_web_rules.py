"""The pages' pure rules: Telegram's initData check (replayed with this test's own signer, written
from Telegram's "Validating data received via the Mini App"), the language of a request, the
headers, the SVG chart's escaping."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import date
from decimal import Decimal
from urllib.parse import urlencode

from dialogs.ports import ChartData
from platforms.web.charts import SvgCharts
from platforms.web.pages import accepted_locale, environment, security_headers
from platforms.web.telegram import telegram_user

TOKEN = "123456:AAtestTokenAbcdefghijklmnopqrstuvwxyz"
NOW = 1_790_000_000


def signed(fields: dict[str, str], token: str = TOKEN) -> str:
    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    secret = hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()
    return urlencode({**fields, "hash": hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()})


def fields(auth_date: int = NOW, user: object = None) -> dict[str, str]:
    return {
        "auth_date": str(auth_date),
        "query_id": "AAHdF6IQAAAAAN0XohDhrOrc",
        "user": json.dumps(user if user is not None else {"id": 279058397, "first_name": "Vladislav"}),
    }


def check(init_data: str, now: float = NOW) -> int | None:
    return telegram_user(init_data, TOKEN, max_age_seconds=3600, now=now)


def test_a_signed_init_data_gives_its_user() -> None:
    assert check(signed(fields())) == 279058397
    assert check(signed(fields()), now=NOW + 3600) == 279058397


def test_tampered_or_foreign_init_data_is_refused() -> None:
    good = signed(fields())
    assert check(good.replace("279058397", "279058398")) is None
    assert check(signed(fields(), token="654321:AAanotherTokenAbcdefghijklmnopqrstuv")) is None
    assert check(good + "&extra=1") is None  # a field not signed
    assert check(good + "&auth_date=1") is None  # a field twice
    assert check(good.rsplit("&hash=", 1)[0]) is None
    assert check("") is None
    assert check("x" * 10_000) is None


def test_old_future_or_userless_init_data_is_refused() -> None:
    assert check(signed(fields()), now=NOW + 3601) is None
    assert check(signed(fields(auth_date=NOW + 600))) is None
    assert check(signed({"auth_date": str(NOW)})) is None
    assert check(signed(fields(user={"id": "1"}))) is None
    assert check(signed(fields(user={"id": True}))) is None


def test_the_language_of_a_request() -> None:
    assert accepted_locale("zh-CN,zh;q=0.9,en;q=0.8") == "zh"
    assert accepted_locale("en-US,en;q=0.9") == "en"
    assert accepted_locale("fr-FR, en;q=0.5") == "en"
    assert accepted_locale("zh;q=0, en") == "en"
    assert accepted_locale(None) is None
    assert accepted_locale("de") is None


def test_only_the_telegram_entry_may_run_script_or_be_framed() -> None:
    plain = security_headers()
    assert "script-src" not in plain["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in plain["Content-Security-Policy"]
    assert plain["X-Frame-Options"] == "DENY"
    tg = security_headers(nonce="abc")["Content-Security-Policy"]
    assert "script-src 'nonce-abc' https://telegram.org/js/telegram-web-app.js;" in tg
    assert "frame-ancestors https://web.telegram.org" in tg
    assert "default-src 'none'" in tg


def test_the_chart_escapes_its_labels_and_keeps_its_figures() -> None:
    months = tuple(date(2026, m, 1) for m in range(1, 13))
    data = ChartData(
        title="<script>alert(1)</script>",
        balance_label="balance",
        spending_label="spent",
        balance=((date(2026, 1, 5), Decimal("100")), (date(2026, 6, 1), Decimal("80.5"))),
        months=months,
        spending=(("<b>pharmacy</b>", tuple(Decimal(m) for m in range(12))),),
    )
    html = asyncio.run(SvgCharts(environment()).render(data)).decode()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<b>" not in html
    assert "¥11.00" in html  # December's total, in the table
    assert html.count("<rect") >= 11


def test_links_in_replies_are_links_and_nothing_else_is_markup() -> None:
    from platforms.web.pages import linkify

    html = str(linkify('请在 https://face.example/c?t=1&a=2 完成核验 <b>"x"</b>'))
    assert '<a href="https://face.example/c?t=1&amp;a=2" rel="noopener noreferrer">' in html
    assert "&lt;b&gt;" in html
    assert str(linkify('javascript:alert(1) "http://x.example/" onclick=1')).count("<a ") == 1
    assert 'href="http://x.example/"' in str(linkify('"http://x.example/"'))

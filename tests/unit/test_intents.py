"""What a message asks for: ``dialogs.intents``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dialogs.amounts import AmountProblem, parse_amount
from dialogs.intents import Command, Intent, Understood, normalize, parse_command, understand


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("余额", "余额"),
        ("  ｂａｌａｎｃｅ  ", "balance"),  # full-width letters
        ("１００元", "100元"),
        ("a \t b\n\nc", "a b c"),
        ("低于　100", "低于 100"),  # ideographic space
        ("？", "?"),
        ("／balance", "/balance"),
        ("", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/balance", ("balance", "")),
        ("/alert 100", ("alert", "100")),
        ("/Alert@YibaoBot  100 元", ("alert", "100 元")),
        ("/alert", ("alert", "")),
        ("/BALANCE@SomeBot", ("balance", "")),
        ("/lang en", ("lang", "en")),
        ("/alert off ", ("alert", "off")),
        (normalize("／balance"), ("balance", "")),
        (normalize("／alert　１００"), ("alert", "100")),
    ],
)
def test_parse_command(text: str, expected: tuple[str, str]) -> None:
    command = parse_command(text)
    assert command == Command(*expected)


@pytest.mark.parametrize("text", ["hello", "/", "", "余额", "alert /alert", "/123", "/ balance"])
def test_not_a_command(text: str) -> None:
    assert parse_command(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "余额",
        "还剩多少钱",
        "医保卡里有多少",
        "我的医保还剩多少?",
        "我的医保还剩多少？",
        "查一下医保",
        "balance",
        "How much is left?",
        "what's my balance",
        "What is my balance",
    ],
)
def test_balance(text: str) -> None:
    assert understand(normalize(text)) == Understood(Intent.BALANCE)


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("低于100提醒我", "100"),
        ("余额低于100提醒我", "100"),
        ("余额低于50元时提醒我", "50元"),
        ("提醒我余额低于 ¥30", "¥30"),
        ("提醒我余额低于 ￥30", "¥30"),  # full-width yen, after normalize
        ("alert me below 100", "100"),
        ("Alert me when under 12.5 yuan", "12.5 yuan"),
        ("remind me when below 20", "20"),
        ("低于abc提醒我", "abc"),  # the amount check rejects it later
    ],
)
def test_alert(text: str, amount: str) -> None:
    assert understand(normalize(text)) == Understood(Intent.ALERT, amount)


def test_alert_amounts_read_as_money() -> None:
    """The amount text an alert intent carries is what ``parse_amount`` reads."""
    expected = {
        "余额低于50元时提醒我": Decimal("50.00"),
        "提醒我余额低于 ¥30": Decimal("30.00"),
        "Alert me when under 12.5 yuan": Decimal("12.50"),
        "低于abc提醒我": AmountProblem.NOT_A_NUMBER,
    }
    for text, amount in expected.items():
        understood = understand(normalize(text))
        assert understood.intent is Intent.ALERT
        assert parse_amount(understood.arg, maximum=Decimal("50000")) == amount, text


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("绑定", Intent.BIND),
        ("我要绑定", Intent.BIND),
        ("bind", Intent.BIND),
        ("Bind my account", Intent.BIND),
        ("帮助", Intent.HELP),
        ("help", Intent.HELP),
        ("?", Intent.HELP),
        ("？", Intent.HELP),
        ("你好", Intent.GREETING),
        ("你好！", Intent.GREETING),
        ("hi!", Intent.GREETING),
        ("Hello", Intent.GREETING),
        ("今天天气怎么样", Intent.UNKNOWN),
        ("", Intent.UNKNOWN),
        ("11010519491231002X", Intent.UNKNOWN),
    ],
)
def test_other_intents(text: str, intent: Intent) -> None:
    assert understand(normalize(text)) == Understood(intent)

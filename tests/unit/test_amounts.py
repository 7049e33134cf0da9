"""Reading alert thresholds: ``dialogs.amounts.parse_amount``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dialogs.amounts import AmountProblem, parse_amount

MAXIMUM = Decimal("50000")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100", "100.00"),
        ("100元", "100.00"),
        ("¥100", "100.00"),
        ("￥100", "100.00"),  # full-width yen sign
        ("100.5", "100.50"),
        ("100.50", "100.50"),
        ("100.500", "100.50"),  # a trailing zero is not extra precision
        ("1,000", "1000.00"),
        ("1,000.5", "1000.50"),
        (".5", "0.50"),
        ("100 元", "100.00"),
        ("RMB 100", "100.00"),
        ("cny100", "100.00"),
        ("100 yuan", "100.00"),
        ("100块", "100.00"),
        ("100块钱", "100.00"),
        ("１００", "100.00"),  # full-width digits
        ("  ¥ 100  ", "100.00"),
        ("+5", "5.00"),
        ("0.01", "0.01"),
        ("50000", "50000.00"),  # the maximum itself is allowed
        ("50,000.00", "50000.00"),
    ],
)
def test_accepted(text: str, expected: str) -> None:
    result = parse_amount(text, maximum=MAXIMUM)
    assert result == Decimal(expected)
    assert isinstance(result, Decimal)
    # always two decimals, so it prints as money
    assert str(result) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", AmountProblem.EMPTY),
        ("  ", AmountProblem.EMPTY),
        ("¥", AmountProblem.EMPTY),
        ("元", AmountProblem.EMPTY),
        ("abc", AmountProblem.NOT_A_NUMBER),
        ("1e309", AmountProblem.NOT_A_NUMBER),
        ("1E5", AmountProblem.NOT_A_NUMBER),
        ("NaN", AmountProblem.NOT_A_NUMBER),
        ("inf", AmountProblem.NOT_A_NUMBER),
        ("Infinity", AmountProblem.NOT_A_NUMBER),
        ("1 000", AmountProblem.NOT_A_NUMBER),
        ("10O", AmountProblem.NOT_A_NUMBER),  # letter O, not zero
        ("0x10", AmountProblem.NOT_A_NUMBER),
        ("1,00", AmountProblem.NOT_A_NUMBER),
        ("100.5.5", AmountProblem.NOT_A_NUMBER),
        ("-", AmountProblem.NOT_A_NUMBER),
        ("¥¥100", AmountProblem.NOT_A_NUMBER),
        ("0", AmountProblem.ZERO),
        ("0.00", AmountProblem.ZERO),
        ("¥0", AmountProblem.ZERO),
        ("-0", AmountProblem.ZERO),
        ("-5", AmountProblem.NEGATIVE),
        ("-¥5", AmountProblem.NEGATIVE),
        ("¥-5", AmountProblem.NEGATIVE),
        ("-0.01", AmountProblem.NEGATIVE),
        ("－5", AmountProblem.NEGATIVE),  # full-width hyphen-minus
        ("-" + "9" * 40, AmountProblem.NEGATIVE),
        ("100.555", AmountProblem.TOO_PRECISE),
        ("0.001", AmountProblem.TOO_PRECISE),
        ("50000.01", AmountProblem.TOO_LARGE),
        ("99999999", AmountProblem.TOO_LARGE),
        ("1,000,000", AmountProblem.TOO_LARGE),
        ("1" + "0" * 39, AmountProblem.TOO_LARGE),  # 40 digits
        ("9" * 40, AmountProblem.TOO_LARGE),
    ],
)
def test_rejected(text: str, problem: AmountProblem) -> None:
    assert parse_amount(text, maximum=MAXIMUM) is problem


def test_maximum_is_the_callers() -> None:
    assert parse_amount("200", maximum=Decimal("100")) is AmountProblem.TOO_LARGE
    assert parse_amount("100", maximum=Decimal("100")) == Decimal("100.00")
    assert parse_amount("70000", maximum=Decimal("100000")) == Decimal("70000.00")


def test_every_amount_in_a_range_reads_back() -> None:
    step = Decimal("0.37")
    d = Decimal("0.01")
    seen = 0
    while d <= Decimal("200.00"):
        expected = d.quantize(Decimal("0.01"))
        assert parse_amount(f"{d}", maximum=MAXIMUM) == expected, d
        assert parse_amount(f"¥{d}", maximum=MAXIMUM) == expected, d
        assert parse_amount(f"{d}元", maximum=MAXIMUM) == expected, d
        d += step
        seen += 1
    assert seen == 541

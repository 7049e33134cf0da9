"""Reading an alert threshold the way people write money: ``100``, ``100.5``, ``¥100``, ``100元``."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from enum import StrEnum


class AmountProblem(StrEnum):
    EMPTY = "empty"
    NOT_A_NUMBER = "not_a_number"
    ZERO = "zero"
    NEGATIVE = "negative"
    TOO_PRECISE = "too_precise"
    TOO_LARGE = "too_large"


_PREFIX = re.compile(r"^(?:¥|rmb|cny)\s*", re.IGNORECASE)
_SUFFIX = re.compile(r"\s*(?:元|块钱|块|yuan|rmb|cny)$", re.IGNORECASE)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_PLAIN = re.compile(r"^(?P<sign>[+-]?)(?P<int>\d*)(?:\.(?P<frac>\d+))?$")
_MAX_INT_DIGITS = 12


def format_money(amount: Decimal) -> str:
    """``¥1,234.50``: how every amount is shown."""
    return f"¥{amount:,.2f}"


def parse_amount(text: str, *, maximum: Decimal) -> Decimal | AmountProblem:
    """Returns the amount in yuan (two decimals) or what is wrong with it.

    Only plain digits with an optional sign, decimal point, thousands commas and a currency mark
    are accepted: exponents (``1e309``), ``NaN``, ``inf`` and words are not numbers here.
    """
    s = unicodedata.normalize("NFKC", text).strip()
    s = _SUFFIX.sub("", _PREFIX.sub("", s)).strip()
    # "-¥5" and "¥-5" both mean a negative amount
    if s[:1] in "+-" and len(s) > 1:
        s = s[0] + _PREFIX.sub("", s[1:]).strip()
    if not s:
        return AmountProblem.EMPTY
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    m = _PLAIN.match(s)
    if m is None or not (m["int"] or m["frac"]):
        return AmountProblem.NOT_A_NUMBER
    if len(m["int"].lstrip("0")) > _MAX_INT_DIGITS:
        return AmountProblem.TOO_LARGE if m["sign"] != "-" else AmountProblem.NEGATIVE
    try:
        value = Decimal(s)
    except InvalidOperation:  # pragma: no cover - the pattern above admits only valid decimals
        return AmountProblem.NOT_A_NUMBER
    if value == 0:
        return AmountProblem.ZERO
    if value < 0:
        return AmountProblem.NEGATIVE
    if m["frac"] and len(m["frac"].rstrip("0")) > 2:
        return AmountProblem.TOO_PRECISE
    if value > maximum:
        return AmountProblem.TOO_LARGE
    return value.quantize(Decimal("0.01"))


def format_percent(share: Decimal) -> str:
    """A share (0.1) as a percentage without trailing zeros (``10``, ``2``, ``12.5``), at most
    two decimals."""
    value = (share * 100).quantize(Decimal("0.01")).normalize()
    return f"{value:f}"

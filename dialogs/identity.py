"""Checks on what a user types to bind: their real name and Resident ID number (居民身份证号).

The ID number rules are GB 11643-1999 as implemented by python-stdnum's ``cn.ric``; each kind of
mistake gets its own answer so the user knows what to fix.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from enum import StrEnum

from stdnum import exceptions as stdnum_errors
from stdnum.cn import ric


class IdProblem(StrEnum):
    LENGTH = "length"
    FORMAT = "format"
    BIRTH_DATE = "birth_date"
    CHECKSUM = "checksum"
    REGION = "region"


class NameProblem(StrEnum):
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    CHARACTERS = "characters"
    LOOKS_LIKE_ID = "looks_like_id"


_OLDEST_AGE = 130
_MIDDLE_DOTS = re.compile(r"[•・．.·]")
_NAME_OK = re.compile(r"^[\u3400-\u9fff\uf900-\ufaff·A-Za-z' -]+$")


def normalize_id_number(text: str) -> str:
    folded = "".join(unicodedata.normalize("NFKC", text).split())  # inner and ideographic spaces too
    return ric.compact(folded).replace("-", "").upper()


def check_id_number(text: str, *, today: date) -> str | IdProblem:
    """The normalised 18-character number, or the first thing wrong with it."""
    number = normalize_id_number(text)
    if len(number) != 18:
        return IdProblem.LENGTH
    if not number[:17].isdigit() or not (number[17].isdigit() or number[17] == "X"):
        return IdProblem.FORMAT
    try:
        born = ric.get_birth_date(number)
    except stdnum_errors.ValidationError:
        return IdProblem.BIRTH_DATE
    if born > today or today.year - born.year > _OLDEST_AGE:
        return IdProblem.BIRTH_DATE
    if number[17] != ric.calc_check_digit(number):
        return IdProblem.CHECKSUM
    try:
        ric.get_birth_place(number)
    except stdnum_errors.ValidationError:
        return IdProblem.REGION
    return number


def id_length(text: str) -> int:
    return len(normalize_id_number(text))


def check_name(text: str) -> str | NameProblem:
    """A real name as on the ID card: Chinese characters (with ``·`` in many minority names) or
    Latin letters for foreign permanent residents."""
    name = " ".join(unicodedata.normalize("NFKC", text).split())
    name = _MIDDLE_DOTS.sub("·", name)
    if len(re.sub(r"\D", "", name)) >= 15:
        return NameProblem.LOOKS_LIKE_ID
    if len(name) < 2:
        return NameProblem.TOO_SHORT
    if len(name) > 40:
        return NameProblem.TOO_LONG
    if not _NAME_OK.match(name):
        return NameProblem.CHARACTERS
    return name

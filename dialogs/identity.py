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
    LATIN = "latin"
    """Latin letters only (``Zhang Wei``): a Resident ID card has the name in Chinese characters."""
    LOOKS_LIKE_ID = "looks_like_id"


_OLDEST_AGE = 130
_MIDDLE_DOTS = re.compile(r"[•・．.·]")
_NAME_OK = re.compile(r"^[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003134f·]+$")
_LATIN = re.compile(r"^[A-Za-z' ·.-]+$")
_ID_CHARS = re.compile(r"^[0-9X]*$")
_ID_IN_TEXT = re.compile(r"(?<![0-9A-Za-z])[0-9][0-9 ]{13,}[0-9Xx](?![0-9A-Za-z])")
_SEPARATORS = " ,，、;；:：/"


def normalize_id_number(text: str) -> str:
    folded = "".join(unicodedata.normalize("NFKC", text).split())  # inner and ideographic spaces too
    return ric.compact(folded).replace("-", "").upper()


def check_id_number(text: str, *, today: date) -> str | IdProblem:
    """The normalised 18-character number, or the first thing wrong with it."""
    number = normalize_id_number(text)
    if not _ID_CHARS.match(number):  # words, not a mistyped number: its length means nothing
        return IdProblem.FORMAT
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
    """A real name as on the Resident ID card: Chinese characters, with ``·`` in many minority
    names (``阿依古丽·买买提``). Spaces are dropped (``张 伟`` is ``张伟``); a name in Latin letters
    is told apart, because its answer is different: the card has the name in characters."""
    folded = _MIDDLE_DOTS.sub("·", " ".join(unicodedata.normalize("NFKC", text).split()))
    if len(re.sub(r"\D", "", folded)) >= 15:
        return NameProblem.LOOKS_LIKE_ID
    if _LATIN.match(folded) and any(c.isalpha() for c in folded):
        return NameProblem.LATIN
    name = folded.replace(" ", "").strip("·")
    if len(name) < 2:
        return NameProblem.TOO_SHORT
    if len(name) > 40:
        return NameProblem.TOO_LONG
    if not _NAME_OK.match(name):
        return NameProblem.CHARACTERS
    return name


def split_name_and_id(text: str) -> tuple[str, str] | None:
    """A name and an ID number sent in one message (``周婷 110101199211200968``, either order, any
    separator), or None when the message does not hold both."""
    folded = unicodedata.normalize("NFKC", text)
    found = _ID_IN_TEXT.search(folded)
    if found is None:
        return None
    rest = (folded[: found.start()] + " " + folded[found.end() :]).strip(_SEPARATORS)
    if not rest or not any(c.isalpha() for c in rest):
        return None
    return rest, found.group()

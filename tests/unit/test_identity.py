"""Checks on the real name and Resident ID number a user types to bind: ``dialogs.identity``."""

from __future__ import annotations

from datetime import date

import pytest
from stdnum.cn import ric

from dialogs.identity import (
    IdProblem,
    NameProblem,
    check_id_number,
    check_name,
    id_length,
    split_name_and_id,
)

TODAY = date(2026, 11, 24)


def with_check_digit(first17: str) -> str:
    """An 18-character number whose check character is right for its first 17 digits.

    ``ric.calc_check_digit`` expects the number *with* a check character and ignores the last one,
    so a placeholder is appended before asking.
    """
    assert len(first17) == 17
    return first17 + ric.calc_check_digit(first17 + "0")


VALID = with_check_digit("11010519491231002")


def test_the_helper_builds_the_well_known_example() -> None:
    assert VALID == "11010519491231002X"
    assert ric.is_valid(VALID)


@pytest.mark.parametrize(
    "text",
    [
        "11010519491231002X",
        "11010519491231002x",
        "  11010519491231002X  ",
        "１１０１０５１９４９１２３１００２Ｘ",  # full-width digits and letter
        "１１０１０５１９４９１２３１００２ｘ",
        "110105-19491231-002X",
    ],
)
def test_valid_numbers_are_normalised(text: str) -> None:
    assert check_id_number(text, today=TODAY) == "11010519491231002X"


@pytest.mark.parametrize("text", ["110105 19491231 002X", "110105 1949 1231 002x", "110105　19491231　002X"])
def test_valid_numbers_with_inner_spaces(text: str) -> None:
    assert check_id_number(text, today=TODAY) == "11010519491231002X"
    assert id_length(text) == 18


def test_other_valid_numbers() -> None:
    # born today: fine
    assert check_id_number(with_check_digit("11010520261124002"), today=TODAY) == "110105202611240029"
    # 130 years old this year: still fine
    assert check_id_number(with_check_digit("11010518960101002"), today=TODAY) == "110105189601010023"
    # a check digit that is a digit, not X
    number = with_check_digit("44030519900307123")
    assert number[-1].isdigit()
    assert check_id_number(number, today=TODAY) == number


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", IdProblem.LENGTH),
        ("   ", IdProblem.LENGTH),
        ("11010519491231002", IdProblem.LENGTH),  # 17
        ("11010519491231002X1", IdProblem.LENGTH),  # 19
        ("110105194912310", IdProblem.LENGTH),  # a first-generation 15-digit number
        ("1101051949A231002X", IdProblem.FORMAT),  # a letter in the middle
        ("11010519491231002Y", IdProblem.FORMAT),
        ("X10105194912310021", IdProblem.FORMAT),
        (with_check_digit("11010519491331002"), IdProblem.BIRTH_DATE),  # month 13
        (with_check_digit("11010519490230002"), IdProblem.BIRTH_DATE),  # 30 February
        (with_check_digit("11010520300101002"), IdProblem.BIRTH_DATE),  # born 2030-01-01
        (with_check_digit("11010520261125002"), IdProblem.BIRTH_DATE),  # born tomorrow
        (with_check_digit("11010518500101002"), IdProblem.BIRTH_DATE),  # born 1850
        (with_check_digit("11010518950101002"), IdProblem.BIRTH_DATE),  # 131 years old
        ("110105194912310021", IdProblem.CHECKSUM),  # last character changed
        ("110105194912310020", IdProblem.CHECKSUM),
        (with_check_digit("99999919900101002"), IdProblem.REGION),
        (with_check_digit("00000019900101002"), IdProblem.REGION),
    ],
)
def test_problems(text: str, problem: IdProblem) -> None:
    assert check_id_number(text, today=TODAY) is problem


def test_the_birth_date_cases_have_a_right_check_digit() -> None:
    """So BIRTH_DATE above is about the date, not a checksum that happens to be wrong too."""
    for first17 in ("11010519491331002", "11010519490230002", "11010520300101002", "11010518500101002"):
        number = with_check_digit(first17)
        assert number[17] == ric.calc_check_digit(number)


def test_future_birth_date_depends_on_today() -> None:
    number = with_check_digit("11010520300101002")
    assert check_id_number(number, today=TODAY) is IdProblem.BIRTH_DATE
    assert check_id_number(number, today=date(2030, 1, 1)) == number


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("", 0),
        ("11010519491231002", 17),
        ("11010519491231002X", 18),
        ("11010519491231002X1", 19),
        ("  11010519491231002x ", 18),
        ("１１０１０５", 6),
        ("110105-19491231-002X", 18),
    ],
)
def test_id_length(text: str, length: int) -> None:
    assert id_length(text) == length


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("张伟", "张伟"),
        ("欧阳娜娜", "欧阳娜娜"),
        (" 张  伟 ", "张伟"),
        ("阿依古丽 · 买买提", "阿依古丽·买买提"),
        ("阿依古丽·买买提", "阿依古丽·买买提"),
        ("阿依古丽•买买提", "阿依古丽·买买提"),  # bullet
        ("阿依古丽・买买提", "阿依古丽·买买提"),  # katakana middle dot
        ("阿依古丽.买买提", "阿依古丽·买买提"),  # full stop
        ("阿依古丽．买买提", "阿依古丽·买买提"),  # full-width full stop
        ("张" * 40, "张" * 40),
    ],
)
def test_names_accepted(text: str, expected: str) -> None:
    assert check_name(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", NameProblem.TOO_SHORT),
        ("   ", NameProblem.TOO_SHORT),
        ("张", NameProblem.TOO_SHORT),
        (" 张 ", NameProblem.TOO_SHORT),
        ("张" * 41, NameProblem.TOO_LONG),
        ("张伟1", NameProblem.CHARACTERS),
        ("张@伟", NameProblem.CHARACTERS),
        ("张伟!", NameProblem.CHARACTERS),
        ("11010519491231002X", NameProblem.LOOKS_LIKE_ID),
        ("110105194912310021", NameProblem.LOOKS_LIKE_ID),
        ("张伟 11010519491231002X", NameProblem.LOOKS_LIKE_ID),
        # A Resident ID card has the name in Chinese characters: told apart, for its own answer.
        ("Zhang Wei", NameProblem.LATIN),
        ("zhang wei", NameProblem.LATIN),
        ("O'Brien", NameProblem.LATIN),
        ("Zhang 伟", NameProblem.CHARACTERS),
    ],
)
def test_name_problems(text: str, problem: NameProblem) -> None:
    assert check_name(text) is problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("周婷 110101199211200968", ("周婷", "110101199211200968")),
        ("110101199211200968 周婷", ("周婷", "110101199211200968")),
        ("周婷，11010119921120096x", ("周婷", "11010119921120096x")),
        ("周婷 110101 19921120 0968", ("周婷", "110101 19921120 0968")),
        ("Zhang Wei 110101199211200968", ("Zhang Wei", "110101199211200968")),
        ("110101199211200968", None),  # only a number
        ("周婷", None),  # only a name
        ("周婷 12345", None),  # a short number is no ID number
        ("11010519831211693Y", None),  # a mistyped ID number is not a name "Y" and a number
        ("110101199211200968周婷", ("周婷", "110101199211200968")),
    ],
)
def test_a_name_and_an_id_number_in_one_message(text: str, expected: tuple[str, str] | None) -> None:
    assert split_name_and_id(text) == expected


@pytest.mark.parametrize("text", ["周婷", "张伟", "hello", "１２３四五"])
def test_words_at_the_id_step_are_a_format_problem_not_a_length(text: str) -> None:
    """So the answer never counts Chinese characters as digits ("你发送的是 2 位")."""
    assert check_id_number(text, today=TODAY) is IdProblem.FORMAT

"""Masked forms of personal data: ``dialogs.masking``."""

from __future__ import annotations

import pytest

from dialogs.masking import mask_id_number, mask_phone


def test_phone() -> None:
    assert mask_phone("13812345678") == "138****5678"


def test_id_number() -> None:
    assert mask_id_number("11010519491231002X") == "110***********002X"
    assert mask_id_number("110105199003071234") == "110***********1234"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("", ""),
        ("1", "*"),
        ("1234", "****"),
        ("123456", "****56"),
        ("12345678", "******78"),
        ("12345678901", "123****8901"),
    ],
)
def test_short_inputs(text: str, masked: str) -> None:
    assert mask_phone(text) == masked
    assert mask_id_number(text) == masked


def test_masks_keep_the_length() -> None:
    for n in range(20):
        text = "9" * n
        assert len(mask_phone(text)) == n
        assert len(mask_id_number(text)) == n


@pytest.mark.parametrize("mask", [mask_phone, mask_id_number])
def test_a_mask_never_shows_the_whole_value(mask: object) -> None:
    assert callable(mask)
    for n in range(1, 20):
        text = "1234567890123456789"[:n]
        assert mask(text) != text, n

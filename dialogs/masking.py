"""Masked forms of personal data: the only forms that may be shown or logged."""

from __future__ import annotations


def mask_phone(phone: str) -> str:
    """``13812345678`` -> ``138****5678``."""
    if len(phone) < 7:
        return "*" * len(phone)
    return f"{phone[:3]}{'*' * (len(phone) - 7)}{phone[-4:]}"


def mask_id_number(id_number: str) -> str:
    """``110101199003071234`` -> ``110***********1234``."""
    if len(id_number) < 7:
        return "*" * len(id_number)
    return f"{id_number[:3]}{'*' * (len(id_number) - 7)}{id_number[-4:]}"


def mask_name(name: str) -> str:
    """``张伟`` -> ``*伟``, ``欧阳娜娜`` -> ``***娜``: the family name goes, the last character stays."""
    return "*" * (len(name) - 1) + name[-1:] if name else ""

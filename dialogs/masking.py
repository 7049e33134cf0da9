"""Masked forms of personal data: the only forms that may be shown or logged."""

from __future__ import annotations


def _mask(value: str, head: int = 3, tail: int = 4) -> str:
    """Keeps ``head`` and ``tail`` characters only when at least four are hidden; a short value keeps
    at most its last two characters, so no mask ever shows a whole value."""
    if len(value) - head - tail >= 4:
        return f"{value[:head]}{'*' * (len(value) - head - tail)}{value[-tail:]}"
    shown = 2 if len(value) > 4 else 0
    return "*" * (len(value) - shown) + value[len(value) - shown :]


def mask_phone(phone: str) -> str:
    """``13812345678`` -> ``138****5678``."""
    return _mask(phone)


def mask_id_number(id_number: str) -> str:
    """``110101199003071234`` -> ``110***********1234``."""
    return _mask(id_number)

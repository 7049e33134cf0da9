"""Message catalogs: gettext ``.po`` files read with Babel and compiled in memory at start-up.

Message ids are the English text, so ``en`` needs no catalog of its own and a missing Chinese
translation falls back to English rather than to nothing. ``tests/unit/test_catalogs.py`` keeps the
Chinese catalog complete.
"""

from __future__ import annotations

import gettext
import io
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

SUPPORTED_LOCALES = ("zh", "en")
DOMAIN = "yibao"


def normalize_locale(code: str | None) -> str | None:
    """A platform language code (``zh-hans``, ``zh_CN``, ``en-US``) to a supported locale, or None."""
    if not code:
        return None
    base = code.replace("_", "-").split("-", 1)[0].lower()
    return base if base in SUPPORTED_LOCALES else None


def locales_dir() -> Path:
    return Path(str(resources.files("dialogs") / "locales"))


class Translator:
    """Translations for one locale. Call sites use ``t.gettext`` / ``t.ngettext`` so Babel's
    extractor finds the message ids."""

    def __init__(self, locale: str, translations: gettext.NullTranslations) -> None:
        self.locale = locale
        self._t = translations

    def gettext(self, message: str) -> str:
        return self._t.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._t.ngettext(singular, plural, n)


@dataclass
class Catalogs:
    directory: Path = field(default_factory=locales_dir)
    _cache: dict[str, Translator] = field(default_factory=dict, init=False, repr=False)

    def get(self, locale: str) -> Translator:
        """The translator for ``locale``; unknown locales get the English text."""
        found = self._cache.get(locale)
        if found is None:
            found = self._cache[locale] = Translator(locale, self._load(locale))
        return found

    def _load(self, locale: str) -> gettext.NullTranslations:
        po = self.directory / locale / "LC_MESSAGES" / f"{DOMAIN}.po"
        if locale not in SUPPORTED_LOCALES or not po.exists():
            return gettext.NullTranslations()
        with po.open("rb") as f:
            catalog = read_po(f, locale=locale)
        buf = io.BytesIO()
        write_mo(buf, catalog, use_fuzzy=False)
        buf.seek(0)
        return gettext.GNUTranslations(buf)

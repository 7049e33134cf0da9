"""The Chinese message catalog stays complete and in step with the code; locales are chosen right."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from dialogs.i18n import Catalogs, normalize_locale

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "dialogs" / "locales" / "zh" / "LC_MESSAGES" / "yibao.po"
KEYWORDS = {"gettext": None, "ngettext": (1, 2), "_": None}
METHODS = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
"""The code, and the pages' templates (``_("…")``), as ``babel.cfg`` maps them."""

MessageId = str | tuple[str, ...]


def extracted() -> dict[MessageId, list[str]]:
    """Every message id in ``dialogs/``, ``bot/`` and ``platforms/`` (the pages' templates too),
    with where it is used."""
    found: dict[MessageId, list[str]] = {}
    for package in ("dialogs", "bot", "platforms"):
        for filename, lineno, message, _comments, _context in extract_from_dir(
            ROOT / package, method_map=METHODS, keywords=KEYWORDS
        ):
            found.setdefault(message, []).append(f"{package}/{filename}:{lineno}")
    return found


def catalog() -> Catalog:
    with PO.open("rb") as f:
        return read_po(f, locale="zh")


def placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def forms(message: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """A message id or translation as a tuple of its plural forms (one for a plain message)."""
    if message is None:
        return ("",)
    return (message,) if isinstance(message, str) else tuple(message)


def singular(message: str | tuple[str, ...] | list[str]) -> str:
    return forms(message)[0]


@pytest.fixture(scope="module")
def code_ids() -> dict[MessageId, list[str]]:
    found = extracted()
    assert len(found) > 20  # the extractor did find the code's messages
    return found


def test_every_message_has_a_chinese_translation(code_ids: dict[MessageId, list[str]]) -> None:
    po = catalog()
    problems = []
    for message, where in code_ids.items():
        entry = po.get(singular(message))
        if entry is None:
            problems.append(f"missing: {singular(message)!r} ({where[0]})")
            continue
        if entry.fuzzy:
            problems.append(f"fuzzy: {singular(message)!r}")
        translations = forms(entry.string)
        if not all(t and t.strip() for t in translations):
            problems.append(f"untranslated: {singular(message)!r}")
        if isinstance(message, tuple) and forms(entry.id) != message:
            problems.append(f"plural forms differ: {message!r} vs {entry.id!r}")
    assert problems == []


def test_placeholders_match(code_ids: dict[MessageId, list[str]]) -> None:
    po = catalog()
    problems = []
    for message in code_ids:
        ids = forms(message)
        wanted = placeholders(ids[0])
        for other in ids[1:]:
            if placeholders(other) != wanted:
                problems.append(f"plural id {other!r}: {placeholders(other)} != {wanted}")
        entry = po.get(ids[0])
        if entry is None:
            continue  # reported by the test above
        for translation in forms(entry.string):
            if translation and placeholders(translation) != wanted:
                problems.append(f"{ids[0]!r}: {placeholders(translation)} != {wanted}")
    assert problems == []


def test_no_stale_translations(code_ids: dict[MessageId, list[str]]) -> None:
    in_code = {singular(message) for message in code_ids}
    stale = [entry.id for entry in catalog() if entry.id and singular(entry.id) not in in_code]
    assert stale == []
    assert not catalog().obsolete


def test_the_catalog_is_used() -> None:
    message = "Sorry, something went wrong on my side. Please try again in a moment."
    catalogs = Catalogs()
    assert catalogs.get("zh").gettext(message) == "抱歉，我这边出了点问题，请稍后再试。"
    assert catalogs.get("en").gettext(message) == message
    assert catalogs.get("fr").gettext(message) == message
    assert catalogs.get("zh") is catalogs.get("zh")
    assert catalogs.get("zh").locale == "zh"


def test_plurals() -> None:
    singular_id = "That code is not right. {n} try left."
    plural_id = "That code is not right. {n} tries left."
    catalogs = Catalogs()
    english = catalogs.get("en")
    assert english.ngettext(singular_id, plural_id, 1) == singular_id
    assert english.ngettext(singular_id, plural_id, 2) == plural_id
    chinese = catalogs.get("zh")
    one, two = chinese.ngettext(singular_id, plural_id, 1), chinese.ngettext(singular_id, plural_id, 2)
    assert one == two  # Chinese has one plural form
    assert "{n}" in one
    assert one not in (singular_id, plural_id)


@pytest.mark.parametrize(
    ("code", "locale"),
    [
        ("zh-hans", "zh"),
        ("zh_CN", "zh"),
        ("ZH", "zh"),
        ("en-US", "en"),
        ("en", "en"),
        ("fr", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_locale(code: str | None, locale: str | None) -> None:
    assert normalize_locale(code) == locale


def test_the_readme_catalog_commands_leave_an_unchanged_catalog_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented ``pybabel extract`` + ``update``, run on this tree, rewrite nothing: the file is
    kept in the form they write (width, order, no obsolete entries, the header's date)."""
    import re
    import shlex
    import shutil

    from babel.messages.frontend import CommandLineInterface

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"`\.venv/bin/(pybabel (?:extract|update) [^`]+)`", readme)
    assert [c.split()[1] for c in commands] == ["extract", "update"]
    locales = tmp_path / "locales"
    shutil.copytree(ROOT / "dialogs" / "locales", locales)
    monkeypatch.chdir(ROOT)
    for command in commands:
        argv = shlex.split(command.replace("/tmp/yibao.pot", str(tmp_path / "yibao.pot")))
        if argv[1] == "update":
            argv[argv.index("-d") + 1] = str(locales)
        CommandLineInterface().run(argv)

    def body(path: Path) -> list[str]:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if "Generated-By" not in line]

    assert body(locales / "zh" / "LC_MESSAGES" / "yibao.po") == body(PO)

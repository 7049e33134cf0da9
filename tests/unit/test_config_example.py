"""``config.example.toml``: loads to exactly the defaults and documents every key."""

from __future__ import annotations

import os
import re
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from bot.config import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("YIBAO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def sections_of_the_file() -> dict[str, str]:
    """Each ``[section]``'s and the first ``[[section.list]]``'s text, comments included."""
    parts = re.split(r"^\[\[?([a-z_.]+)\]\]?\s*$", EXAMPLE.read_text(encoding="utf-8"), flags=re.M)
    tables: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        tables.setdefault(name, body)
    return tables


def section_models() -> dict[str, type[BaseModel]]:
    models = {}
    for name, field in Settings.model_fields.items():
        assert isinstance(field.annotation, type)
        assert issubclass(field.annotation, BaseModel)
        models[name] = field.annotation
    return models


def documented_keys() -> list[tuple[str, str, object]]:
    """(table, key, default) for every key: a list of tables (``insurance.platforms``) is documented
    by its first table, whose defaults are those of the default list's first entry."""
    defaults = Settings()
    out: list[tuple[str, str, object]] = []
    for section, model in section_models().items():
        for key, field in model.model_fields.items():
            value = getattr(getattr(defaults, section), key)
            args = typing.get_args(field.annotation)
            inner = typing.get_args(args[0]) if args else ()
            item = (inner or args or (None,))[0]
            if isinstance(value, list) and isinstance(item, type) and issubclass(item, BaseModel):
                out += [(f"{section}.{key}", k, getattr(value[0], k)) for k in item.model_fields]
            else:
                out.append((section, key, value))
    return out


def test_loads_to_exactly_the_defaults() -> None:
    settings, path = load_settings(EXAMPLE)
    assert path == EXAMPLE
    assert settings.model_dump() == Settings().model_dump()
    assert settings == Settings()


def test_sections_are_those_of_the_settings() -> None:
    assert [t for t in sections_of_the_file() if "." not in t] == list(Settings.model_fields)
    assert set(tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))) == set(Settings.model_fields)


def test_every_key_is_in_the_file() -> None:
    tables = sections_of_the_file()
    missing = [
        f"{table}.{key}"
        for table, key, _ in documented_keys()
        if not re.search(rf"^(?:# )?{key} = ", tables.get(table, ""), flags=re.M)
    ]
    assert missing == []


def test_every_key_has_a_comment_above_it() -> None:
    for section, body in sections_of_the_file().items():
        lines = body.strip().splitlines()
        for i, line in enumerate(lines):
            if re.match(r"^(?:# )?[a-z_]+ = ", line):
                above = lines[i - 1] if i else ""
                assert above.startswith("# "), f"{section}: {line}"
                assert not re.match(r"^# [a-z_]+ = ", above), f"{section}: {line} has no comment of its own"


def test_keys_set_in_the_file_are_the_ones_with_a_default() -> None:
    """Keys whose default is unset are shown commented out; all others are set to their default."""
    loaded = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for table, key, default in documented_keys():
        node = loaded
        for part in table.split("."):
            node = node[part][0] if isinstance(node[part], list) else node[part]
        assert (key in node) == (default is not None), f"{table}.{key}"


def test_every_default_is_named_in_its_comment() -> None:
    tables = sections_of_the_file()
    for table, key, default in documented_keys():
        block = re.search(rf"((?:^# .*\n)+)^(?:# )?{key} = ", tables[table], flags=re.M)
        assert block is not None, f"{table}.{key}"
        comment = block.group(1)
        if table == "insurance.platforms" and key == "name":
            assert "Required" in comment
            continue
        assert "Default:" in comment, f"{table}.{key}"
        if default is None:
            assert "Default: unset" in comment, f"{table}.{key}"
        elif default == []:
            assert "Default: []" in comment, f"{table}.{key}"
        else:
            shown = str(default).lower() if isinstance(default, bool) else str(default)  # TOML's true
            assert shown in comment.split("Default:", 1)[1], f"{table}.{key}"


def test_no_real_looking_secret() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert not re.search(r"^(?:pii_key|token|url) = ", text, flags=re.M)
    assert not re.search(r"\d{6,}:[A-Za-z0-9_-]{30,}", text)  # a Telegram token's shape
    assert not re.search(r"[A-Za-z0-9+/]{43}=", text)  # a 32-byte base64 key
    assert "CHANGE-ME" in text

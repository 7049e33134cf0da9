"""``config.example.toml``: loads to exactly the defaults and documents every key."""

from __future__ import annotations

import os
import re
import tomllib
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
    """Each ``[section]``'s text, comments included."""
    parts = re.split(r"^\[([a-z_]+)\]\s*$", EXAMPLE.read_text(encoding="utf-8"), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def section_models() -> dict[str, type[BaseModel]]:
    models = {}
    for name, field in Settings.model_fields.items():
        assert isinstance(field.annotation, type)
        assert issubclass(field.annotation, BaseModel)
        models[name] = field.annotation
    return models


def test_loads_to_exactly_the_defaults() -> None:
    settings, path = load_settings(EXAMPLE)
    assert path == EXAMPLE
    assert settings.model_dump() == Settings().model_dump()
    assert settings == Settings()


def test_sections_are_those_of_the_settings() -> None:
    assert list(sections_of_the_file()) == list(Settings.model_fields)
    assert set(tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))) == set(Settings.model_fields)


def test_every_key_is_in_the_file() -> None:
    sections = sections_of_the_file()
    missing = []
    for section, model in section_models().items():
        body = sections.get(section, "")
        for key in model.model_fields:
            if not re.search(rf"^(?:# )?{key} = ", body, flags=re.M):
                missing.append(f"{section}.{key}")
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
    defaults = Settings()
    for section, model in section_models().items():
        for key in model.model_fields:
            default = getattr(getattr(defaults, section), key)
            assert (key in loaded[section]) == (default is not None), f"{section}.{key}"


def test_every_default_is_named_in_its_comment() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    defaults = Settings()
    for section, model in section_models().items():
        for key in model.model_fields:
            default = getattr(getattr(defaults, section), key)
            block = re.search(
                rf"((?:^# .*\n)+)^(?:# )?{key} = ", text.split(f"[{section}]\n", 1)[1], flags=re.M
            )
            assert block is not None, f"{section}.{key}"
            comment = block.group(1)
            assert "Default:" in comment, f"{section}.{key}"
            if default is None:
                assert "Default: unset" in comment, f"{section}.{key}"
            else:
                assert str(default) in comment.split("Default:", 1)[1], f"{section}.{key}"


def test_no_real_looking_secret() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert not re.search(r"^(?:pii_key|token|url) = ", text, flags=re.M)
    assert not re.search(r"\d{6,}:[A-Za-z0-9_-]{30,}", text)  # a Telegram token's shape
    assert not re.search(r"[A-Za-z0-9+/]{43}=", text)  # a 32-byte base64 key
    assert "CHANGE-ME" in text

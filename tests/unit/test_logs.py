"""Logging and its redaction of personal data: ``bot.logs``."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.logs import redact, setup_logging

ID = "11010519491231002X"
PHONE = "13812345678"


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, with its handlers and level put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"binding {ID} for tg:1", "binding 110***********002X for tg:1"),
        ("id 11010519491231002x.", "id 110***********002x."),
        ("id 110105194912310021", "id 110***********0021"),
        (f"sms to {PHONE} failed", "sms to 138****5678 failed"),
        (f"phone={PHONE},id={ID}", "phone=138****5678,id=110***********002X"),
        (f"手机号{PHONE}无效", "手机号138****5678无效"),
        (f"+86 {PHONE}", "+86 138****5678"),
    ],
)
def test_redact_masks(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 1234567890123456 paid",  # 16 digits: an order number
        "your code is 123456",  # 6 digits
        "on 2026-11-24 at 09:30",
        "20261124",
        "12345678901",  # 11 digits but not a mobile number (12x)
        "tg:123 balance 1024.50",
        "1234567890123456789",  # 19 digits: too long to be an ID number
    ],
)
def test_redact_leaves_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize("text", [f"+86{PHONE}", f"86{PHONE}", f"0086{PHONE}"])
def test_redact_masks_numbers_with_the_country_code(text: str) -> None:
    assert PHONE not in redact(text)


def test_setup_logging_to_a_file(tmp_path: Path, root_logger: logging.Logger) -> None:
    path = tmp_path / "logs" / "yibao.log"
    handler = setup_logging("INFO", path)
    assert root_logger.handlers == [handler]
    assert root_logger.level == logging.INFO
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    log = logging.getLogger("yibao.test")
    log.info("looked up %s for %s", ID, "tg:1")
    log.debug("not written at INFO: %s", "debug-line")
    try:
        raise ValueError(f"gateway refused {PHONE}")
    except ValueError:
        log.exception("sending failed")
    logging.getLogger("some.library").warning("input was %r", {"id": ID})
    handler.flush()

    written = path.read_text(encoding="utf-8")
    assert ID not in written
    assert PHONE not in written
    assert "looked up 110***********002X for tg:1" in written
    assert "ValueError: gateway refused 138****5678" in written
    assert "sending failed" in written
    assert "'id': '110***********002X'" in written
    assert "debug-line" not in written
    assert " INFO yibao.test: " in written
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_setup_logging_keeps_an_existing_file_private(tmp_path: Path, root_logger: logging.Logger) -> None:
    path = tmp_path / "yibao.log"
    setup_logging("WARNING", path)
    logging.getLogger("yibao.test").warning("first")
    second = setup_logging("DEBUG", path)  # a second set-up replaces the first handler, appends
    assert root_logger.handlers == [second]
    logging.getLogger("yibao.test").debug("second")
    second.flush()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [line.rsplit(": ", 1)[1] for line in lines] == ["first", "second"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_setup_logging_to_stderr(root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("WARNING", None)
    logging.getLogger("yibao.test").warning("phone %s", PHONE)
    assert "phone 138****5678" in capsys.readouterr().err

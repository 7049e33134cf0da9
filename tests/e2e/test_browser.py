"""The browser fixture's own checks, on tiny pages served on loopback: a phone's size, a screenshot
kept outside the repository, a page too wide, and a character no font has beside Chinese text."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import browser as browser_module
import pytest
from botapi_emulator import LoopbackServer
from browser import (  # noqa: F401 - browser is the fixture
    assert_no_horizontal_scroll,
    assert_no_missing_glyphs,
    at_size,
    browser,
    missing_glyphs,
    screenshot,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

if TYPE_CHECKING:  # selenium may be missing: the fixture then skips (or fails in CI)
    from selenium.webdriver.remote.webdriver import WebDriver

ROOT = Path(__file__).resolve().parents[2]
HEAD = (
    '<!doctype html><html lang="zh"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<style>body{font-family:'WenQuanYi Micro Hei',sans-serif;margin:16px}</style></head><body>"
)
PAGES = {
    "/cjk": HEAD
    + "<h1>医保余额</h1><p>个人账户：¥32.63（数据截至 2026-12-01 09:00）Balance ✓</p></body></html>",
    "/tofu": HEAD + "<p>个人账户 <span>\U00016a40</span></p></body></html>",
    "/wide": HEAD + '<p>医保</p><div class="table" style="width:1200px">宽</div></body></html>',
    "/hidden": HEAD + '<p>医保</p><p style="display:none">\U00016a40</p></body></html>',
}


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGES[request.url.path])


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = LoopbackServer(Starlette(routes=[Route(p, page) for p in PAGES]), name="pages")
    server.start()
    yield server.url
    server.stop()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_at_phone_size_chinese_text_has_its_glyphs(browser: WebDriver, site: str) -> None:  # noqa: F811
    at_size(browser, 390, 844)
    browser.get(f"{site}/cjk")
    assert browser.execute_script("return window.innerWidth") == 390
    assert_no_horizontal_scroll(browser)
    assert_no_missing_glyphs(browser)
    shot = screenshot(browser, "cjk")
    assert png_size(shot) == (390, 844)
    assert ROOT not in shot.resolve().parents  # an artifact, never in the repository


def test_a_character_no_font_has_is_found(browser: WebDriver, site: str) -> None:  # noqa: F811
    at_size(browser, 1280, 800)
    browser.get(f"{site}/tofu")
    missing = missing_glyphs(browser)
    assert [char for char, _font in missing] == ["U+16A40 \U00016a40"]
    assert "WenQuanYi Micro Hei" in missing[0][1]
    with pytest.raises(AssertionError, match="1 characters have no glyph"):
        assert_no_missing_glyphs(browser)
    browser.get(f"{site}/hidden")  # what is not shown is not checked
    assert missing_glyphs(browser) == []


def test_a_page_wider_than_the_phone_is_named(browser: WebDriver, site: str) -> None:  # noqa: F811
    at_size(browser, 390, 844)
    browser.get(f"{site}/wide")
    with pytest.raises(
        AssertionError, match=r"scrolls sideways: \d+ px wide in a 390 px viewport.*div\.table"
    ):
        assert_no_horizontal_scroll(browser)
    at_size(browser, 1280, 800)
    assert_no_horizontal_scroll(browser)


def test_without_chromium_a_laptop_skips_and_ci_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(browser_module, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(browser_module, "CHROMEDRIVER", "/nonexistent/chromedriver")
    why = browser_module._binaries()
    assert why == (
        "chromium and chromedriver not installed (apt-get install chromium chromium-driver fonts-wqy-microhei)"
    )
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium and chromedriver"):
        browser_module.start_chromium(Path("/nonexistent/profile"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run in CI: chromium"):
        browser_module.start_chromium(Path("/nonexistent/profile"))

"""A real browser for the pages' tests: Debian's headless Chromium driven by Selenium, and what a test
checks in it (a phone's size, screenshots kept as artifacts, no horizontal scroll, no missing glyph).

Use it from a test module by importing the fixture::

    from browser import assert_no_horizontal_scroll, at_size, browser, screenshot  # noqa: F401

``browser`` is module-scoped (one Chromium per test module, about a second to start), with a fresh
profile in a temporary folder. It is the distribution's Chromium (``/usr/bin/chromium``) and its
``chromedriver``; **nothing is ever downloaded**: the driver's path is given, so Selenium skips
Selenium Manager, and should it ever run it anyway it is offline, never fetches a browser, sends no
statistics (``SE_OFFLINE``, ``SE_AVOID_BROWSER_DOWNLOAD``, ``SE_AVOID_STATS``) and is
``/bin/false`` (``SE_MANAGER_PATH``), so the test fails instead. Chromium itself is started without
its background traffic (component updates, sync, QUIC, field trials).

Without Chromium or chromedriver (or Selenium) the tests that use it are skipped, unless ``CI`` is
set: then they fail, saying what to install (``.ci/run`` installs ``chromium chromium-driver
fonts-wqy-microhei`` when it runs as root).

Screenshots go to ``$YIBAO_ARTIFACTS`` when it is set (CI keeps that folder), else to pytest's
temporary folder; never into the repository (``/artifacts/`` is in ``.gitignore`` for
``YIBAO_ARTIFACTS=artifacts``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PACKAGES = "chromium chromium-driver fonts-wqy-microhei"
NO_GLYPH = "\U0010fffd"
"""A code point no font has (the last of plane 16's private use): what a missing glyph looks like."""

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-field-trial-config",
    "--disable-default-apps",
    "--no-default-browser-check",
    "--hide-scrollbars",
)
_SELENIUM_MANAGER_ENV = {
    "SE_OFFLINE": "true",
    "SE_AVOID_BROWSER_DOWNLOAD": "true",
    "SE_AVOID_STATS": "true",
}
_dirs: dict[int, Path] = {}


def _binaries() -> tuple[str, str] | str:
    """Chromium's and chromedriver's paths, or why they cannot be used."""
    chromium = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    driver = shutil.which("chromedriver") or (CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else None)
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if path is None]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install {PACKAGES})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    assert chromium is not None
    assert driver is not None
    return chromium, driver


def unavailable(why: str) -> None:
    """Skip, or in CI (``CI`` set) fail: CI must run the browser tests."""
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests cannot run in CI: {why}", pytrace=False)
    pytest.skip(why)


def start_chromium(profile: Path) -> WebDriver:
    found = _binaries()
    if isinstance(found, str):
        unavailable(found)
        raise AssertionError("unreachable")
    chromium, driver_path = found
    false = shutil.which("false") or "/bin/false"
    for key, value in {**_SELENIUM_MANAGER_ENV, "SE_MANAGER_PATH": false}.items():
        os.environ.setdefault(key, value)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--lang=zh-CN")
    # Headless Chromium sends no Accept-Language of its own: a Chinese phone's browser's.
    options.add_experimental_option("prefs", {"intl.accept_languages": "zh-CN,zh"})
    service = Service(executable_path=driver_path)
    return webdriver.Chrome(service=service, options=options)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """A headless Chromium for this test module (see the module's docstring)."""
    profile = Path(tempfile.mkdtemp(prefix="yibao-chromium-"))
    try:
        driver = start_chromium(profile)
    except BaseException:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    _dirs[id(driver)] = tmp_path_factory.mktemp("screenshots")
    try:
        yield driver
    finally:
        _dirs.pop(id(driver), None)
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# -- what a test does with it ---------------------------------------------------------------------------


def at_size(driver: WebDriver, width: int, height: int) -> None:
    """The page's viewport becomes ``width`` × ``height`` CSS pixels; below 800 wide as a phone
    (``mobile``: the page's ``<meta name="viewport">`` is honoured, as a phone's browser does)."""
    driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Emulation.setDeviceMetricsOverride",
        {
            "width": width,
            "height": height,
            "screenWidth": width,
            "screenHeight": height,
            "deviceScaleFactor": 1,
            "mobile": width < 800,
        },
    )


def artifacts_dir(driver: WebDriver | None = None) -> Path:
    """Where screenshots go: ``$YIBAO_ARTIFACTS``, else this module's pytest temporary folder."""
    given = os.environ.get("YIBAO_ARTIFACTS")
    if given:
        path = Path(given)
    elif driver is not None and id(driver) in _dirs:
        path = _dirs[id(driver)]
    else:
        path = Path(tempfile.gettempdir()) / "yibao-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(driver: WebDriver, name: str) -> Path:
    """A PNG of what the viewport shows now, named ``<name>-<width>x<height>.png``; its path."""
    size = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    path = artifacts_dir(driver) / f"{safe}-{size[0]}x{size[1]}.png"
    if not driver.save_screenshot(str(path)):
        raise AssertionError(f"Chromium took no screenshot for {name}")
    return path


def assert_no_horizontal_scroll(driver: WebDriver) -> None:
    """Nothing is wider than the viewport (``document.documentElement.scrollWidth`` at most
    ``window.innerWidth``); else the widest offenders are named.

    As a phone (``at_size`` below 800), a page wider than the screen makes the browser widen its
    layout viewport to fit (``innerWidth`` grows with it: the page is shown zoomed out), so the width
    compared with is also the screen's (``clientWidth`` under ``width=device-width``): a page laid
    out wider than the screen (no ``<meta name="viewport">``) fails too."""
    found: dict[str, Any] = driver.execute_script(_WIDTH_JS)
    viewport = min(found["innerWidth"], found["clientWidth"], found["screenWidth"])
    if found["clientWidth"] > found["screenWidth"]:
        raise AssertionError(
            f"the page is laid out {found['clientWidth']} px wide on a {found['screenWidth']} px screen "
            '(no <meta name="viewport" content="width=device-width">?)'
        )
    if found["scrollWidth"] > viewport:
        raise AssertionError(
            f"the page scrolls sideways: {found['scrollWidth']} px wide in a {viewport} px "
            f"viewport; past the right edge: {', '.join(found['offenders']) or '?'}"
        )


def missing_glyphs(driver: WebDriver) -> list[tuple[str, str]]:
    """The characters of the page's visible text that show as a missing glyph, with their element's
    font: ``[("U+16A40 𖩀", "16px WenQuanYi Micro Hei, sans-serif"), ...]``.

    How: each visible text node's characters are drawn on a canvas in the node's computed font (its
    whole ``font-family`` list, so with the browser's own fallback, as on the page), and compared,
    pixel for pixel and by width, with ``U+10FFFD`` drawn in the same font: a code point no font has,
    so what the browser draws for a missing glyph (the ``.notdef`` box, or nothing). A character
    drawn the same is one no font on the page, nor the system's fallback, could show. White space,
    format and control characters are not drawn and not checked. Web fonts are waited for
    (``document.fonts.ready``)."""
    found: list[list[str]] = driver.execute_async_script(_GLYPHS_JS, NO_GLYPH)
    return [(char, font) for char, font in found]


def assert_no_missing_glyphs(driver: WebDriver) -> None:
    missing = missing_glyphs(driver)
    if missing:
        shown = "; ".join(f"{char} in {font}" for char, font in missing[:20])
        raise AssertionError(f"{len(missing)} characters have no glyph: {shown}")


_WIDTH_JS = """
const width = Math.min(window.innerWidth, document.documentElement.clientWidth, screen.width);
const offenders = [];
for (const el of document.body ? document.body.querySelectorAll('*') : []) {
  const r = el.getBoundingClientRect();
  if (r.right > width + 0.5 && r.width > 0) {
    const cls = el.className && typeof el.className === 'string' ? '.' + el.className.split(' ')[0] : '';
    offenders.push([r.right, el.tagName.toLowerCase() + cls + ' (' + Math.round(r.right) + ' px)']);
  }
}
offenders.sort((a, b) => b[0] - a[0]);
return {
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
  clientWidth: document.documentElement.clientWidth,
  screenWidth: screen.width,
  offenders: offenders.slice(0, 5).map(o => o[1]),
};
"""

_GLYPHS_JS = r"""
const noGlyph = arguments[0];
const done = arguments[arguments.length - 1];
function run() {
const size = 32;
const canvas = document.createElement('canvas');
canvas.width = size * 3;
canvas.height = size * 2;
const ctx = canvas.getContext('2d', {willReadFrequently: true});
function draw(font, text) {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = font;
  ctx.textBaseline = 'middle';
  ctx.fillStyle = '#000';
  ctx.fillText(text, size / 2, size);
  const width = ctx.measureText(text).width;
  return [width, ctx.getImageData(0, 0, canvas.width, canvas.height).data];
}
function same(a, b) {
  if (Math.abs(a[0] - b[0]) > 0.01) return false;
  const x = a[1], y = b[1];
  for (let i = 3; i < x.length; i += 4) if (x[i] !== y[i]) return false;
  return true;
}
const skip = /[\s\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;
const byFont = new Map();
const walker = document.createTreeWalker(document.body || document.documentElement, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const el = node.parentElement;
  if (!el || !node.textContent.trim()) continue;
  const tag = el.tagName;
  if (tag === 'SCRIPT' || tag === 'STYLE' || tag === 'NOSCRIPT' || tag === 'TEMPLATE') continue;
  const style = getComputedStyle(el);
  if (style.visibility === 'hidden' || el.getClientRects().length === 0) continue;
  const font = `${style.fontStyle} ${style.fontWeight} ${size}px ${style.fontFamily}`;
  const chars = byFont.get(font) || new Set();
  for (const ch of node.textContent) if (!skip.test(ch)) chars.add(ch);
  byFont.set(font, chars);
}
const missing = [];
for (const [font, chars] of byFont) {
  const tofu = draw(font, noGlyph);
  for (const ch of chars) {
    if (same(draw(font, ch), tofu)) {
      const cp = 'U+' + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
      missing.push([cp + ' ' + ch, font.replace(`${size}px `, '')]);
    }
  }
}
return missing;
}
document.fonts.ready.then(() => done(run()), () => done(run()));
"""

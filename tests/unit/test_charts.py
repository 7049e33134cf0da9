"""``/chart`` drawing: ``bot.charts.drawing.MatplotlibCharts`` (no Redis)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import logging
import subprocess
import sys
import warnings
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bot.charts.drawing import (
    FONT_PACKAGES,
    PROBE,
    FontFile,
    MatplotlibCharts,
    has_glyphs,
    packaged_fonts,
    system_fonts,
)
from dialogs.ports import ChartData

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MONTHS = tuple(date(2025 + (m > 12), (m - 1) % 12 + 1, 1) for m in range(12, 24))  # 2025-12 .. 2026-11
TODAY = date(2026, 11, 24)
WQY_MICROHEI_SHA256 = "2420e8078af796b19a3f6ef13de527a1a91c1e7171eea115926c614ced1009b3"
"""Debian's fonts-wqy-microhei 0.2.0-beta-3.1 ships the same file."""


def _balance() -> tuple[tuple[date, Decimal], ...]:
    points, balance, day = [], Decimal("1200.00"), MONTHS[0]
    while day < TODAY:
        points.append((day, balance))
        balance += Decimal("186.40") if day.day < 8 else Decimal("-97.15")
        day += timedelta(days=11)
    points.append((TODAY, balance))
    return tuple(points)


def _spending(labels: tuple[str, ...]) -> tuple[tuple[str, tuple[Decimal, ...]], ...]:
    return tuple(
        (label, tuple(Decimal((i * 37 + k * 101) % 250) + Decimal("0.45") for i in range(12)))
        for k, label in enumerate(labels)
    )


ZH = ChartData(
    title="医保个人账户：近 12 个月",
    balance_label="个人账户余额",
    spending_label="每月支出（按类别）",
    balance=_balance(),
    months=MONTHS,
    spending=_spending(("药房", "门诊", "住院")),
)
EN = ChartData(
    title="Medical insurance: the last 12 months",
    balance_label="Personal account balance",
    spending_label="Spending per month, by category",
    balance=_balance(),
    months=MONTHS,
    spending=_spending(("Pharmacy", "Outpatient", "Inpatient")),
)


@pytest.fixture(scope="module")
def charts() -> MatplotlibCharts:
    """The charts as the bot makes them: default font search."""
    return MatplotlibCharts()


@pytest.fixture
def no_font_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if matplotlib warns, by a warning or in its log, that a font or a glyph is
    missing (``Glyph 20010 ... missing from font(s) DejaVu Sans``, ``findfont: ... not found``)."""
    gc.collect()  # an earlier test's garbage (an unclosed socket's ResourceWarning) is not ours
    with (
        caplog.at_level(logging.WARNING, logger="matplotlib"),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        yield
    problems = [str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)]
    problems += [r.getMessage() for r in caplog.records if r.name.startswith("matplotlib")]
    assert problems == []


def _pixels(png: bytes) -> tuple[int, int]:
    from matplotlib.image import imread

    assert png.startswith(PNG_SIGNATURE)
    height, width = imread(io.BytesIO(png)).shape[:2]
    return width, height


def test_importing_the_module_imports_no_matplotlib() -> None:
    code = (
        "import sys, bot.charts.drawing; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'fontTools', 'numpy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_render_gives_a_phone_sized_png(charts: MatplotlibCharts) -> None:
    data = ZH if charts.can_draw_chinese() else EN
    png = await charts.render(data)
    assert _pixels(png) == (1000, 800)


def test_a_fresh_install_can_draw_chinese(charts: MatplotlibCharts) -> None:
    """paperang-p2-fonts-cjk (WenQuanYi Micro Hei) is a dependency, so a CJK font is always there."""
    assert charts.can_draw_chinese()
    assert charts.font is not None
    assert has_glyphs(charts.font, PROBE + "¥0123456789,.")


@pytest.mark.usefixtures("no_font_warnings")
def test_chinese_labels_render_with_every_glyph(charts: MatplotlibCharts) -> None:
    if not charts.can_draw_chinese():
        pytest.skip("no CJK font on this machine")
    assert _pixels(charts.render_sync(ZH)) == (1000, 800)


@pytest.mark.parametrize("source", ["packaged", "system"])
@pytest.mark.usefixtures("no_font_warnings")
def test_each_kind_of_font_draws_chinese(source: str) -> None:
    fonts = packaged_fonts() if source == "packaged" else system_fonts()
    found = next((f for f in fonts if has_glyphs(f)), None)
    if found is None:
        pytest.skip(f"no {source} CJK font on this machine")
    charts = MatplotlibCharts(fonts=[found])
    assert charts.can_draw_chinese()
    assert charts.render_sync(ZH).startswith(PNG_SIGNATURE)


@pytest.mark.usefixtures("no_font_warnings")
def test_without_a_cjk_font_english_labels_render() -> None:
    charts = MatplotlibCharts(fonts=())
    assert not charts.can_draw_chinese()
    assert _pixels(charts.render_sync(EN)) == (1000, 800)


def test_the_glyph_check_catches_what_would_be_missing() -> None:
    """The negative control of ``no_font_warnings``: matplotlib's DejaVu Sans has no Chinese, and
    drawing Chinese with it warns."""
    import matplotlib

    dejavu = FontFile(Path(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"))
    charts = MatplotlibCharts(fonts=[dejavu])
    assert not charts.can_draw_chinese()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        charts.render_sync(ZH)
    assert any("missing from font" in str(w.message) for w in caught)


def test_a_broken_font_file_is_no_candidate(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(b"not a font")
    assert not MatplotlibCharts(fonts=[FontFile(broken)]).can_draw_chinese()


async def test_the_same_data_gives_the_same_bytes(charts: MatplotlibCharts) -> None:
    data = ZH if charts.can_draw_chinese() else EN
    first = await charts.render(data)
    again, concurrent = await asyncio.gather(charts.render(data), charts.render(data))
    assert first == again == concurrent
    assert MatplotlibCharts(fonts=[charts.font] if charts.font else ()).render_sync(data) == first
    assert b"Matplotlib" not in first  # no Software (or any version) in the PNG's metadata


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            ChartData(
                title=ZH.title,
                balance_label=ZH.balance_label,
                spending_label=ZH.spending_label,
                balance=((TODAY, Decimal("32.63")),),
                months=MONTHS,
                spending=(),
            ),
            id="one-balance-point-no-spending",
        ),
        pytest.param(
            ChartData(
                title=ZH.title,
                balance_label=ZH.balance_label,
                spending_label=ZH.spending_label,
                balance=((MONTHS[0], Decimal(0)), (TODAY, Decimal(0))),
                months=MONTHS,
                spending=(("药房", (Decimal(0),) * 12), ("门诊", (Decimal(0),) * 11 + (Decimal("12.50"),))),
            ),
            id="zero-balance-empty-months",
        ),
        pytest.param(
            ChartData(
                title=ZH.title,
                balance_label=ZH.balance_label,
                spending_label=ZH.spending_label,
                balance=(),
                months=MONTHS,
                spending=(),
            ),
            id="nothing-at-all",
        ),
    ],
)
@pytest.mark.usefixtures("no_font_warnings")
def test_sparse_data_still_renders(charts: MatplotlibCharts, data: ChartData) -> None:
    if not charts.can_draw_chinese():
        english = {"药房": "Pharmacy", "门诊": "Outpatient"}
        spending = tuple((english[label], amounts) for label, amounts in data.spending)
        data = ChartData("Chart", "Balance", "Spending", data.balance, data.months, spending)
    assert _pixels(charts.render_sync(data)) == (1000, 800)


def test_drawing_leaves_matplotlibs_settings_alone(charts: MatplotlibCharts) -> None:
    import matplotlib

    before = dict(matplotlib.rcParams)
    charts.render_sync(EN)
    assert dict(matplotlib.rcParams) == before


def test_the_packaged_font_is_the_reviewed_file() -> None:
    """The font package is pinned; its file was checked to be byte-identical to Debian's. A new
    file under the same name should be looked at again before it is trusted."""
    name = "paperang_p2_fonts_cjk"
    assert name in {package for package, _, _ in FONT_PACKAGES}
    found = [f for f in packaged_fonts() if f.path.name == "wqy-microhei.ttc"]
    if not found:
        pytest.skip("paperang-p2-fonts-cjk is not installed")
    assert hashlib.sha256(found[0].path.read_bytes()).hexdigest() == WQY_MICROHEI_SHA256

"""``/chart``: the personal-account balance over the last 12 months and the spending per month, as a PNG.

``MatplotlibCharts`` implements ``dialogs.ports.ChartPort``. matplotlib (and fontTools) are imported
only when a font is looked for or a chart is drawn, so importing this module costs nothing. Drawing
uses ``Figure`` and ``FigureCanvasAgg`` directly, never pyplot, so no backend is selected globally.

Chinese labels need a font with CJK glyphs; matplotlib's own DejaVu Sans has none. The font is looked
for in this order, and the first whose character map holds every character of ``PROBE`` is used:

1. a font file shipped by an installed font package (``FONT_PACKAGES``): ``paperang-p2-fonts-cjk``,
   a dependency of Yibao, ships WenQuanYi Micro Hei (Apache-2.0), so a plain ``pip install`` can
   draw Chinese and every machine draws the same picture;
2. a system font, by family name (``SYSTEM_FAMILIES``) through matplotlib's font manager, e.g.
   Debian's ``fonts-noto-cjk`` or ``fonts-wqy-microhei``.

With none, ``can_draw_chinese()`` is False and the caller labels the chart in English.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dialogs.ports import ChartData

if TYPE_CHECKING:
    from matplotlib.axes import Axes

log = logging.getLogger(__name__)

PROBE = "个人账户余额统筹基金药房门诊住院月年"
"""Characters a CJK font must have to be used: the words the Chinese chart labels are made of."""

WIDTH_INCHES, HEIGHT_INCHES, DPI = 8.0, 6.4, 125
"""1000 x 800 pixels: big enough to read on a phone, small enough to send quickly."""


@dataclass(frozen=True, slots=True)
class FontFile:
    path: Path
    index: int = 0
    """The face, in a collection (``.ttc``/``.otc``) of several."""


FONT_PACKAGES: tuple[tuple[str, str, int], ...] = (
    # (importable package, font file inside it, face): found with find_spec, never imported.
    ("noto_cjk_sans_otc", "NotoSansCJK-Regular.ttc", 2),  # optional; face 2 is Noto Sans CJK SC
    ("paperang_p2_fonts_cjk", "fonts/wqy-microhei.ttc", 0),  # a dependency; WenQuanYi Micro Hei
)

SYSTEM_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "AR PL UMing CN",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
)

# Light background, colour-blind-safe colours (Okabe-Ito) for the categories, in the order given.
BALANCE_COLOUR = "#1f5fa8"
CATEGORY_COLOURS = ("#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#0072B2")
GRID_COLOUR = "#d9d9d9"
TEXT_COLOUR = "#222222"

_DRAWING = threading.Lock()
"""matplotlib is not thread-safe, and the drawing sets rcParams for its duration: one at a time."""


def packaged_fonts() -> Iterator[FontFile]:
    """Font files of the installed font packages, located without running the packages' code."""
    for package, name, index in FONT_PACKAGES:
        try:
            spec = find_spec(package)
        except (ImportError, ValueError):
            continue
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder, name)
            if path.is_file():
                yield FontFile(path, index)


def system_fonts(families: Iterable[str] = SYSTEM_FAMILIES) -> Iterator[FontFile]:
    """Fonts installed on the system, by family name, as matplotlib's font manager finds them.

    The first call in a fresh environment builds matplotlib's font cache (a fraction of a second to a
    few seconds, depending on how many fonts the system has)."""
    from matplotlib.font_manager import FontProperties, fontManager

    for family in families:
        try:
            found = fontManager.findfont(FontProperties(family=family), fallback_to_default=False)
        except ValueError:
            continue
        # matplotlib >= 3.11 returns a FontPath (a str) that carries the face of a collection. After
        # a font was uninstalled it may return its default font instead: has_glyphs() rejects that.
        yield FontFile(Path(found), getattr(found, "face_index", 0))


def has_glyphs(font: FontFile, text: str = PROBE) -> bool:
    """Whether the font's character map holds every character of ``text``."""
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

    try:
        with TTFont(font.path, fontNumber=font.index, lazy=True) as ttf:
            cmap = ttf["cmap"].getBestCmap() or {}
    except Exception as e:  # a broken or unreadable font file is just not a candidate
        log.warning("cannot read the font %s: %s", font.path, e)
        return False
    return all(ord(c) in cmap for c in text if not c.isspace())


class MatplotlibCharts:
    """Draws ``ChartData`` as a 1000 x 800 PNG: the balance as a step line above, the spending per
    month as stacked bars below, sharing the month axis. The same data always gives the same bytes.

    ``fonts`` are the CJK font candidates, tried in order; the default is ``packaged_fonts()`` then
    ``system_fonts()``, looked at on the first ``can_draw_chinese()`` or ``render()``."""

    def __init__(self, fonts: Iterable[FontFile] | None = None) -> None:
        self._candidates = fonts
        self._decided = False
        self._font: FontFile | None = None
        self._family: str | None = None
        self._lock = threading.Lock()

    @property
    def font(self) -> FontFile | None:
        """The CJK font used, once decided; None when there is none."""
        self._decide()
        return self._font

    def can_draw_chinese(self) -> bool:
        """Decided once per instance. The first call reads a font's character map (about 0.1 s) and,
        without a font package, matplotlib's font cache: call it once at start-up, or in a thread,
        to keep that off the event loop."""
        return self.font is not None

    async def render(self, data: ChartData) -> bytes:
        return await asyncio.to_thread(self.render_sync, data)

    def render_sync(self, data: ChartData) -> bytes:
        """``render`` in the calling thread."""
        self._decide()
        with _DRAWING:
            family = self._matplotlib_family()
            return _draw(data, family)

    def _decide(self) -> None:
        with self._lock:
            if self._decided:
                return
            candidates = self._candidates
            if candidates is None:
                candidates = _chain(packaged_fonts, system_fonts)
            self._font = next((f for f in candidates if has_glyphs(f)), None)
            self._decided = True
            if self._font is None:
                log.info("no CJK font found: charts will be labelled in English")
            else:
                log.info("charts use the CJK font %s (face %d)", self._font.path, self._font.index)

    def _matplotlib_family(self) -> str | None:
        """The family name matplotlib knows the chosen font by, adding the file to its font manager
        (once) if it is not a system font it already knows."""
        if self._font is None or self._family is not None:
            return self._family
        from matplotlib.font_manager import fontManager

        path = os.path.realpath(self._font.path)

        def entry_name() -> str | None:
            names = {
                getattr(e, "index", 0): e.name
                for e in fontManager.ttflist
                if os.path.realpath(e.fname) == path
            }
            # matplotlib < 3.11 knows only the first face of a collection.
            return names.get(self._font.index if self._font else 0, names.get(0))

        name = entry_name()
        if name is None:
            fontManager.addfont(path)
            name = entry_name()
        self._family = name
        return name


def _chain(*sources: Callable[[], Iterable[FontFile]]) -> Iterator[FontFile]:
    """Each source's fonts in turn, a source called only when the ones before it ran out."""
    for source in sources:
        yield from source()


def _num(amount: Decimal) -> float:
    """A Decimal amount as a plotting coordinate (drawing only: never used for money arithmetic)."""
    return float(amount)


def _yuan(value: float, _pos: Any = None) -> str:
    return f"¥{value:,.0f}"


def _day(day: date) -> float:
    """A date as the x coordinate: days, counted as ``date.toordinal`` does. The month axis is
    labelled here, so matplotlib's date handling is not needed."""
    return float(day.toordinal())


def _month_end(first: date) -> date:
    return first + timedelta(days=calendar.monthrange(first.year, first.month)[1])


def _style(family: str | None) -> dict[Any, Any]:
    return {
        "font.family": [family, "DejaVu Sans"] if family else ["DejaVu Sans"],
        "font.size": 12,
        "axes.titlesize": 14,
        "axes.titlelocation": "left",
        "axes.labelsize": 12,
        "xtick.labelsize": 11,
        "ytick.labelsize": 11,
        "legend.fontsize": 12,
        "figure.titlesize": 17,
        "figure.facecolor": "white",
        "axes.facecolor": "white",
        "axes.edgecolor": "#888888",
        "axes.labelcolor": TEXT_COLOUR,
        "text.color": TEXT_COLOUR,
        "xtick.color": "#444444",
        "ytick.color": "#444444",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.unicode_minus": False,
        "svg.hashsalt": "yibao",
        "path.simplify": True,
    }


def _draw(data: ChartData, family: str | None) -> bytes:
    import io

    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context():
        # Start from matplotlib's own defaults, not from whatever a matplotlibrc on this machine says.
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(_style(family))
        fig = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1.0, 1.1))
        fig.suptitle(data.title)
        _draw_balance(top, data)
        _draw_spending(bottom, data)
        if data.spending:
            # Below the months, where labels of any length fit.
            fig.legend(loc="outside lower center", ncols=min(len(data.spending), 4), frameon=False)
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


def _month_axis(ax: Axes, months: tuple[date, ...]) -> None:
    from matplotlib.ticker import FixedLocator

    if not months:
        return
    starts = [*months, _month_end(months[-1])]
    ax.set_xlim(_day(starts[0]), _day(starts[-1]))
    ax.xaxis.set_minor_locator(FixedLocator([_day(m) for m in starts]))
    ax.grid(True, which="minor", axis="x", color=GRID_COLOUR, linewidth=0.8)
    ax.grid(True, which="major", axis="y", color=GRID_COLOUR, linewidth=0.8)
    ax.tick_params(axis="x", which="both", length=0)
    ax.set_axisbelow(True)


def _money_axis(ax: Axes, top: float, headroom: float = 1.15) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_ylim(0, top * headroom if top > 0 else 100)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True, min_n_ticks=2))
    ax.yaxis.set_major_formatter(FuncFormatter(_yuan))


def _draw_note(ax: Axes, note: str, *, centre: bool) -> None:
    """``ChartData.balance_note`` inside the balance panel: centred in an empty one, else at its top."""
    import textwrap

    wrapped = "\n".join(textwrap.wrap(note, width=46 if any(ord(c) > 0x2E80 for c in note) else 88))
    box = {"boxstyle": "round,pad=0.4", "facecolor": "white", "edgecolor": GRID_COLOUR}
    if centre:
        ax.text(0.5, 0.5, wrapped, transform=ax.transAxes, ha="center", va="center", bbox=box)
    else:
        ax.text(0.01, 0.97, wrapped, transform=ax.transAxes, ha="left", va="top", fontsize=11, bbox=box)


def _draw_balance(ax: Axes, data: ChartData) -> None:
    ax.set_title(data.balance_label)
    _month_axis(ax, data.months)
    if data.balance_note:
        _draw_note(ax, data.balance_note, centre=not data.balance)
    if not data.balance:
        _money_axis(ax, 0)
        if data.balance_note:  # no figures at all: no scale either
            ax.set_yticks([])
        return
    xs = [_day(day) for day, _ in data.balance]
    ys = [_num(amount) for _, amount in data.balance]
    ax.fill_between(xs, ys, step="post", color=BALANCE_COLOUR, alpha=0.10, linewidth=0)
    ax.step(xs, ys, where="post", color=BALANCE_COLOUR, linewidth=2.4)
    ax.plot(xs[-1:], ys[-1:], "o", color=BALANCE_COLOUR, markersize=7)
    # The latest balance, above the panel where it never hides the line.
    ax.set_title(f"¥{data.balance[-1][1]:,.2f}", loc="right", color=BALANCE_COLOUR)
    _money_axis(ax, max(ys), headroom=1.08)


def _draw_spending(ax: Axes, data: ChartData) -> None:
    ax.set_title(data.spending_label)
    _month_axis(ax, data.months)
    starts = [_day(m) for m in data.months]
    lengths = [_day(_month_end(m)) - s for m, s in zip(data.months, starts, strict=True)]
    centres = [s + n / 2 for s, n in zip(starts, lengths, strict=True)]
    widths = [n * 0.72 for n in lengths]
    stacked = [0.0] * len(data.months)
    for i, (label, amounts) in enumerate(data.spending):
        heights = [_num(a) for a in amounts]
        ax.bar(
            centres,
            heights,
            width=widths,
            bottom=stacked,
            label=label,
            color=CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)],
            edgecolor="white",
            linewidth=0.6,
        )
        stacked = [b + h for b, h in zip(stacked, heights, strict=True)]
    for x, total in zip(centres, stacked, strict=True):
        if total > 0:
            ax.annotate(
                _yuan(total),
                (x, total),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=9,
                color="#555555",
            )
    _money_axis(ax, max(stacked, default=0.0))
    ax.set_xticks(centres, [_month_label(m, i == 0) for i, m in enumerate(data.months)])


def _month_label(first: date, leading: bool) -> str:
    """``03``, with the year below it on the first month shown and on January: no words, so the
    same in every language."""
    return f"{first:%m}\n{first.year}" if leading or first.month == 1 else f"{first:%m}"

"""``/chart`` for the pages: the same ``ChartData`` the chat's PNG is drawn from, as an inline SVG
and, under it, the monthly totals as a table (so the figures can be read, and read out by a screen
reader). Made with the pages' own autoescaping templates, never from user text unescaped.

The SVG uses presentation attributes only (no ``style``, no script), which the pages' CSP allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from jinja2 import Environment

from dialogs.amounts import format_money
from dialogs.ports import ChartData

WIDTH, HEIGHT = 360, 260
LEFT, RIGHT = 52, 8
LINE_TOP, LINE_BOTTOM = 24, 104
BAR_TOP, BAR_BOTTOM = 132, 226
COLOURS = ("#2f6fb0", "#e0883a", "#4c9a5b", "#9b59b6", "#7f8c8d")


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


def _axis(value: Decimal) -> str:
    """An axis label: whole yuan (the axis tops are round numbers)."""
    return f"¥{int(value):,}"


def _scale(top: Decimal) -> Decimal:
    """A round top for an axis (1, 2 or 5 times a power of ten), at least ``top``."""
    if top <= 0:
        return Decimal(1)
    step = Decimal(1)
    while step * 10 <= top:
        step *= 10
    for k in (1, 2, 5, 10):
        if step * k >= top:
            return step * k
    return step * 10


class SvgCharts:
    """The ``dialogs.ports.ChartPort`` of the pages: ``render`` gives an HTML fragment."""

    def __init__(self, env: Environment) -> None:
        self.env = env

    def can_draw_chinese(self) -> bool:
        return True  # the browser draws the text, with the reader's fonts

    async def render(self, data: ChartData) -> bytes:
        months = data.months
        n = max(1, len(months))
        slot = (WIDTH - LEFT - RIGHT) / n
        # Monthly totals, and the bars stacked by category.
        totals = [sum((values[i] for _, values in data.spending), Decimal(0)) for i in range(len(months))]
        bar_top = _scale(max(totals, default=Decimal(0)))
        bars: list[Bar] = []
        for i, first in enumerate(months):
            y = float(BAR_BOTTOM)
            for k, (label, values) in enumerate(data.spending):
                amount = values[i]
                if amount <= 0:
                    continue
                h = float(amount / bar_top) * (BAR_BOTTOM - BAR_TOP)
                y -= h
                bars.append(
                    Bar(
                        x=LEFT + i * slot + slot * 0.15,
                        y=y,
                        width=slot * 0.7,
                        height=h,
                        colour=COLOURS[k % len(COLOURS)],
                        title=f"{first:%Y-%m} {label} {format_money(amount)}",
                    )
                )
        # The balance line: each day's balance, placed by its day within the twelve months.
        points = ""
        line_top = line_bottom = Decimal(0)
        if data.balance and months:
            amounts = [v for _, v in data.balance]
            line_top = _scale(max(amounts))
            line_bottom = Decimal(0) if min(amounts) >= 0 else -_scale(-min(amounts))
            start = months[0].toordinal()
            span = max(1, (months[-1].toordinal() + 31) - start)
            coords = []
            for day, value in data.balance:
                x = LEFT + (day.toordinal() - start) / span * (WIDTH - LEFT - RIGHT)
                frac = float((value - line_bottom) / (line_top - line_bottom or 1))
                y = LINE_BOTTOM - frac * (LINE_BOTTOM - LINE_TOP)
                coords.append(f"{x:.1f},{y:.1f}")
            points = " ".join(coords)
        legend = [(label, COLOURS[k % len(COLOURS)]) for k, (label, _) in enumerate(data.spending)]
        table = [
            (first, [values[i] for _, values in data.spending], totals[i]) for i, first in enumerate(months)
        ]
        template = self.env.get_template("chart.html")
        html = template.render(
            data=data,
            width=WIDTH,
            height=HEIGHT,
            left=LEFT,
            right=WIDTH - RIGHT,
            slot=slot,
            line=(LINE_TOP, LINE_BOTTOM),
            bar=(BAR_TOP, BAR_BOTTOM),
            line_top=_axis(line_top),
            line_bottom=_axis(line_bottom),
            bar_max=_axis(bar_top),
            points=points,
            bars=bars,
            legend=legend,
            table=table,
            money=format_money,
            last_balance=format_money(data.balance[-1][1]) if data.balance else "",
        )
        return html.encode()

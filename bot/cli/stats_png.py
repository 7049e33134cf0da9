"""``yibao admin stats --png``: the operator's figures as one picture (matplotlib, English labels).

Every bar under 5 is drawn empty and labelled ``<5``, as the text report shows it: no bar is about
one person.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from bot.audit.report import SMALL, StatsReport, shown


def _bars(ax: Any, labels: Sequence[str], values: Sequence[int], title: str, color: str) -> None:
    heights = [v if v >= SMALL else 0 for v in values]
    ax.set_title(title, fontsize=10, loc="left")
    if not labels:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="#888")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    xs = range(len(labels))
    ax.bar(xs, heights, color=color)
    top = max([*heights, 1])
    for x, v in zip(xs, values, strict=True):
        ax.text(x, (v if v >= SMALL else 0) + top * 0.02, shown(v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, top * 1.18)
    ax.spines[["top", "right"]].set_visible(False)


def draw(report: StatsReport) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), dpi=100)
    fig.suptitle(
        f"Yibao: the {report.days} day(s) to {report.until.isoformat()} (aggregates; groups under 5 shown as <5)",
        fontsize=12,
    )
    (a, b, c), (d, e, f) = axes

    users = sorted(report.users.items())
    labels = [f"{ins}/{chat}" for (ins, chat), _ in users]
    xs = range(len(labels))
    a.set_title("Users now, by insurer / chat platform", fontsize=10, loc="left")
    if users:
        bound = [v[0] for _, v in users]
        subscribed = [v[1] for _, v in users]
        top = max([1] + [v for v in bound + subscribed if v >= SMALL])
        for offset, values, color, name in (
            (-0.2, bound, "#4C72B0", "bound"),
            (0.2, subscribed, "#55A868", "subscribed"),
        ):
            a.bar(
                [x + offset for x in xs],
                [v if v >= SMALL else 0 for v in values],
                0.4,
                color=color,
                label=name,
            )
            for x, v in zip(xs, values, strict=True):
                a.text(
                    x + offset,
                    (v if v >= SMALL else 0) + top * 0.02,
                    shown(v),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
        a.set_xticks(list(xs))
        a.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        a.set_ylim(0, top * 1.2)
        a.legend(fontsize=8, frameon=False)
        a.spines[["top", "right"]].set_visible(False)
    else:
        _bars(a, [], [], "Users now, by insurer / chat platform", "#4C72B0")

    steps = ("started", "code_sent", "bound")
    funnel = [sum(fl.get(s, 0) for fl in report.funnel.values()) for s in steps]
    _bars(b, ["started", "code sent", "bound"], funnel, "Bind funnel (all chat platforms)", "#8172B2")

    failures = sorted(report.failures.items(), key=lambda kv: -kv[1])[:10]
    _bars(c, [r for r, _ in failures], [n for _, n in failures], "Bind failures by reason", "#C44E52")

    alert_labels: list[str] = []
    alert_values: list[int] = []
    for what in ("sent", "deferred", "dropped"):
        for reason, n in sorted(report.alerts.get(what, {}).items()):
            alert_labels.append(what if not reason else f"{what}: {reason}")
            alert_values.append(n)
    _bars(d, alert_labels, alert_values, "Alerts sent / deferred / dropped", "#DD8452")

    e.set_title("Answer latency percentiles (ms, at most: the histogram bucket)", fontsize=10, loc="left")
    rows = [(chat, lat) for chat, lat in sorted(report.latency.items()) if lat["p50"] is not None]
    if rows:
        width = 0.8 / 3
        highest = 1.0
        for i, (name, color) in enumerate((("p50", "#64B5CD"), ("p90", "#4C72B0"), ("p99", "#2A3F6B"))):
            levels = [float(lat[name]) if lat[name] != "inf" else 20000.0 for _, lat in rows]
            where = [n + (i - 1) * width for n in range(len(rows))]
            e.bar(where, levels, width, color=color, label=name)
            for at, level, (_, lat) in zip(where, levels, rows, strict=True):
                e.text(at, level, f"≤{lat[name]}", ha="center", va="bottom", fontsize=7)
            highest = max(highest, *levels)
        e.set_ylim(0, highest * 1.2)
        e.set_xticks(range(len(rows)))
        e.set_xticklabels([f"{chat} (n={lat['count']})" for chat, lat in rows], fontsize=8)
        e.set_ylabel("ms", fontsize=8)
        e.legend(fontsize=8, frameon=False)
        e.spines[["top", "right"]].set_visible(False)
    else:
        e.text(
            0.5, 0.5, "fewer than 5 answers", ha="center", va="center", transform=e.transAxes, color="#888"
        )
        e.set_xticks([])
        e.set_yticks([])

    f.set_title("Insurance platform error rate", fontsize=10, loc="left")
    calls = [(k, v) for k, v in sorted(report.insurers.items()) if v[0] >= SMALL]
    if calls:
        rates: list[float] = [100 * failed / n for _, (n, failed) in calls]
        f.bar(range(len(calls)), rates, color="#937860")
        for x, ((_, _), (n, failed)) in enumerate(calls):
            f.text(
                x,
                100 * failed / n + 1,
                f"{100 * failed / n:.1f}%\n({shown(failed)}/{n})",
                ha="center",
                va="bottom",
                fontsize=7,
            )
        f.set_xticks(range(len(calls)))
        f.set_xticklabels([f"{ins} {call}" for (ins, call), _ in calls], rotation=30, ha="right", fontsize=8)
        f.set_ylim(0, max([*rates, 10]) * 1.3)
        f.set_ylabel("% of calls", fontsize=8)
        f.spines[["top", "right"]].set_visible(False)
    else:
        f.text(0.5, 0.5, "fewer than 5 calls", ha="center", va="center", transform=f.transAxes, color="#888")
        f.set_xticks([])
        f.set_yticks([])

    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()

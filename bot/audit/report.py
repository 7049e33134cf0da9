"""``yibao admin stats``: the operator's figures, aggregates only, from the daily figures and a count
of the profiles. No figure is about one person: any count from 1 to 4 is shown as ``"<5"``, and a
percentile or a rate is given only over at least 5 events (``SMALL``)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from redis.asyncio import Redis

from bot.audit.figures import LATENCY_BUCKETS_MS, Figures
from bot.storage.codec import StateCodec
from bot.storage.keys import Keys

SMALL = 5
ERRORS = frozenset({"unavailable", "maintenance", "rate_limited", "error", "account_locked"})
"""Call outcomes that are the platform's failure (not "no such member", which is an answer)."""
_USER_IN_KEY = re.compile(rb"\{([^}]+)\}")


def shown(n: int) -> str:
    """A count as the operator may see it: ``"<5"`` for a group of 1 to 4 people or events."""
    return "<5" if 0 < n < SMALL else str(n)


@dataclass
class StatsReport:
    days: int
    until: date
    users: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    """(insurer, chat platform) -> [bound, subscribed]."""
    funnel: dict[str, dict[str, int]] = field(default_factory=dict)
    """chat platform -> started, code_sent, bound."""
    failures: dict[str, int] = field(default_factory=dict)
    """reason -> bind attempts failed for it (all chat platforms)."""
    alerts: dict[str, dict[str, int]] = field(default_factory=dict)
    """``sent``, ``deferred``, ``dropped`` -> reason (``""`` for sent) -> count."""
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    """chat platform -> count, p50, p90, p99 (milliseconds, the bucket's upper bound; None if few)."""
    insurers: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    """(insurer, call) -> (calls, failed calls)."""

    def as_text(self) -> str:
        out = [
            f"Yibao figures: the {self.days} day(s) to {self.until.isoformat()} (groups under 5 shown as <5)"
        ]
        out.append("\nBound and subscribed users, by insurance platform and chat platform (now):")
        if not self.users:
            out.append("  none")
        for (insurer, chat), (bound, subscribed) in sorted(self.users.items()):
            out.append(
                f"  {insurer:<16} {chat:<8} bound {shown(bound):>6}  subscribed {shown(subscribed):>6}"
            )
        out.append("\nBind funnel (started -> code sent -> bound):")
        for chat, f in sorted(self.funnel.items()):
            out.append(
                f"  {chat:<8} {shown(f.get('started', 0)):>6} -> {shown(f.get('code_sent', 0)):>6} -> "
                f"{shown(f.get('bound', 0)):>6}"
            )
        if not self.funnel:
            out.append("  none")
        out.append("  failures by reason:")
        for reason, n in sorted(self.failures.items(), key=lambda kv: -kv[1]):
            out.append(f"    {reason:<24} {shown(n):>6}")
        out.append("\nAlerts:")
        for what in ("sent", "deferred", "dropped"):
            by_reason = self.alerts.get(what, {})
            total = sum(by_reason.values())
            detail = ", ".join(f"{r} {shown(n)}" for r, n in sorted(by_reason.items()) if r)
            out.append(f"  {what:<9} {shown(total):>6}" + (f"  ({detail})" if detail else ""))
        out.append("\nAnswer latency (ms, at most):")
        for chat, lat in sorted(self.latency.items()):
            if lat["p50"] is None:
                out.append(f"  {chat:<8} answers {shown(lat['count'])}")
            else:
                out.append(
                    f"  {chat:<8} answers {lat['count']:>6}  p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}"
                )
        out.append("\nInsurance platforms, calls and error rate:")
        for (insurer, call), (calls, failed) in sorted(self.insurers.items()):
            rate = f"{failed / calls:.1%}" if calls >= SMALL else "n/a"
            out.append(
                f"  {insurer:<16} {call:<13} calls {shown(calls):>6}  errors {shown(failed):>6}  rate {rate}"
            )
        return "\n".join(out)


def percentile(buckets: Counter[str], p: float) -> str | None:
    total = sum(buckets.values())
    if total < SMALL:
        return None
    seen = 0
    for le in (*map(str, LATENCY_BUCKETS_MS), "inf"):
        seen += buckets.get(le, 0)
        if seen >= p * total:
            return le
    return "inf"


def summarize(counts: Counter[str], days: int, until: date) -> StatsReport:
    report = StatsReport(days=days, until=until)
    latency: defaultdict[str, Counter[str]] = defaultdict(Counter)
    insurers: defaultdict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    alerts: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for key, n in counts.items():
        name, *labels = key.split("|")
        if name == "bind_started" and len(labels) == 1:
            report.funnel.setdefault(labels[0], {}).setdefault("started", 0)
            report.funnel[labels[0]]["started"] += n
        elif name in ("code_sent", "bound") and len(labels) == 2:
            f = report.funnel.setdefault(labels[0], {})
            f[name] = f.get(name, 0) + n
        elif name == "bind_failed" and len(labels) == 2:
            report.failures[labels[1]] = report.failures.get(labels[1], 0) + n
        elif name == "alert_sent" and len(labels) == 1:
            alerts["sent"][""] += n
        elif name in ("alert_deferred", "alert_dropped") and len(labels) == 2:
            alerts[name.removeprefix("alert_")][labels[1]] += n
        elif name == "answer" and len(labels) == 2:
            latency[labels[0]][labels[1]] += n
        elif name == "insurer" and len(labels) == 3:
            calls = insurers[(labels[0], labels[1])]
            calls[0] += n
            if labels[2] in ERRORS:
                calls[1] += n
    report.alerts = {k: dict(v) for k, v in alerts.items()}
    report.insurers = {k: (v[0], v[1]) for k, v in insurers.items()}
    for chat, buckets in latency.items():
        report.latency[chat] = {
            "count": sum(buckets.values()),
            "p50": percentile(buckets, 0.5),
            "p90": percentile(buckets, 0.9),
            "p99": percentile(buckets, 0.99),
        }
    return report


async def count_users(redis: Redis, keys: Keys) -> dict[tuple[str, str], list[int]]:
    """Bound and subscribed users by (insurer, chat platform), from every profile (SCAN; the
    binding's platform is not encrypted, so nothing is decrypted)."""
    out: dict[tuple[str, str], list[int]] = {}
    batch: list[bytes] = []

    async def flush() -> None:
        pipe = redis.pipeline(transaction=False)
        for k in batch:
            pipe.hmget(
                k, "b", "binding", "threshold"
            )  # "b": the binding as stored since 18; "binding": before
        for k, (head, old, threshold) in zip(batch, await pipe.execute(), strict=True):
            binding = head if head is not None else old
            if binding is None:
                continue
            m = _USER_IN_KEY.search(k)
            chat = m.group(1).decode().partition(":")[0] if m else "?"
            insurer, _ = StateCodec.binding_member(binding)
            row = out.setdefault((insurer, chat), [0, 0])
            row[0] += 1
            row[1] += threshold is not None
        batch.clear()

    async for key in redis.scan_iter(match=keys.profiles_pattern(), count=1000):
        batch.append(key)
        if len(batch) >= 500:
            await flush()
    if batch:
        await flush()
    return out


async def build_report(redis: Redis, keys: Keys, figures: Figures, days: int) -> StatsReport:
    until = figures.today()
    report = summarize(await figures.read(days, until), days, until)
    report.users = await count_users(redis, keys)
    return report

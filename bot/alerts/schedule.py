"""When alert checks run and when alerts may be sent: rounds (an interval or a cron expression) and
quiet hours."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo

from cronsim import CronSim

from bot.config import AlertSettings, parse_quiet_hours


@dataclass(frozen=True, slots=True)
class Rounds:
    """A round of checks starts at every multiple of ``every`` (Unix time), or at each time of ``cron``.

    Within a round each user is checked at an offset of their own (a hash of the user key, below
    ``jitter``), the same every round: checks spread out, and a user's checks stay a round apart.
    """

    every: timedelta
    jitter: timedelta
    cron: str | None = None
    tz: tzinfo = UTC

    @classmethod
    def from_settings(cls, alerts: AlertSettings, tz: tzinfo) -> Rounds:
        return cls(
            every=timedelta(seconds=alerts.every_seconds),
            jitter=timedelta(seconds=alerts.jitter_seconds),
            cron=alerts.cron,
            tz=tz,
        )

    def next_start(self, after: datetime) -> datetime:
        """The start of the first round strictly after ``after``."""
        if self.cron is not None:
            return next(iter(CronSim(self.cron, after.astimezone(self.tz))))
        step = self.every.total_seconds()
        return datetime.fromtimestamp((math.floor(after.timestamp() / step) + 1) * step, tz=UTC)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local hours in which nothing unprompted is sent; ``start > end`` wraps past midnight."""

    start: time
    end: time
    tz: tzinfo

    @classmethod
    def from_settings(cls, alerts: AlertSettings, tz: tzinfo) -> QuietHours | None:
        bounds = parse_quiet_hours(alerts.quiet_hours)
        return None if bounds is None else cls(bounds[0], bounds[1], tz)

    def ends(self, at: datetime) -> datetime | None:
        """When the quiet hours that ``at`` falls in end, or None if ``at`` is not in them."""
        local = at.astimezone(self.tz)
        now = local.time().replace(tzinfo=None)
        wraps = self.start > self.end
        quiet = (now >= self.start or now < self.end) if wraps else (self.start <= now < self.end)
        if not quiet:
            return None
        day = local.date() if now < self.end else local.date() + timedelta(days=1)
        # Through UTC, so a zone with a clock change that night still lands on the wall-clock time.
        return datetime.combine(day, self.end, tzinfo=self.tz).astimezone(UTC)

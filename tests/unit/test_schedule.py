"""When checks run and when alerts may go: rounds, cron, quiet hours, and their settings."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from bot.alerts.schedule import QuietHours, Rounds
from bot.config import AlertSettings, parse_quiet_hours

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_rounds_start_at_multiples_of_the_interval() -> None:
    rounds = Rounds(every=timedelta(hours=6), jitter=timedelta(minutes=30))
    at = datetime(2026, 11, 24, 7, 15, tzinfo=UTC)
    assert rounds.next_start(at) == datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    # strictly after: a round starting now is the next one's predecessor
    assert rounds.next_start(datetime(2026, 11, 24, 12, 0, tzinfo=UTC)) == datetime(
        2026, 11, 24, 18, 0, tzinfo=UTC
    )


def test_cron_rounds_are_in_the_local_zone() -> None:
    rounds = Rounds(every=timedelta(hours=6), jitter=timedelta(0), cron="0 9,18 * * *", tz=SHANGHAI)
    at = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)
    assert rounds.next_start(at) == datetime(2026, 11, 24, 18, 0, tzinfo=SHANGHAI)
    assert rounds.next_start(datetime(2026, 11, 24, 19, 0, tzinfo=SHANGHAI)) == datetime(
        2026, 11, 25, 9, 0, tzinfo=SHANGHAI
    )


@pytest.mark.parametrize(
    ("local", "ends"),
    [
        ((21, 59), None),
        ((22, 0), datetime(2026, 11, 25, 8, 0, tzinfo=SHANGHAI)),
        ((23, 30), datetime(2026, 11, 25, 8, 0, tzinfo=SHANGHAI)),
        ((0, 10), datetime(2026, 11, 24, 8, 0, tzinfo=SHANGHAI)),
        ((7, 59), datetime(2026, 11, 24, 8, 0, tzinfo=SHANGHAI)),
        ((8, 0), None),
        ((12, 0), None),
    ],
)
def test_quiet_hours_past_midnight(local: tuple[int, int], ends: datetime | None) -> None:
    quiet = QuietHours(time(22), time(8), SHANGHAI)
    at = datetime(2026, 11, 24, *local, tzinfo=SHANGHAI)
    assert quiet.ends(at) == ends
    assert quiet.ends(at.astimezone(UTC)) == ends  # the zone of the question does not matter


def test_quiet_hours_within_a_day() -> None:
    quiet = QuietHours(time(12), time(14), SHANGHAI)
    assert quiet.ends(datetime(2026, 11, 24, 13, tzinfo=SHANGHAI)) == datetime(
        2026, 11, 24, 14, tzinfo=SHANGHAI
    )
    assert quiet.ends(datetime(2026, 11, 24, 14, tzinfo=SHANGHAI)) is None
    assert quiet.ends(datetime(2026, 11, 24, 11, tzinfo=SHANGHAI)) is None


def test_quiet_hours_setting() -> None:
    assert parse_quiet_hours("22:00-08:00") == (time(22), time(8))
    assert parse_quiet_hours(" 23:30 - 07:15 ") == (time(23, 30), time(7, 15))
    assert parse_quiet_hours("") is None
    assert QuietHours.from_settings(AlertSettings(quiet_hours=""), SHANGHAI) is None
    assert parse_quiet_hours("22-08") == (time(22), time(8))
    for bad in ("22:00", "08:00-08:00", "25:00-08:00", "night"):
        with pytest.raises(ValidationError):
            AlertSettings(quiet_hours=bad)


def test_alert_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ValidationError, match="cron"):
        AlertSettings(cron="every day")
    with pytest.raises(ValidationError, match="jitter_seconds"):
        AlertSettings(every_seconds=600, jitter_seconds=600)
    AlertSettings(cron="0 9 * * *", jitter_seconds=7200)  # with cron the interval does not apply
    with pytest.raises(ValidationError):
        AlertSettings(batch_size=101)  # more than the contract's batch
    with pytest.raises(ValidationError):
        AlertSettings(send_rate=0)

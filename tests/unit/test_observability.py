"""The parts of operating Yibao that need no I/O: metric names, JSON log lines, the readiness
registry, the figures' aggregation and its "<5" rule."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from metrics_rules import check_names, promtool_problems

from bot import metrics
from bot.audit.report import percentile, shown, summarize
from bot.cli.admin import parse_since
from bot.http.server import Readiness, run_checks
from bot.logs import JsonFormatter, set_user_hasher


def test_every_metric_follows_the_naming_rules() -> None:
    # one sample of each labelled family, so that every name is in the text
    metrics.UPDATES.labels("tg", "balance").inc()
    metrics.CHAT_REFUSALS.labels("tg", "429").inc()
    metrics.set_breaker("sandbox", "closed")
    text = metrics.render()[0].decode()
    assert check_names(text) == []
    assert promtool_problems(text) in (None, "")
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE yibao_")}
    assert len(names) >= 30
    assert all(n.startswith("yibao_") for n in names)


@pytest.mark.parametrize(
    ("user", "platform"),
    [("tg:123", "tg"), ("console:local", "console"), ("wx:oAbC-12_x", "wx"), ("nonsense", "unknown")],
)
def test_the_platform_label_is_the_user_keys_prefix(user: str, platform: str) -> None:
    assert metrics.platform_of(user) == platform


@pytest.fixture
def hashed() -> Iterator[None]:
    set_user_hasher(lambda user: f"h{len(user)}")
    yield
    set_user_hasher(None)


def _line(msg: str, *args: object, exc: BaseException | None = None) -> dict[str, object]:
    record = logging.LogRecord("bot.x", logging.INFO, __file__, 1, msg, args, None)
    if exc is not None:
        try:
            raise exc
        except BaseException as e:
            record.exc_info = (type(e), e, e.__traceback__)
    return dict(json.loads(JsonFormatter().format(record)))


def test_a_json_line_names_the_user_by_hash_only(hashed: None) -> None:
    line = _line("bind lockout for %s until %s", "wx:oAbCdEf123", "10:00")
    assert line["event"] == "bind lockout for u:h13 until 10:00"
    assert line["user"] == "u:h13"
    assert line["platform"] == "wx"
    assert {"time", "level", "logger"} <= set(line)
    assert "oAbCdEf123" not in json.dumps(line)


def test_a_json_line_masks_numbers_and_keeps_no_exception_text(hashed: None) -> None:
    line = _line("sms to %s failed", "13812345678", exc=ValueError("张伟 typed 11010519491231002X"))
    assert "13812345678" not in json.dumps(line, ensure_ascii=False)
    assert line["exc_type"] == "ValueError"
    assert "张伟" not in json.dumps(line, ensure_ascii=False)
    assert "localhost:8080" in _line("listening on localhost:8080")["event"]


async def test_readiness_names_what_is_not_ready() -> None:
    async def ok() -> Readiness:
        return Readiness(True)

    async def down() -> Readiness:
        return Readiness(False, "no answer")

    async def broken() -> Readiness:
        raise RuntimeError("secret detail")

    async def slow() -> Readiness:
        await asyncio.sleep(5)
        return Readiness(True)

    ready, body = await run_checks({"redis": ok, "telegram": ok}, 1.0)
    assert ready
    assert body == {"status": "ready", "checks": {"redis": {"ok": True}, "telegram": {"ok": True}}}
    ready, body = await run_checks({"redis": down, "wechat": broken, "insurance": slow, "telegram": ok}, 0.05)
    assert not ready
    assert body["checks"] == {
        "redis": {"ok": False, "detail": "no answer"},
        "wechat": {"ok": False, "detail": "RuntimeError"},
        "insurance": {"ok": False, "detail": "no answer within 0.05 s"},
        "telegram": {"ok": True},
    }


def test_small_groups_are_shown_as_under_five() -> None:
    assert [shown(n) for n in (0, 1, 2, 3, 4, 5, 100)] == ["0", "<5", "<5", "<5", "<5", "5", "100"]
    assert percentile(Counter({"10": 4}), 0.5) is None  # 4 answers: no percentile of so few
    assert percentile(Counter({"10": 50, "100": 45, "inf": 5}), 0.5) == "10"
    assert percentile(Counter({"10": 50, "100": 45, "inf": 5}), 0.9) == "100"
    assert percentile(Counter({"10": 50, "100": 45, "inf": 5}), 0.99) == "inf"


def test_the_daily_counts_add_up_to_the_report() -> None:
    counts = Counter(
        {
            "bind_started|tg": 7,
            "code_sent|tg|sandbox": 6,
            "bound|tg|sandbox": 5,
            "bind_failed|tg|code_wrong": 2,
            "bind_failed|wx|code_wrong": 1,
            "alert_sent|tg": 3,
            "alert_dropped|tg|undeliverable": 1,
            "alert_deferred|tg|quiet_hours": 9,
            "insurer|sandbox|balance|ok": 8,
            "insurer|sandbox|balance|unavailable": 2,
            "insurer|sandbox|lookup|member_not_found": 3,
        }
    )
    report = summarize(counts, 7, date(2026, 12, 1))
    assert report.funnel == {"tg": {"started": 7, "code_sent": 6, "bound": 5}}
    assert report.failures == {"code_wrong": 3}
    assert report.alerts == {"sent": {"": 3}, "dropped": {"undeliverable": 1}, "deferred": {"quiet_hours": 9}}
    assert report.insurers == {("sandbox", "balance"): (10, 2), ("sandbox", "lookup"): (3, 0)}
    text = report.as_text()
    assert "rate 20.0%" in text
    assert "sent          <5" in text


def test_since_reads_durations_and_times() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == datetime(2026, 12, 1, 11, 30, tzinfo=UTC)
    assert parse_since("2d", now) == datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert parse_since("2026-12-01T08:00", now) == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    assert parse_since(None, now) is None

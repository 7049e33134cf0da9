"""Every Prometheus metric of Yibao, defined in this one module (``prometheus-client``).

Names follow Prometheus's rules: the ``yibao_`` prefix, base units (``_seconds``), ``_total`` on
counters; labels are small closed sets (a chat platform, an insurance platform, a call, an outcome,
a reason), never a user, a phone or anything a person typed. The chat platform is the user key's
prefix (``tg``, ``console``, later ``wx``, ``wecom``), so a new platform reports by its name alone.

The metrics are the process's (prometheus-client's default registry). ``render`` is what ``/metrics``
serves; with ``PROMETHEUS_MULTIPROC_DIR`` set in the environment *before the process starts* (a
process that forks workers), prometheus-client keeps the values in files in that folder and
``render`` adds up every process's, as its multiprocess mode documents.

``ChatMeter`` is what the platforms (which may not import ``bot``) are handed: it implements the
dialogs' ``ChatMetrics`` port over the metrics here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Answer and call latencies: from a few milliseconds (a cached /balance) to the insurance deadline.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- the turn every chat platform goes through ----------------------------------------------------

UPDATES = Counter(
    "yibao_updates_total",
    "Messages and button presses answered, by chat platform and kind (the command, or text).",
    ["platform", "kind"],
)
ANSWER_SECONDS = Histogram(
    "yibao_answer_seconds",
    "Time from a message reaching the conversation to its replies being decided.",
    ["platform"],
    buckets=_LATENCY_BUCKETS,
)
ANSWER_FAILURES = Counter(
    "yibao_answer_failures_total",
    "Messages answered with an apology because something failed, by chat platform and cause.",
    ["platform", "cause"],
)

# -- the chat platforms' sending (Telegram's core and rate limiter; WeChat, WeCom alike) ---------

CHAT_SENDS = Counter(
    "yibao_chat_sends_total",
    "Messages sent to a chat platform, by platform and result (ok, blocked, refused, timeout).",
    ["platform", "result"],
)
CHAT_REFUSALS = Counter(
    "yibao_chat_api_refusals_total",
    "Chat platform API answers that refused a call, by platform and HTTP status (429, 403, 400).",
    ["platform", "status"],
)
CHAT_RATE_WAIT = Histogram(
    "yibao_chat_rate_limit_wait_seconds",
    "Time a send waited for the platform's rate limits (its own pacing and 429 pauses).",
    ["platform"],
    buckets=(0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 15.0, 60.0),
)

# -- insurance platforms ------------------------------------------------------------------------------

INSURANCE_REQUESTS = Counter(
    "yibao_insurance_requests_total",
    "Calls to an insurance platform, by platform (insurer), call and outcome (ok or the problem code).",
    ["insurer", "call", "outcome"],
)
INSURANCE_SECONDS = Histogram(
    "yibao_insurance_request_seconds",
    "Duration of calls to an insurance platform, retries included.",
    ["insurer", "call"],
    buckets=_LATENCY_BUCKETS,
)
BREAKER_STATE = Gauge(
    "yibao_insurance_breaker_state",
    "The circuit breaker of each insurance platform: 1 for its current state (closed, half_open, open).",
    ["insurer", "state"],
    multiprocess_mode="livemax",
)
BREAKER_STATES = ("closed", "half_open", "open")

# -- Redis ------------------------------------------------------------------------------------------

REDIS_ROUND_TRIPS = Counter(
    "yibao_redis_round_trips_total",
    "Requests written to Redis (one command, or one pipeline).",
)
REDIS_ERRORS = Counter(
    "yibao_redis_errors_total",
    "Redis requests that failed, by error class (ConnectionError, TimeoutError, ResponseError...).",
    ["error"],
)

# -- SMS codes and binding ----------------------------------------------------------------------------

OTP_SENT = Counter("yibao_otp_codes_sent_total", "SMS codes sent, by chat platform.", ["platform"])
OTP_REFUSED = Counter(
    "yibao_otp_codes_refused_total",
    "SMS codes not sent, by chat platform and reason (too_soon, hourly_limit, locked_out, sms_failed...).",
    ["platform", "reason"],
)
OTP_CHECKS = Counter(
    "yibao_otp_checks_total",
    "SMS codes checked, by chat platform and verdict (ok, wrong, void, expired, no_code, locked_out).",
    ["platform", "verdict"],
)
BINDS_STARTED = Counter("yibao_binds_started_total", "Binds started (/bind), by chat platform.", ["platform"])
BINDS_CODE_SENT = Counter(
    "yibao_binds_code_sent_total",
    "Binds that found the member and sent a code, by chat platform and insurer.",
    ["platform", "insurer"],
)
BINDS_COMPLETED = Counter(
    "yibao_binds_completed_total", "Binds completed, by chat platform and insurer.", ["platform", "insurer"]
)
BINDS_FAILED = Counter(
    "yibao_binds_failed_total",
    "Bind attempts that failed, by chat platform and reason.",
    ["platform", "reason"],
)
UNBINDS = Counter("yibao_unbinds_total", "Users who unbound and were erased, by chat platform.", ["platform"])
LOCKOUTS = Counter(
    "yibao_bind_lockouts_total", "Bind lockouts (a user, or an ID number), by chat platform.", ["platform"]
)
ERASURES = Counter("yibao_erasures_total", "Users erased, by source (chat, admin).", ["source"])

# -- alerts ---------------------------------------------------------------------------------------

ALERTS_CHECKED = Counter("yibao_alerts_checked_total", "Subscribed users whose balance was checked.")
ALERTS_QUEUED = Counter(
    "yibao_alerts_queued_total", "Alerts written to the outbox, by chat platform.", ["platform"]
)
ALERTS_SENT = Counter("yibao_alerts_sent_total", "Alerts delivered, by chat platform.", ["platform"])
ALERTS_DEFERRED = Counter(
    "yibao_alerts_deferred_total",
    "Alerts held back (quiet hours; held by the platform for the user's next message: WeChat outside its window), by chat platform and reason.",
    ["platform", "reason"],
)
ALERTS_DROPPED = Counter(
    "yibao_alerts_dropped_total",
    "Alerts not sent, by chat platform and reason (undeliverable, unsubscribed, already_sent...).",
    ["platform", "reason"],
)
OUTBOX_DEPTH = Gauge(
    "yibao_outbox_depth",
    "Alerts waiting in the outbox of a chat platform (the stream and the quiet-hours queue).",
    ["platform"],
    multiprocess_mode="livemax",
)
OUTBOX_OLDEST_AGE = Gauge(
    "yibao_outbox_oldest_age_seconds",
    "Age of the oldest alert waiting in a chat platform's outbox stream (0 when empty).",
    ["platform"],
    multiprocess_mode="livemax",
)

# -- audit --------------------------------------------------------------------------------------------

AUDIT_RECORDS = Counter("yibao_audit_records_total", "Audit records written, by action.", ["action"])


CHAT_PLATFORMS = ("tg", "console", "wx", "wecom")
"""The chat platforms whose outbox gauges are read at scrape time (a new one adds its prefix)."""


def platform_of(user: str) -> str:
    """The chat platform of a user key (``tg:123`` -> ``tg``); a label, never the user."""
    head, sep, _ = user.partition(":")
    return head if sep and head.isalnum() and len(head) <= 16 else "unknown"


@contextmanager
def timed(histogram: Histogram, *labels: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        histogram.labels(*labels).observe(time.perf_counter() - start)


def set_breaker(insurer: str, state: str) -> None:
    for s in BREAKER_STATES:
        BREAKER_STATE.labels(insurer, s).set(1 if s == state else 0)


def render() -> tuple[bytes, str]:
    """The exposition text of every metric of this process (of every process sharing
    ``PROMETHEUS_MULTIPROC_DIR``, when it is set) and its content type."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE
    return generate_latest(), CONTENT_TYPE


class ChatMeter:
    """The dialogs' ``ChatMetrics`` port for a chat platform's adapter (``platforms/`` may not
    import this module; ``bot`` hands them one of these)."""

    def sent(self, platform: str, result: str) -> None:
        CHAT_SENDS.labels(platform, result).inc()

    def refused(self, platform: str, status: int) -> None:
        CHAT_REFUSALS.labels(platform, str(status)).inc()

    def waited(self, platform: str, seconds: float) -> None:
        CHAT_RATE_WAIT.labels(platform).observe(max(0.0, seconds))

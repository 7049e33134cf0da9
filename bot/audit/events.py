"""The dialogs' ``EventSink``: what a turn did, into the metrics, the daily figures and the audit trail.

Binds started, codes sent, binds completed and failed (by reason) are counted; completed and failed
binds, lockouts and unbinds are also audited. A failure here (Redis away) is logged and swallowed:
the user was answered already, and the metrics still counted it.
"""

from __future__ import annotations

import logging

from bot import metrics
from bot.audit.figures import Figures
from bot.audit.trail import AuditTrail
from dialogs.models import Event, EventKind, UserKey

log = logging.getLogger(__name__)

_AUDITED = {
    EventKind.BOUND: "bound",
    EventKind.BIND_FAILED: "bind_failed",
    EventKind.LOCKED_OUT: "locked_out",
    EventKind.UNBOUND: "unbound",
}


class EventRecorder:
    def __init__(self, *, figures: Figures, audit: AuditTrail) -> None:
        self.figures = figures
        self.audit = audit

    async def record(self, user: UserKey, events: tuple[Event, ...]) -> None:
        platform = metrics.platform_of(user)
        for event in events:
            self._count(platform, event)
        try:
            for event in events:
                action = _AUDITED.get(event.kind)
                if action is not None:
                    await self.audit.record(action, user, reason=event.reason, insurer=event.insurer)
        except Exception as e:
            log.warning("could not write an audit record (%s)", type(e).__name__)

    def _count(self, platform: str, event: Event) -> None:
        f = self.figures
        match event.kind:
            case EventKind.BIND_STARTED:
                metrics.BINDS_STARTED.labels(platform).inc()
                f.add("bind_started", platform)
            case EventKind.CODE_SENT:
                metrics.BINDS_CODE_SENT.labels(platform, event.insurer).inc()
                f.add("code_sent", platform, event.insurer)
            case EventKind.BOUND:
                metrics.BINDS_COMPLETED.labels(platform, event.insurer).inc()
                f.add("bound", platform, event.insurer)
            case EventKind.BIND_FAILED:
                metrics.BINDS_FAILED.labels(platform, event.reason).inc()
                f.add("bind_failed", platform, event.reason)
            case EventKind.LOCKED_OUT:
                metrics.LOCKOUTS.labels(platform).inc()
            case EventKind.UNBOUND:
                metrics.UNBINDS.labels(platform).inc()
                metrics.ERASURES.labels("chat").inc()
            case EventKind.ANSWER_FAILED:
                metrics.ANSWER_FAILURES.labels(platform, event.reason).inc()

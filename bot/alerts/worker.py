"""The background work of alerts: the schedule, the checks and the senders, as loops that outlive
a Redis or platform outage (they log, wait and go on) and stop cleanly between two pieces of work.

``yibao worker`` runs only this; ``yibao run`` and ``yibao chat`` run it beside their chat platform
(unless ``alerts.enabled`` is false). Any number of them share the work through Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from zoneinfo import ZoneInfo

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.alerts.checks import Checker
from bot.alerts.outbox import Outbox, Sender
from bot.alerts.schedule import QuietHours, Rounds
from bot.audit.figures import Figures
from bot.config import AlertSettings
from bot.insurers.registry import PlatformRegistry
from bot.storage.codec import StateCodec
from bot.storage.connect import Topology
from bot.storage.health import UNREACHABLE, RedisHealth
from bot.storage.keys import Keys
from dialogs.i18n import Catalogs
from dialogs.ports import Clock, Outlet

log = logging.getLogger(__name__)

_BACKOFF_MAX = 30.0
_REDIS_BACKOFF_MAX = 1.0
"""While Redis is away the loops try again at least this often, so they are back at work within a
second of its return."""


def consumer_name() -> str:
    """Unique per process: a restarted worker is a new consumer, and takes over the old one's work."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class AlertWorker:
    """The checks (unless ``checks`` is false) and one sender per outlet (chat platform).
    ``Runtime.alert_worker`` builds one from the runtime's parts."""

    def __init__(
        self,
        redis: Redis,
        *,
        keys: Keys,
        codec: StateCodec,
        insurance: PlatformRegistry,
        catalogs: Catalogs,
        clock: Clock,
        alerts: AlertSettings,
        tz: ZoneInfo,
        default_locale: str,
        outlets: Mapping[str, Outlet],
        checks: bool = True,
        health: RedisHealth | None = None,
        figures: Figures | None = None,
        topology: Topology | None = None,
    ) -> None:
        consumer = consumer_name()
        self.health = health or RedisHealth("?")
        self.poll_seconds = alerts.poll_seconds
        self.checker: Checker | None = None
        if checks:
            self.checker = Checker(
                redis,
                keys=keys,
                codec=codec,
                insurance=insurance,
                outbox=Outbox(keys, codec),
                rounds=Rounds.from_settings(alerts, tz),
                clock=clock,
                consumer=consumer,
                batch_size=alerts.batch_size,
                platform_concurrency=alerts.platform_concurrency,
                reclaim_after_seconds=alerts.reclaim_after_seconds,
                topology=topology,
            )
        self.senders = [
            Sender(
                redis,
                keys=keys,
                codec=codec,
                platform=platform,
                outlet=outlet,
                catalogs=catalogs,
                clock=clock,
                tz=tz,
                default_locale=default_locale,
                consumer=consumer,
                quiet=QuietHours.from_settings(alerts, tz),
                insurance=insurance,
                rate=alerts.send_rate,
                reclaim_after_seconds=alerts.reclaim_after_seconds,
                figures=figures,
                topology=topology,
            )
            for platform, outlet in outlets.items()
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; the piece of work in hand is finished first."""
        loops: list[Awaitable[None]] = []
        checker = self.checker
        if checker is not None:
            loops.append(self._loop("schedule", stop, checker.move_due, pause=self.poll_seconds))
            loops.append(self._loop("checks", stop, checker.work))
        for sender in self.senders:
            loops.append(self._loop(f"sender {sender.platform}", stop, sender.work))
        await asyncio.gather(*loops)

    async def _loop(
        self, name: str, stop: asyncio.Event, step: Callable[[], Awaitable[object]], *, pause: float = 0.0
    ) -> None:
        failures = 0
        while not stop.is_set():
            try:
                await step()
                failures = 0
                wait = pause
                self.health.answered()
            except UNREACHABLE as e:  # said once, by the health watch, and once when it is back
                self.health.failed(e)
                failures += 1
                wait = min(_REDIS_BACKOFF_MAX, 0.1 * 2 ** min(failures, 6))
            except (RedisError, OSError) as e:
                failures += 1
                wait = min(_BACKOFF_MAX, 0.5 * 2 ** min(failures, 6))
                log.warning("%s: %s; again in %.1f s", name, type(e).__name__, wait)
            except Exception:
                failures += 1
                wait = min(_BACKOFF_MAX, 0.5 * 2 ** min(failures, 6))
                log.exception("%s failed; again in %.1f s", name, wait)
            if wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)

"""The one place that builds Yibao from its settings. The CLI and the tests both come through here."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from zoneinfo import ZoneInfo

import httpx
from pydantic import BaseModel
from redis.asyncio import Redis

from bot.alerts.worker import AlertWorker
from bot.charts.drawing import MatplotlibCharts
from bot.clock import SystemClock
from bot.config import PlatformSettings, Settings, read_secret
from bot.crypto.pii import PiiCipher, load_or_create_key, parse_key
from bot.identity.otp import OtpLimits, OtpService
from bot.identity.sms import ConsoleSmsGateway, FileSmsGateway, ShowSms, SmsGateway
from bot.insurers.registry import Platform, PlatformRegistry
from bot.storage.codec import StateCodec
from bot.storage.connect import Topology, connect
from bot.storage.embedded_redis import EmbeddedRedis
from bot.storage.health import RedisHealth, wait_for_redis
from bot.storage.keys import Keys
from bot.storage.store import RedisStore
from dialogs.i18n import Catalogs
from dialogs.machine import Conversation, DialogSettings
from dialogs.models import PlatformName
from dialogs.ports import Clock, Outlet, PlatformInfo
from insurance.client import ClientPolicy, HttpPlatformClient
from insurance.sandbox import SandboxPlatform
from platforms.telegram.core import TelegramCore

log = logging.getLogger(__name__)

T = TypeVar("T")


class StartupError(Exception):
    """Yibao cannot start with these settings; the message says what to change."""


class StoppedWhileStarting(Exception):
    """A stop (SIGTERM) came while the service still waited for Redis: nothing was started."""


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    keys: Keys
    store: RedisStore
    otp: OtpService
    conversation: Conversation
    insurance: PlatformRegistry
    embedded: EmbeddedRedis | None = None
    health: RedisHealth = field(default_factory=lambda: RedisHealth("?"))
    """This process's view of Redis, shared by the store and the alert loops (one log line when
    it goes, one when it is back)."""
    clients: dict[str, HttpPlatformClient] = field(default_factory=dict)
    sandboxes: dict[str, SandboxPlatform] = field(default_factory=dict)
    """The in-process sandbox platforms by name, for the demo's and the tests' admin moves."""
    topology: Topology = field(default_factory=Topology)
    """Single, Sentinel or Cluster, and what protected writes wait for (``bot.storage.connect``)."""
    _closed: bool = field(default=False, repr=False)

    def telegram_core(self) -> TelegramCore:
        """Yibao's Telegram platform over this runtime, for an engine of ``yibao run`` or a host's bot
        to drive; also the ``Outlet`` its alerts go through."""
        return TelegramCore(
            self.conversation.handle,
            catalogs=self.conversation.catalogs,
            on_unreachable=self.store.mark_unreachable,
            default_locale=self.settings.general.default_locale,
            concurrency=self.settings.telegram.concurrent_updates,
        )

    def alert_worker(self, outlets: Mapping[str, Outlet], *, checks: bool = True) -> AlertWorker:
        """The alert checks (unless ``checks`` is false) and a sender for each chat platform in
        ``outlets`` (its name -> what delivers to it), over this runtime's Redis and platforms."""
        return AlertWorker(
            self.redis,
            keys=self.keys,
            codec=self.store.codec,
            insurance=self.insurance,
            catalogs=self.conversation.catalogs,
            clock=self.conversation.clock,
            alerts=self.settings.alerts,
            tz=ZoneInfo(self.settings.general.timezone),
            default_locale=self.settings.general.default_locale,
            outlets=outlets,
            checks=checks,
            health=self.health,
            topology=self.topology,
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for client in self.clients.values():
            await client.aclose()
        await self.redis.aclose()
        await self.topology.aclose()
        if self.embedded is not None:
            self.embedded.stop()


def pii_key(settings: Settings) -> bytes:
    """The operator's key, or (demo only: no ``redis.url``) one generated and kept locally."""
    secret = read_secret(settings.security.pii_key, settings.security.pii_key_file)
    if secret is not None:
        try:
            return parse_key(secret.get_secret_value())
        except ValueError as e:
            raise StartupError(f"security.pii_key: {e}") from None
    if settings.redis.external:
        raise StartupError(
            "security.pii_key is required when redis.url is set (or redis.sentinels): every instance must share one key "
            "(generate one with: python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')"
        )
    path = settings.general.data_dir / "pii.key"
    key, created = load_or_create_key(path)
    if created:
        log.warning("generated a demo PII key in %s; configure security.pii_key for real use", path)
    return key


def open_redis(settings: Settings) -> tuple[Redis, EmbeddedRedis | None, Topology]:
    """The client, the embedded server if one was started, and the topology (where Redis is, for
    log lines, and what protected writes wait for)."""
    if settings.redis.external:
        client, topology = connect(settings.redis)
        return client, None, topology
    # Started on the calling (main) thread so the child is tied to this process's life.
    embedded = EmbeddedRedis(settings.general.data_dir / "redis")
    embedded.start()
    log.info("embedded redis-server %s started (pid %s)", embedded.binary, embedded.pid)
    client, topology = connect(settings.redis, url=embedded.url)
    return client, embedded, topology


def sms_gateway(settings: Settings, clock: Clock, show_sms: ShowSms | None) -> SmsGateway:
    if settings.sms.gateway == "file":
        assert settings.sms.file_path is not None  # the settings model requires it
        return FileSmsGateway(settings.sms.file_path, clock)
    if show_sms is None:
        raise StartupError('sms.gateway "console" shows codes in `yibao chat` only; configure "file" here')
    return ConsoleSmsGateway(show_sms)


def from_settings(cls: type[T], section: BaseModel) -> T:
    """A dataclass of tuning values filled from the settings section keys of the same names (the
    others keep the dataclass's defaults), so a key added to both is never forgotten here."""
    names = {f.name for f in dataclasses.fields(cls)} & set(type(section).model_fields)  # type: ignore[arg-type]
    return cls(**{name: getattr(section, name) for name in names})


def _policy(p: PlatformSettings) -> ClientPolicy:
    return from_settings(ClientPolicy, p)


def build_platforms(
    settings: Settings, clock: Clock
) -> tuple[PlatformRegistry, dict[str, HttpPlatformClient], dict[str, SandboxPlatform]]:
    """A client per configured platform. A ``sandbox`` platform is served in-process through
    httpx's ASGI transport, over the same client, signing and contract as a remote one."""
    clients: dict[str, HttpPlatformClient] = {}
    sandboxes: dict[str, SandboxPlatform] = {}
    platforms = []
    for p in settings.insurance.platforms:
        if p.kind == "sandbox":
            # The server (FastAPI) only for a sandbox: a deployment of http platforms need not load it.
            from insurance.server import create_app

            sandbox = SandboxPlatform.from_file(p.sandbox_data, clock=clock.now)
            key = secrets.token_bytes(32)
            app = create_app(sandbox, keys={"in-process": key}, clock=clock.now, admin=False)
            client = HttpPlatformClient(
                f"http://{p.name}.sandbox.invalid",
                key_id="in-process",
                secret=key,
                policy=_policy(p),
                transport=httpx.ASGITransport(app=app),
                name=p.name,
                wall_clock=clock.now,
            )
            sandboxes[p.name] = sandbox
        else:
            secret = read_secret(p.secret, p.secret_file)
            assert p.base_url is not None
            assert secret is not None
            client = HttpPlatformClient(
                p.base_url,
                key_id=p.key_id,
                secret=secret.get_secret_value().encode(),
                policy=_policy(p),
                name=p.name,
            )
        clients[p.name] = client
        info = PlatformInfo(name=PlatformName(p.name), label=p.label or p.name, regions=tuple(p.regions))
        platforms.append(Platform(info, client))
    return PlatformRegistry(platforms), clients, sandboxes


async def build_runtime(
    settings: Settings,
    *,
    show_sms: ShowSms | None = None,
    clock: Clock | None = None,
    redis: Redis | None = None,
    stop: asyncio.Event | None = None,
) -> Runtime:
    """Everything Yibao needs, from its settings. ``redis`` replaces the one the settings name
    (a benchmark counting round trips); the caller then owns it, and it is still closed here.

    A Redis at ``redis.url`` that does not answer yet is waited for, up to
    ``redis.connect_wait_seconds`` (then ``RedisUnreachable``); ``stop`` set meanwhile ends the
    wait with ``StoppedWhileStarting``."""
    tz = ZoneInfo(settings.general.timezone)
    clock = clock or SystemClock(tz)
    data_dir = settings.general.data_dir
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data_dir, 0o700)
    cipher = PiiCipher(pii_key(settings))
    gateway = sms_gateway(settings, clock, show_sms)
    embedded = None
    topology = Topology(where="the given client")
    if redis is None:
        redis, embedded, topology = open_redis(settings)
    # The embedded server answered already; one at redis.url may still be starting.
    wait = settings.redis.connect_wait_seconds if embedded is None else 0.0
    try:
        if not await wait_for_redis(redis, where=topology.where, wait_seconds=wait, stop=stop):
            raise StoppedWhileStarting()
    except BaseException:
        await redis.aclose()
        await topology.aclose()
        if embedded is not None:
            embedded.stop()
        raise
    health = RedisHealth(topology.where)
    keys = Keys(settings.redis.prefix, shards=settings.alerts.shards)
    if topology.cluster and keys.shards == 1:
        log.warning(
            "redis.cluster with alerts.shards = 1: the alert schedule, checks and outbox all live on "
            "one master; set alerts.shards (about four per master) before users subscribe"
        )
    catalogs = Catalogs()
    store = RedisStore(
        redis,
        keys=keys,
        codec=StateCodec(cipher),
        session_ttl_seconds=settings.redis.session_idle_seconds,
        balance_ttl_seconds=settings.insurance.balance_cache_seconds,
        lock_seconds=settings.redis.lock_seconds,
        lock_wait_seconds=settings.redis.lock_wait_seconds,
        health=health,
        topology=topology,
    )
    o = settings.otp
    otp = OtpService(
        redis,
        keys=keys,
        cipher=cipher,
        gateway=gateway,
        clock=clock,
        catalogs=catalogs,
        limits=from_settings(OtpLimits, o),
        signature=settings.sms.signature,
    )
    insurance, clients, sandboxes = build_platforms(settings, clock)
    conversation = Conversation(
        store=store,
        insurance=insurance,
        otp=otp,
        clock=clock,
        catalogs=catalogs,
        settings=DialogSettings(
            default_locale=settings.general.default_locale,
            timezone=tz,
            max_threshold=settings.alerts.max_threshold,
            session_idle_minutes=settings.redis.session_idle_seconds // 60,
            code_ttl_minutes=o.code_ttl_seconds // 60,
            balance_cache_seconds=settings.insurance.balance_cache_seconds,
        ),
        charts=MatplotlibCharts(),
    )
    return Runtime(
        settings,
        redis,
        keys,
        store,
        otp,
        conversation,
        insurance,
        embedded=embedded,
        health=health,
        clients=clients,
        sandboxes=sandboxes,
        topology=topology,
    )

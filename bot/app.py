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
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from bot.alerts.followups import BackgroundFollowups
from bot.alerts.worker import AlertWorker
from bot.charts.drawing import MatplotlibCharts
from bot.charts.qr import SegnoQr
from bot.clock import SystemClock
from bot.config import PlatformSettings, Settings, read_secret
from bot.crypto.pii import PiiCipher, load_or_create_key, parse_key
from bot.identity.otp import OtpLimits, OtpService
from bot.identity.sms import ConsoleSmsGateway, FileSmsGateway, ShowSms, SmsGateway
from bot.insurers.registry import Platform, PlatformRegistry
from bot.logs import pseudonymize_with
from bot.storage.codec import StateCodec
from bot.storage.embedded_redis import EmbeddedRedis
from bot.storage.health import RedisHealth, redacted_url, wait_for_redis
from bot.storage.keys import Keys
from bot.storage.store import RedisStore
from bot.storage.wechat import RedisTokenStore, RedisWechatState
from bot.storage.wecom import RedisWecomState
from dialogs.i18n import Catalogs
from dialogs.machine import Conversation, DialogSettings
from dialogs.models import Outcome, PlatformName, Session, UserKey, UserState
from dialogs.ports import Clock, Outlet, PlatformInfo
from insurance.client import ClientPolicy, HttpPlatformClient
from insurance.sandbox import SandboxPlatform, SandboxProfile
from platforms.telegram.core import TelegramCore
from platforms.tencent.callback import CallbackGuard
from platforms.tencent.crypto import MessageCrypto
from platforms.wechat.api import WechatApi
from platforms.wechat.core import AlertTemplate, WechatCore
from platforms.wecom.api import WecomApi
from platforms.wecom.core import WecomCore

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
    followups: BackgroundFollowups = field(default_factory=lambda: BackgroundFollowups(limit_seconds=600))
    """The conversation's background work (face checks); its ``outlets`` are filled by the runner."""
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

    def wechat_core(self) -> tuple[WechatCore, CallbackGuard]:
        """Yibao's WeChat Official Account over this runtime (``wechat.app_id`` must be set): the
        platform (also the alerts' ``Outlet``) and the guard its callback opens requests with."""
        wx = self.settings.wechat
        if wx.app_id is None:
            raise StartupError("wechat.app_id is not set")
        secret = read_secret(wx.app_secret, wx.app_secret_file)
        token = read_secret(wx.token, wx.token_file)
        aes_key = read_secret(wx.encoding_aes_key, wx.encoding_aes_key_file)
        assert secret is not None  # the settings model requires it
        assert token is not None
        state = RedisWechatState(self.redis, self.keys, self.store.codec.cipher)
        api = WechatApi(
            app_id=wx.app_id,
            app_secret=secret.get_secret_value(),
            base_url=wx.api_base_url,
            tokens=RedisTokenStore(
                self.redis, self.keys.wechat_token(wx.app_id), self.keys.wechat_token_lock(wx.app_id)
            ),
            stable_token=wx.token_endpoint == "stable_token",  # noqa: S105 - an endpoint name
            send_rate=wx.send_rate,
        )
        template = None
        if wx.alert_template_id is not None:
            fields = {
                "balance": wx.alert_field_balance,
                "threshold": wx.alert_field_threshold,
                "time": wx.alert_field_time,
                "note": wx.alert_field_note,
            }
            template = AlertTemplate(wx.alert_template_id, fields, long_term=wx.alert_template_long_term)
        core = WechatCore(
            self.conversation.handle,
            api=api,
            state=state,
            catalogs=self.conversation.catalogs,
            on_unreachable=self.store.mark_unreachable,
            template=template,
            default_locale=self.settings.general.default_locale,
            reply_within_seconds=wx.reply_within_seconds,
        )
        crypto = None
        if aes_key is not None and aes_key.get_secret_value():
            crypto = MessageCrypto(token.get_secret_value(), aes_key.get_secret_value(), wx.app_id)
        guard = CallbackGuard(token.get_secret_value(), state, crypto=crypto)
        return core, guard

    def wecom_core(self) -> tuple[WecomCore, CallbackGuard]:
        """Yibao as the WeCom app over this runtime (``wecom.corp_id`` must be set): the platform
        (also the alerts' ``Outlet``) and the guard its callback opens requests with."""
        wc = self.settings.wecom
        if wc.corp_id is None or wc.agent_id is None:
            raise StartupError("wecom.corp_id and wecom.agent_id are not set")
        secret = read_secret(wc.secret, wc.secret_file)
        token = read_secret(wc.token, wc.token_file)
        aes_key = read_secret(wc.encoding_aes_key, wc.encoding_aes_key_file)
        assert secret is not None  # the settings model requires them
        assert token is not None
        assert aes_key is not None
        try:
            crypto = MessageCrypto(token.get_secret_value(), aes_key.get_secret_value(), wc.corp_id)
        except ValueError as e:  # a key read from its file
            raise StartupError(f"wecom.encoding_aes_key_file: {e}") from None
        state = RedisWecomState(
            self.redis,
            self.keys,
            self.store.codec.cipher,
            per_minute=wc.member_messages_per_minute,
            per_hour=wc.member_messages_per_hour,
        )
        api = WecomApi(
            corp_id=wc.corp_id,
            agent_id=wc.agent_id,
            secret=secret.get_secret_value(),
            base_url=wc.api_base_url,
            tokens=RedisTokenStore(
                self.redis,
                self.keys.wecom_token(wc.corp_id, wc.agent_id),
                self.keys.wecom_token_lock(wc.corp_id, wc.agent_id),
            ),
            send_rate=wc.send_rate,
        )
        core = WecomCore(
            self.conversation.handle,
            api=api,
            state=state,
            catalogs=self.conversation.catalogs,
            on_gone=self.erase_user,
            default_locale=self.settings.general.default_locale,
            reply_within_seconds=wc.reply_within_seconds,
            prefill_name=wc.prefill_name,
        )
        return core, CallbackGuard(token.get_secret_value(), state, crypto=crypto, namespace="wecom")

    async def erase_user(self, user: UserKey) -> None:
        """Everything kept about ``user`` erased, as ``/unbind`` does (the chat platform says they
        are gone: a member who left the company)."""

        async def erase(_state: UserState) -> Outcome:
            return Outcome(replies=(), session=Session(), erase=True)

        await self.store.update(user, erase)
        log.warning("erased everything kept about %s: the chat platform says they are gone", user)

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
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.followups.aclose()
        for client in self.clients.values():
            await client.aclose()
        await self.redis.aclose()
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
    if settings.redis.url is not None:
        raise StartupError(
            "security.pii_key is required when redis.url is set: every instance must share one key "
            "(generate one with: python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')"
        )
    path = settings.general.data_dir / "pii.key"
    key, created = load_or_create_key(path)
    if created:
        log.warning("generated a demo PII key in %s; configure security.pii_key for real use", path)
    return key


def _client(url: str) -> Redis:
    """A client that retries a failed command only briefly (3 times, at most 0.25 s apart): the
    callers retry on their own terms (the start-up wait, the alert loops, the sender's record), a
    message gets its apology at once, and a record waiting for Redis is in within moments of its
    return (redis-py's default, 10 retries up to 1 s apart, would hold it a few seconds longer)."""
    return Redis.from_url(url, retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.25), 3))


def open_redis(settings: Settings) -> tuple[Redis, EmbeddedRedis | None, str]:
    """The client, the embedded server if one was started, and where Redis is (for log lines)."""
    if settings.redis.url is not None:
        url = settings.redis.url.get_secret_value()
        return _client(url), None, redacted_url(url)
    # Started on the calling (main) thread so the child is tied to this process's life.
    embedded = EmbeddedRedis(settings.general.data_dir / "redis")
    embedded.start()
    log.info("embedded redis-server %s started (pid %s)", embedded.binary, embedded.pid)
    return _client(embedded.url), embedded, embedded.url


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

            sandbox = SandboxPlatform.from_file(
                p.sandbox_data, clock=clock.now, profile=SandboxProfile(p.sandbox_profile)
            )
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
    key = pii_key(settings)
    cipher = PiiCipher(key)
    pseudonymize_with(key)
    gateway = sms_gateway(settings, clock, show_sms)
    embedded = None
    where = "the given client"
    if redis is None:
        redis, embedded, where = open_redis(settings)
    # The embedded server answered already; one at redis.url may still be starting.
    wait = settings.redis.connect_wait_seconds if embedded is None else 0.0
    try:
        if not await wait_for_redis(redis, where=where, wait_seconds=wait, stop=stop):
            raise StoppedWhileStarting()
    except BaseException:
        await redis.aclose()
        if embedded is not None:
            embedded.stop()
        raise
    health = RedisHealth(where)
    keys = Keys(settings.redis.prefix)
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
    wait = settings.insurance.verification_wait_seconds
    followups = BackgroundFollowups(limit_seconds=wait + 60)
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
            verification_wait_seconds=wait,
        ),
        charts=MatplotlibCharts(),
        qr=SegnoQr(),
        followups=followups,
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
        followups=followups,
    )

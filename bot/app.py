"""The one place that builds Yibao from its settings. The CLI and the tests both come through here."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from zoneinfo import ZoneInfo

import httpx
from pydantic import BaseModel
from redis.asyncio import Redis

from bot import logs, metrics
from bot.alerts.followups import BackgroundFollowups
from bot.alerts.outbox import chat_platform
from bot.alerts.worker import AlertWorker
from bot.audit.events import EventRecorder
from bot.audit.figures import Figures, local_today
from bot.audit.trail import AuditTrail, user_hash
from bot.charts.drawing import MatplotlibCharts
from bot.charts.qr import SegnoQr
from bot.clock import SystemClock
from bot.config import PlatformSettings, Settings, read_secret
from bot.crypto.pii import PiiCipher, load_or_create_key, parse_key
from bot.http.server import HttpServer, Readiness
from bot.identity.otp import OtpLimits, OtpService
from bot.identity.sms import ConsoleSmsGateway, FileSmsGateway, ShowSms, SmsGateway
from bot.insurers.registry import CallSeen, Platform, PlatformRegistry
from bot.logs import pseudonymize_with
from bot.privacy.subject import SubjectData
from bot.storage.codec import StateCodec
from bot.storage.connect import Topology, connect
from bot.storage.embedded_redis import EmbeddedRedis
from bot.storage.health import RedisHealth, wait_for_redis
from bot.storage.keys import Keys
from bot.storage.metered import meter
from bot.storage.store import RedisStore
from bot.storage.web import RedisWebState
from bot.storage.wechat import RedisTokenStore, RedisWechatState
from bot.storage.wecom import RedisWecomState
from dialogs.i18n import Catalogs
from dialogs.intents import normalize, parse_command
from dialogs.machine import KNOWN_COMMANDS, Conversation, DialogSettings
from dialogs.models import Inbound, Outcome, PlatformName, Reply, Session, UserKey, UserState
from dialogs.ports import Clock, Outlet, PlatformInfo
from insurance.client import ClientPolicy, HttpPlatformClient
from insurance.sandbox import SandboxPlatform, SandboxProfile
from platforms.telegram.core import TelegramCore
from platforms.tencent.callback import CallbackGuard
from platforms.tencent.crypto import MessageCrypto
from platforms.web.charts import SvgCharts
from platforms.web.links import PageLinks
from platforms.web.oauth import OAuthIdentity
from platforms.web.pages import PageSettings, WebPages, environment
from platforms.wechat.api import WechatApi
from platforms.wechat.core import AlertTemplate, WechatCore
from platforms.wechat.oauth import WechatOAuth
from platforms.wecom.api import WecomApi
from platforms.wecom.core import WecomCore
from platforms.wecom.oauth import WecomOAuth

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
    figures: Figures | None = None
    audit: AuditTrail | None = None
    subject: SubjectData | None = None
    topology: Topology = field(default_factory=Topology)
    """Single, Sentinel or Cluster, and what protected writes wait for (``bot.storage.connect``)."""
    followups: BackgroundFollowups = field(default_factory=lambda: BackgroundFollowups(limit_seconds=600))
    """The conversation's background work (face checks); its ``outlets`` are filled by the runner."""
    web_state: RedisWebState | None = None
    web_links: PageLinks | None = None
    """With ``[web] enabled``: what ``/web`` makes its links with; ``base_url`` is the address users
    reach the pages at (``yibao chat`` sets its loopback one once it listens)."""
    _closed: bool = field(default=False, repr=False)
    _outbox_seen: set[str] = field(default_factory=lambda: {"tg"}, repr=False)

    async def handle(self, inbound: Inbound) -> tuple[Reply, ...]:
        """The conversation's answer to one message, counted and timed (``yibao_updates_total``,
        ``yibao_answer_seconds``, the daily latency figures) by the user key's platform. This is
        what every chat platform is given to call, so a new one reports by its user keys alone."""
        return await self._handle_on(self.conversation, inbound)

    async def _handle_on(self, conversation: Conversation, inbound: Inbound) -> tuple[Reply, ...]:
        platform = metrics.platform_of(inbound.user)
        start = time.perf_counter()
        replies = await conversation.handle(inbound)
        seconds = time.perf_counter() - start
        cmd = parse_command(normalize(inbound.text))
        kind = "text" if cmd is None else cmd.name if cmd.name in KNOWN_COMMANDS else "other"
        metrics.UPDATES.labels(platform, kind).inc()
        metrics.ANSWER_SECONDS.labels(platform).observe(seconds)
        if self.figures is not None:
            self.figures.answered(platform, seconds)
        return replies

    def observe(self, server: HttpServer) -> None:
        """Register this runtime's readiness checks (``redis``, ``insurance``) and scrape-time gauges
        (breakers, outbox depth and age) on the process's HTTP server. A chat platform registers
        its own check (``telegram``: its token was accepted) beside them."""
        server.add_check("redis", self._redis_ready)
        server.add_check("insurance", self._insurance_ready)
        server.before_scrape.append(self.refresh_gauges)

    async def _redis_ready(self) -> Readiness:
        try:
            await self.redis.ping()
        except Exception as e:
            return Readiness(False, f"no answer ({type(e).__name__})")
        return Readiness(True)

    async def _insurance_ready(self) -> Readiness:
        states = self.insurance.breaker_states()
        if not states:  # clients without a breaker (a test's): nothing says they are down
            return Readiness(True)
        closed = sorted(name for name, state in states.items() if state == "closed")
        if closed:
            return Readiness(True, "closed: " + ", ".join(closed))
        return Readiness(
            False, "every breaker is open: " + ", ".join(f"{n} {s}" for n, s in sorted(states.items()))
        )

    async def refresh_gauges(self) -> None:
        """Gauges read when scraped: the breakers, and each chat platform's outbox depth and age."""
        self.insurance.breaker_states()
        platforms = metrics.CHAT_PLATFORMS
        shards = range(self.keys.shards)
        pipe = self.redis.pipeline(transaction=False)  # split by node on a cluster
        for p in platforms:
            for shard in shards:
                pipe.xlen(self.keys.outbox(p, shard))
                pipe.zcard(self.keys.outbox_later(p, shard))
                pipe.xrange(self.keys.outbox(p, shard), count=1)
        answers = await pipe.execute()
        now_ms = time.time() * 1000
        per = 3 * len(shards)
        for i, p in enumerate(platforms):
            part = answers[per * i : per * (i + 1)]
            depth = sum(int(part[j]) for j in range(0, per, 3))
            later = sum(int(part[j]) for j in range(1, per, 3))
            firsts = [int(part[j][0][0].split(b"-")[0]) for j in range(2, per, 3) if part[j]]
            if not depth and not later and p not in self._outbox_seen:
                continue  # a platform never used here: no series of zeros for it
            self._outbox_seen.add(p)
            metrics.OUTBOX_DEPTH.labels(p).set(depth + later)
            age = max(0.0, (now_ms - min(firsts)) / 1000) if firsts else 0.0
            metrics.OUTBOX_OLDEST_AGE.labels(p).set(age)

    def web_pages(self, identities: Mapping[str, OAuthIdentity] | None = None) -> WebPages:
        """Yibao's own pages over this runtime (``[web] enabled``): the same conversation, store and
        limits as the chats (its ``/chart`` drawn as SVG for the page), the user's chat told of what
        a page did through the outlets the runner registered (``followups.outlets``). ``identities``:
        who opened ``/web/wx`` and ``/web/wecom`` (``wx``, ``wecom``: the WeChat and WeCom OAuth)."""
        if self.web_state is None:
            raise StartupError("web.enabled is false")
        conversation = copy.copy(self.conversation)
        conversation.charts = SvgCharts(environment())

        async def handle(inbound: Inbound) -> tuple[Reply, ...]:
            return await self._handle_on(conversation, inbound)

        async def notify(user: UserKey, replies: tuple[Reply, ...]) -> None:
            outlet = self.followups.outlets.get(chat_platform(user))
            if outlet is None:
                log.info("a page changed something for %s; no outlet for its chat platform", user)
                return
            await outlet.deliver(user, replies)

        w = self.settings.web
        token = read_secret(self.settings.telegram.token, self.settings.telegram.token_file)
        return WebPages(
            state=self.web_state,
            handle=handle,
            peek=self.store.peek,
            notify=notify,
            catalogs=self.conversation.catalogs,
            settings=PageSettings(
                public_url=w.public_url,
                max_age_seconds=w.max_age_seconds,
                session_seconds=w.session_seconds,
                default_locale=self.settings.general.default_locale,
                verification_files=dict(w.verification_files),
            ),
            telegram_token=token.get_secret_value() if token is not None else None,
            identities=identities,
        )

    def telegram_core(self) -> TelegramCore:
        """Yibao's Telegram platform over this runtime, for an engine of ``yibao run`` or a host's bot
        to drive; also the ``Outlet`` its alerts go through."""
        return TelegramCore(
            self.handle,
            catalogs=self.conversation.catalogs,
            on_unreachable=self.store.mark_unreachable,
            default_locale=self.settings.general.default_locale,
            concurrency=self.settings.telegram.concurrent_updates,
            metrics=metrics.ChatMeter(),
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
        api.metrics = metrics.ChatMeter()
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
            self.handle,
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

    def wechat_oauth(self, core: WechatCore) -> WechatOAuth:
        """Who opened a page from the official account's menu (``platforms.web.oauth.OAuthIdentity``:
        ``snsapi_base``, the code traded for ``wx:<openid>``), over ``core``'s API client."""
        return WechatOAuth(core.api, oauth_base_url=self.settings.wechat.oauth_base_url)

    def wecom_oauth(self, core: WecomCore) -> WecomOAuth:
        """Who opened a page from the WeCom app's menu (``platforms.web.oauth.OAuthIdentity``: the
        code traded for ``wecom:<corp id>:<userid>``, members only), over ``core``'s API client."""
        return WecomOAuth(core.api, oauth_base_url=self.settings.wecom.oauth_base_url)

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
        api.metrics = metrics.ChatMeter()
        core = WecomCore(
            self.handle,
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
        """Everything kept about ``user`` erased, as ``admin erase`` does, and audited (``erased``,
        from the chat platform): it says they are gone (a WeCom member who left the company, or is
        outside the app's visible range)."""
        if self.subject is not None:
            await self.subject.erase(self.store, user)
        else:

            async def erase(_state: UserState) -> Outcome:
                return Outcome(replies=(), session=Session(), erase=True)

            await self.store.update(user, erase)
        if self.audit is not None:
            await self.audit.record("erased", user, source=metrics.platform_of(user), reason="left_platform")
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
            figures=self.figures,
            topology=self.topology,
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.figures is not None:
            await self.figures.aclose()
        await self.followups.aclose()
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


def _metered(client: Redis) -> Redis:
    """Round trips and errors counted (``bot.storage.metered``) where the client has one connection
    pool (single, Sentinel); a cluster's per-node pools are not counted."""
    return meter(client) if hasattr(client, "connection_pool") else client


def open_redis(settings: Settings) -> tuple[Redis, EmbeddedRedis | None, Topology]:
    """The client, the embedded server if one was started, and the topology (where Redis is, for
    log lines, and what protected writes wait for)."""
    if settings.redis.external:
        client, topology = connect(settings.redis)
        return _metered(client), None, topology
    # Started on the calling (main) thread so the child is tied to this process's life.
    embedded = EmbeddedRedis(settings.general.data_dir / "redis")
    embedded.start()
    log.info("embedded redis-server %s started (pid %s)", embedded.binary, embedded.pid)
    client, topology = connect(settings.redis, url=embedded.url)
    return _metered(client), embedded, topology


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
    settings: Settings, clock: Clock, on_call: CallSeen | None = None
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
    return PlatformRegistry(platforms, on_call=on_call), clients, sandboxes


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
    logs.set_user_hasher(lambda user: user_hash(cipher, user))
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
    figures = Figures(redis, keys=keys, today=local_today(tz))

    def call_seen(insurer: str, call: str, outcome: str, seconds: float) -> None:
        figures.add("insurer", insurer, call, outcome)

    insurance, clients, sandboxes = build_platforms(settings, clock, call_seen)
    audit = AuditTrail(redis, keys=keys, cipher=cipher, keep=settings.audit.keep, file=settings.audit.file)
    subject = SubjectData(redis, keys=keys, codec=store.codec, cipher=cipher, tz=tz)
    wait = settings.insurance.verification_wait_seconds
    followups = BackgroundFollowups(limit_seconds=wait + 60)
    web_state = web_links = None
    if settings.web.enabled:
        web_state = RedisWebState(redis, keys, cipher)
        h = settings.http
        web_links = PageLinks(web_state, settings.web.public_url or f"http://{h.listen_host}:{h.listen_port}")
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
        events=EventRecorder(figures=figures, audit=audit),
        inventory=subject,
        qr=SegnoQr(),
        followups=followups,
        web=web_links,
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
        figures=figures,
        audit=audit,
        subject=subject,
        topology=topology,
        followups=followups,
        web_state=web_state,
        web_links=web_links,
    )

"""Yibao's configuration: one pydantic-settings model, read from TOML and the environment.

Where the file comes from: ``--config PATH``, else ``$YIBAO_CONFIG``, else ``./config.toml`` if it
exists, else the built-in defaults (which run the demo). Any key can be overridden from the
environment as ``YIBAO_<SECTION>__<KEY>`` (``YIBAO_OTP__MAX_ATTEMPTS=3``). Secrets are ``SecretStr``
and may instead be read from a file (``<key>_file``); they are never printed.

Nothing here runs at import time: ``load_settings`` is called by the CLI.
"""

from __future__ import annotations

import os
import re
import tomllib
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from bot.crypto.pii import parse_key
from insurance.wire import MAX_BATCH

ENV_CONFIG = "YIBAO_CONFIG"
DEFAULT_CONFIG = Path("config.toml")

_toml_path: ContextVar[Path | None] = ContextVar("yibao_toml_path", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneralSettings(_Section):
    data_dir: Path = Path(".yibao")
    """Local folder for the embedded Redis, the generated demo key and the chat log."""
    default_locale: Literal["zh", "en"] = "zh"
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}, e.g. 'Asia/Shanghai'") from None
        return value


class RedisSettings(_Section):
    url: SecretStr | None = None
    """``redis://``, ``rediss://`` or ``unix://`` URL (may hold a password). Empty: start an
    embedded redis-server with its data in ``general.data_dir``."""
    prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = "yibao"
    session_idle_seconds: Annotated[int, Field(ge=60, le=86_400)] = 1800
    lock_seconds: Annotated[float, Field(gt=0, le=300)] = 30.0
    """How long one user's update may hold that user's guard before another may take it."""
    lock_wait_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    connect_wait_seconds: Annotated[float, Field(ge=0, le=3600)] = 60.0
    """How long a service started with ``url`` waits for Redis to answer (retrying with backoff,
    one log line per attempt) before it gives up with exit code 2."""

    cluster: bool = False
    """``url`` names one node of a Redis Cluster (any; the client learns the others from it)."""
    sentinels: list[str] = []
    """``["host:port", ...]`` of Redis Sentinels: the client asks them for the primary of
    ``sentinel_master`` and follows it through a failover. Exclusive with ``url``."""
    sentinel_master: str = ""
    """The name the sentinels monitor the primary under (``sentinel monitor <name> ...``)."""
    password: SecretStr | None = None
    """The data nodes' password with ``sentinels`` (with ``url`` it goes in the URL)."""
    username: str | None = None
    """The data nodes' ACL user with ``sentinels``."""
    sentinel_password: SecretStr | None = None
    """The sentinels' own password (``requirepass`` in their configuration), if they have one."""
    wait_replicas: Annotated[int | None, Field(ge=0, le=16)] = None
    """Writes Yibao must not lose (a completed bind, an alert recorded as sent) wait until this many
    replicas have them (``WAIT``). Empty: 1 with ``sentinels`` or ``cluster``, 0 (no wait) otherwise."""
    wait_timeout_ms: Annotated[int, Field(ge=1, le=60_000)] = 500
    """The longest such a write waits for its replicas; past it, it stands on the primary alone (logged)."""

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not re.match(r"^(redis|rediss|unix)://", value.get_secret_value()):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("sentinels")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if not re.fullmatch(r"[^\s:]+:\d{1,5}", address):
                raise ValueError(f'a sentinel is "host:port", not {address!r}')
        return value

    @model_validator(mode="after")
    def _one_topology(self) -> RedisSettings:
        if self.sentinels and self.url is not None:
            raise ValueError("set either url (a single Redis or a cluster node) or sentinels, not both")
        if self.sentinels and not self.sentinel_master:
            raise ValueError("sentinel_master is required with sentinels")
        if self.cluster and self.url is None:
            raise ValueError("cluster = true needs url: any node of the cluster")
        return self

    @property
    def external(self) -> bool:
        """A Redis the operator runs (url or sentinels), not the embedded one."""
        return self.url is not None or bool(self.sentinels)

    @property
    def replicas_to_wait(self) -> int:
        if self.wait_replicas is not None:
            return self.wait_replicas
        return 1 if self.sentinels or self.cluster else 0


class SecuritySettings(_Section):
    pii_key: SecretStr | None = None
    """Base64 of 32 random bytes: encrypts ID and phone numbers at rest and keys their hashes.
    Empty: the demo generates one in ``general.data_dir/pii.key``."""
    pii_key_file: Path | None = None

    @field_validator("pii_key")
    @classmethod
    def _key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_key(value.get_secret_value())  # raises ValueError saying what is wrong, not the key
        return value


class OtpSettings(_Section):
    code_ttl_seconds: Annotated[int, Field(ge=60, le=600)] = 300
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 5
    resend_interval_seconds: Annotated[int, Field(ge=0, le=3600)] = 60
    max_per_hour_per_user: Annotated[int, Field(ge=1, le=100)] = 5
    max_per_hour_per_phone: Annotated[int, Field(ge=1, le=100)] = 5
    lockout_after_failures: Annotated[int, Field(ge=1, le=100)] = 3
    """Failed bind attempts (a code voided by wrong tries, or a name/ID the platform rejects) within
    ``failure_window_seconds`` that lock the user out of binding."""
    failure_window_seconds: Annotated[int, Field(ge=60, le=86_400)] = 3600
    lockout_seconds: Annotated[int, Field(ge=60, le=86_400)] = 900
    max_failures_per_id: Annotated[int, Field(ge=1, le=100)] = 5
    """Failed lookups of one ID number (a name or ID number the platform rejects), by any chat
    accounts together, within ``failure_window_seconds`` that pause binding with that ID number
    until the window lets the oldest of them go."""


class SmsSettings(_Section):
    gateway: Literal["console", "file"] = "console"
    file_path: Path | None = None
    """For ``gateway = "file"``: one JSON line per SMS is appended here."""
    signature: Annotated[str, Field(min_length=1, max_length=16)] = "医保助手"

    @model_validator(mode="after")
    def _file_needs_path(self) -> SmsSettings:
        if self.gateway == "file" and self.file_path is None:
            raise ValueError('gateway "file" needs sms.file_path')
        return self


class PlatformSettings(_Section):
    """One insurance platform. ``sandbox`` runs the sandbox in-process (no server to start) over the
    same HTTP client code as ``http``, which speaks the contract in ``insurance/openapi.json``."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
    label: Annotated[str, Field(max_length=40)] = ""
    """What users see on the button when they choose a platform; empty: the name."""
    kind: Literal["sandbox", "http"] = "sandbox"
    regions: list[Annotated[str, Field(pattern=r"^\d{2,6}$")]] = []
    """Leading digits of the area codes it serves ("11" Beijing, "3101", "440305"): proposed first
    to users whose ID number starts with them."""
    base_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] | None = None
    key_id: Annotated[str, Field(min_length=1, max_length=64)] = "yibao"
    secret: SecretStr | None = None
    """The HMAC secret shared with the platform (``http``)."""
    secret_file: Path | None = None
    sandbox_data: Path | None = None
    """``sandbox``: a data file; empty means the one shipped with Yibao."""
    sandbox_profile: Literal["national", "local_card", "face_check", "basic"] = "national"
    """``sandbox``: which platform it plays: ``national`` (everything, a certified e-voucher issuer),
    ``local_card`` (the bind needs the local card number), ``face_check`` (the bind goes through
    the platform's face check), ``basic`` (contract 1.0: the balance only)."""
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    deadline_seconds: Annotated[float, Field(gt=0, le=120)] = 8.0
    """The longest a user waits for this platform, retries included."""
    retries: Annotated[int, Field(ge=0, le=5)] = 2
    max_concurrency: Annotated[int, Field(ge=1, le=1000)] = 20
    breaker_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    breaker_reset_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _http_needs_url_and_secret(self) -> PlatformSettings:
        if self.kind == "http":
            if self.base_url is None:
                raise ValueError(f'platform "{self.name}": kind "http" needs base_url')
            if self.secret is None and self.secret_file is None:
                raise ValueError(f'platform "{self.name}": kind "http" needs secret or secret_file')
        return self


def _default_platforms() -> list[PlatformSettings]:
    return [PlatformSettings(name="sandbox", label="Sandbox 沙箱")]


class InsuranceSettings(_Section):
    platforms: Annotated[list[PlatformSettings], Field(min_length=1)] = Field(
        default_factory=_default_platforms
    )
    balance_cache_seconds: Annotated[int, Field(ge=0, le=3600)] = 60
    """How long a fetched balance answers repeated /balance without asking the platform (0: never)."""
    verification_wait_seconds: Annotated[int, Field(ge=10, le=3600)] = 300
    """How long a bind waits for a platform's face check to pass, polling it with backoff."""

    @field_validator("platforms")
    @classmethod
    def _unique_names(cls, value: list[PlatformSettings]) -> list[PlatformSettings]:
        names = [p.name for p in value]
        if len(set(names)) != len(names):
            raise ValueError("platform names must be unique")
        return value


class AlertSettings(_Section):
    max_threshold: Annotated[Decimal, Field(gt=0, le=10_000_000, decimal_places=2)] = Decimal("50000")
    enabled: bool = True
    """Run the checks and the sender in ``yibao run`` and ``yibao chat`` too (``yibao worker`` always does)."""
    every_seconds: Annotated[int, Field(ge=1, le=31 * 86400)] = 6 * 3600
    """A round of checks starts at every multiple of this (Unix time), unless ``cron`` is set."""
    cron: str | None = None
    """Rounds at the times of this cron expression instead, in ``general.timezone`` ("0 9,18 * * *")."""
    jitter_seconds: Annotated[int, Field(ge=0, le=31 * 86400)] = 1800
    """Each user is checked at their own fixed offset, up to this long after a round starts."""
    quiet_hours: str = "22:00-08:00"
    """No alert is sent in these hours (``general.timezone``); one found then goes when they end. "" for none."""
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] = MAX_BATCH
    """Users checked together (one batch balance call per insurance platform)."""
    platform_concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    """Batch balance calls in flight per insurance platform, per worker."""
    send_rate: Annotated[float, Field(gt=0, le=1000)] = 20.0
    """Alerts per second on each chat platform, across every worker (Telegram's bot-wide budget is
    about 30/s, replies included)."""
    reclaim_after_seconds: Annotated[float, Field(ge=0.5, le=3600)] = 60.0
    """A batch or an alert taken by a worker that stopped (crashed) is taken over after this long."""
    poll_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    """How often a worker looks for users whose check is due."""
    shards: Annotated[int, Field(ge=1, le=256)] = 1
    """The schedule, the checks stream and each outbox stream are split into this many parts, each
    in a hash slot of its own, so that on a Redis Cluster they spread over the masters (every worker
    works on all of them). 1 keeps them whole, as on a single Redis. Fixed once users subscribe."""

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from cronsim import CronSim, CronSimError

        try:
            CronSim(value, datetime.now(UTC))
        except CronSimError as e:
            raise ValueError(f"not a cron expression ({e})") from None
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str) -> str:
        parse_quiet_hours(value)
        return value

    @model_validator(mode="after")
    def _jitter_fits(self) -> AlertSettings:
        if self.cron is None and self.jitter_seconds >= self.every_seconds:
            raise ValueError(
                "jitter_seconds must be less than every_seconds (a round must end before the next)"
            )
        return self


def parse_quiet_hours(value: str) -> tuple[time, time] | None:
    """``"22:00-08:00"`` -> (22:00, 08:00); ``""`` -> None. Raises ``ValueError``."""
    if not value.strip():
        return None
    start, sep, end = value.partition("-")
    try:
        if not sep:
            raise ValueError
        bounds = (time.fromisoformat(start.strip()), time.fromisoformat(end.strip()))
    except ValueError:
        raise ValueError(f'quiet hours look like "22:00-08:00", not {value!r}') from None
    if bounds[0] == bounds[1]:
        raise ValueError("quiet hours must not start and end at the same time")
    return bounds


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: Path | None = None
    """Empty: stderr, except ``yibao chat``, which logs to ``general.data_dir/yibao.log``."""
    format: Literal["text", "json"] = "text"
    """``json``: one JSON object a line (time, level, logger, event, platform, user), the user as a
    keyed hash; never a name, ID number, phone, code, chat id or message text."""


class AuditSettings(_Section):
    """The audit trail: binds, unbinds, lockouts, erasures and exports, who as a keyed hash."""

    keep: Annotated[int, Field(ge=1000, le=100_000_000)] = 100_000
    """Records kept in the Redis stream (about; the oldest go first)."""
    file: Path | None = None
    """Also append every record here, one JSON line each (0600), kept as long as the operator keeps it."""


class ConsoleSettings(_Section):
    user: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "local"
    """The console user's id: the chat runs as ``console:<user>``."""


class HttpSettings(_Section):
    """The process's one HTTP server: every platform that takes requests from outside (the Telegram
    webhook today) is served on it, with ``GET /healthz``, ``/readyz`` and ``/metrics`` beside them.
    It runs when a platform needs it (``telegram.mode = "webhook"``), or always with ``always``."""

    listen_host: str = "127.0.0.1"
    listen_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    always: bool = False
    """Serve ``/healthz``, ``/readyz`` and ``/metrics`` even when no platform needs inbound HTTP:
    ``yibao run`` polling, ``yibao worker``. (With a webhook they are served anyway.)"""
    trusted_proxies: list[str] = ["127.0.0.1"]
    """The addresses or networks (``10.0.0.0/8``) of your reverse proxies: a request from one of them
    is taken to come from the client its ``X-Forwarded-For`` names (the pages' per-address limits
    count users, not the proxy). A request from anywhere else is taken as from its own address."""

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value


class TelegramSettings(_Section):
    """The Telegram bot ``yibao run`` serves."""

    token: SecretStr | None = None
    """From @BotFather."""
    token_file: Path | None = None
    engine: Literal["aiogram", "ptb"] = "ptb"
    """The library that speaks to Telegram: ``ptb`` (python-telegram-bot 22, its Bot API calls over
    aiohttp; the faster over real HTTP in ``bench/webhook_bench.py``) or ``aiogram`` (aiogram 3).
    Both behave the same."""
    api_base_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] = "https://api.telegram.org"
    """A Bot API server: Telegram's, a local telegram-bot-api server, or an emulator in tests."""
    mode: Literal["polling", "webhook"] = "polling"
    """``polling``: one process asks Telegram for updates (two would collide). ``webhook``: Telegram
    POSTs updates to ``webhook_url``; any number of processes can serve it behind a load balancer."""
    webhook_url: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None
    """The public address Telegram posts to (``https://bot.example.org/telegram``)."""
    webhook_secret: SecretStr | None = None
    """Telegram sends it back in every webhook request; others are refused (1-256 of A-Z a-z 0-9 _ -)."""
    webhook_secret_file: Path | None = None
    listen_host: str | None = None
    """Deprecated: ``http.listen_host`` (read as it, with a warning, until the next release)."""
    listen_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    """Deprecated: ``http.listen_port`` (read as it, with a warning, until the next release)."""
    webhook_path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9_/-]*$")] = "/telegram"
    global_rate: Annotated[float, Field(gt=0, le=1000)] = 30.0
    """Messages per second for the whole bot."""
    per_chat_rate: Annotated[float, Field(gt=0, le=30)] = 1.0
    """Messages per second into one chat."""
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    """Retries of a send Telegram answered 429, each after its ``retry_after``."""
    concurrent_updates: Annotated[int, Field(ge=1, le=1024)] = 64

    @field_validator("webhook_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()):
            raise ValueError("must be 1 to 256 of A-Z, a-z, 0-9, _ and - (Telegram's rule)")
        return value

    @model_validator(mode="after")
    def _webhook_needs_url_and_secret(self) -> TelegramSettings:
        if self.mode == "webhook":
            if self.webhook_url is None:
                raise ValueError('mode "webhook" needs telegram.webhook_url')
            if self.webhook_secret is None and self.webhook_secret_file is None:
                raise ValueError('mode "webhook" needs telegram.webhook_secret or webhook_secret_file')
        return self

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"\d{5,}:[A-Za-z0-9_-]{30,}", value.get_secret_value()):
            raise ValueError("does not look like a bot token from @BotFather (digits:letters)")
        return value


_TEMPLATE_KEY = r"^[a-z_]+[0-9]+$"


class WechatSettings(_Section):
    """The WeChat Official Account (服务号) ``yibao run`` serves, when ``app_id`` is set."""

    app_id: Annotated[str, Field(pattern=r"^wx[0-9a-f]{16}$")] | None = None
    """The account's AppID (开发者ID), from the admin console: ``wx`` and 16 hex digits."""
    app_secret: SecretStr | None = None
    """The AppSecret (开发者密码)."""
    app_secret_file: Path | None = None
    token: SecretStr | None = None
    """The Token entered beside the server URL in the admin console (3-32 letters and digits)."""
    token_file: Path | None = None
    encoding_aes_key: SecretStr | None = None
    """The EncodingAESKey (43 characters) for safe mode (安全模式); empty: plaintext mode (明文模式)."""
    encoding_aes_key_file: Path | None = None
    api_base_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] = "https://api.weixin.qq.com"
    """WeChat's API; tests point it at a loopback emulator."""
    oauth_base_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] = "https://open.weixin.qq.com"
    """Where WeChat's web-page authorization (``connect/oauth2/authorize``, ``snsapi_base``) is: the
    pages' menu entry sends the browser there; tests point it at a loopback emulator."""
    token_endpoint: Literal["stable_token", "token"] = "stable_token"  # noqa: S105 - an endpoint
    """``stable_token`` (a token that another fetch does not void) or the older ``token``."""
    callback_path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9_/-]*$")] = "/wechat"
    reply_within_seconds: Annotated[float, Field(gt=0, le=4.5)] = 4.0
    """An answer ready within this long goes back in the HTTP response (WeChat waits 5 s); a later
    one as customer-service messages."""
    send_rate: Annotated[float, Field(gt=0, le=1000)] = 50.0
    """Customer-service and subscription messages per second, per instance."""
    alert_template_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")] | None = None
    """A subscription-message template (订阅通知) for alerts outside the 48-hour window; empty: none."""
    alert_field_balance: Annotated[str, Field(pattern=_TEMPLATE_KEY)] = "amount1"
    """The template's key that takes the balance ("¥32.63")."""
    alert_field_threshold: Annotated[str, Field(pattern=_TEMPLATE_KEY)] = "amount2"
    """The template's key that takes the alert amount."""
    alert_field_time: Annotated[str, Field(pattern=_TEMPLATE_KEY)] = "time3"
    """The template's key that takes the time of the figures ("2026-12-01 09:00")."""
    alert_field_note: Annotated[str, Field(pattern=_TEMPLATE_KEY)] = "thing4"
    """The template's key that takes a short note (cut to 20 characters for a ``thing`` key)."""
    alert_template_long_term: bool = False
    """The template is a long-term subscription (长期订阅): one acceptance lasts. Otherwise each
    acceptance allows one message."""

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9]{3,32}", value.get_secret_value()):
            raise ValueError("must be 3 to 32 letters and digits (WeChat's rule)")
        return value

    @field_validator("encoding_aes_key")
    @classmethod
    def _aes_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            from platforms.tencent.crypto import parse_aes_key

            parse_aes_key(value.get_secret_value())  # says what is wrong, never the key
        return value or None

    @model_validator(mode="after")
    def _complete(self) -> WechatSettings:
        if self.app_id is not None:
            if self.app_secret is None and self.app_secret_file is None:
                raise ValueError("wechat.app_id needs wechat.app_secret or app_secret_file")
            if self.token is None and self.token_file is None:
                raise ValueError("wechat.app_id needs wechat.token or token_file")
        return self


class WecomSettings(_Section):
    """The WeCom self-built app (自建应用) ``yibao run`` serves, when ``corp_id`` is set."""

    corp_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9]{4,32}$")] | None = None
    """The company's CorpID (企业ID), from 我的企业 → 企业信息."""
    agent_id: Annotated[int, Field(ge=1)] | None = None
    """The app's AgentId, from 应用管理 → the app."""
    secret: SecretStr | None = None
    """The app's Secret."""
    secret_file: Path | None = None
    token: SecretStr | None = None
    """The Token of the app's 接收消息 (API receive) settings (3-32 letters and digits)."""
    token_file: Path | None = None
    encoding_aes_key: SecretStr | None = None
    """The EncodingAESKey (43 characters) of the same settings: WeCom's callbacks are always encrypted."""
    encoding_aes_key_file: Path | None = None
    api_base_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] = "https://qyapi.weixin.qq.com"
    """WeCom's API; tests point it at a loopback emulator."""
    oauth_base_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] = "https://open.weixin.qq.com"
    """Where WeCom's web-page authorization (``connect/oauth2/authorize`` with the ``agentid``) is:
    the pages' menu entry sends the browser there; tests point it at a loopback emulator."""
    callback_path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9_/-]*$")] = "/wecom"
    reply_within_seconds: Annotated[float, Field(gt=0, le=4.5)] = 4.0
    """The callback is answered within this long (WeCom waits 5 s), whether the answer is ready or not."""
    prefill_name: bool = False
    """``/bind`` proposes the member's name from the company directory (``user/get``)."""
    send_rate: Annotated[float, Field(gt=0, le=1000)] = 50.0
    """Messages per second, per instance."""
    member_messages_per_minute: Annotated[int, Field(ge=1, le=30)] = 30
    """Messages to one member in any minute (WeCom drops what passes 30, silently)."""
    member_messages_per_hour: Annotated[int, Field(ge=1, le=1000)] = 1000
    """Messages to one member in any hour (WeCom drops what passes 1,000, silently)."""

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9]{3,32}", value.get_secret_value()):
            raise ValueError("must be 3 to 32 letters and digits (WeCom's rule)")
        return value

    @field_validator("encoding_aes_key")
    @classmethod
    def _aes_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from platforms.tencent.crypto import parse_aes_key

            parse_aes_key(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _complete(self) -> WecomSettings:
        if self.corp_id is not None:
            missing = [
                name
                for name, given in (
                    ("agent_id", self.agent_id is not None),
                    ("secret", self.secret is not None or self.secret_file is not None),
                    ("token", self.token is not None or self.token_file is not None),
                    (
                        "encoding_aes_key",
                        self.encoding_aes_key is not None or self.encoding_aes_key_file is not None,
                    ),
                )
                if not given
            ]
            if missing:
                raise ValueError("wecom.corp_id needs " + ", ".join(f"wecom.{m}" for m in missing))
        return self


class WebSettings(_Section):
    """Yibao's own pages (``platforms/web``), opened from the chat: the bind form, the account, the
    alert and the unbind, so the ID number never sits in a chat history. Served on the [http] server."""

    enabled: bool = False
    """Serve the pages and offer them in the chat (``/web``, Telegram's menu button, the WeChat and
    WeCom menus' "open" entry)."""
    public_url: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")] | None = None
    """The address users reach the [http] server at, e.g. ``https://yibao.example.com`` (behind your
    TLS proxy). Telegram, WeChat and WeCom open only https pages; ``yibao chat`` uses its own loopback
    ``http://127.0.0.1:<port>`` when this is unset."""
    max_age_seconds: Annotated[int, Field(ge=30, le=86_400)] = 3600
    """How old a Telegram Mini App's ``initData`` (its ``auth_date``) may be."""
    session_seconds: Annotated[int, Field(ge=60, le=86_400)] = 1800
    """How long a page session lasts without use."""
    verification_files: dict[
        Annotated[str, Field(pattern=r"^(MP|WW)_verify_[A-Za-z0-9]{1,64}\.txt$")],
        Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,128}$")],
    ] = {}
    """The domain checks WeChat (网页授权域名: ``MP_verify_<code>.txt``) and WeCom (可信域名:
    ``WW_verify_<code>.txt``) make before they let OAuth come back to the pages: each file's name and
    its content, as the console gives them, served at the server's root (``/<name>``, plain text)."""

    @model_validator(mode="after")
    def _complete(self) -> WebSettings:
        if self.public_url is not None:
            self.public_url = self.public_url.rstrip("/")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="YIBAO_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    general: GeneralSettings = GeneralSettings()
    redis: RedisSettings = RedisSettings()
    security: SecuritySettings = SecuritySettings()
    otp: OtpSettings = OtpSettings()
    sms: SmsSettings = SmsSettings()
    insurance: InsuranceSettings = InsuranceSettings()
    alerts: AlertSettings = AlertSettings()
    logging: LoggingSettings = LoggingSettings()
    audit: AuditSettings = AuditSettings()
    console: ConsoleSettings = ConsoleSettings()
    http: HttpSettings = HttpSettings()
    telegram: TelegramSettings = TelegramSettings()
    wechat: WechatSettings = WechatSettings()
    wecom: WecomSettings = WecomSettings()
    web: WebSettings = WebSettings()

    _deprecations: list[str] = PrivateAttr(default_factory=list)

    @property
    def deprecations(self) -> tuple[str, ...]:
        """Keys that still work but are going away, each with what to write instead."""
        return tuple(self._deprecations)

    @model_validator(mode="after")
    def _listen_aliases(self) -> Settings:
        """``telegram.listen_*`` were the webhook server's; that server is now the process's one,
        configured in ``[http]``. The old keys are read as the new ones for one release."""
        for name in ("listen_host", "listen_port"):
            old = getattr(self.telegram, name)
            if old is None:
                continue
            if name in self.http.model_fields_set and getattr(self.http, name) != old:
                raise ValueError(
                    f"telegram.{name} (deprecated) and http.{name} disagree; keep http.{name} only"
                )
            setattr(self.http, name, old)
            self._deprecations.append(f"telegram.{name} is deprecated: write it as http.{name}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _toml_path.get()
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if path is not None:
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=path),)
        return sources


def config_path(explicit: str | Path | None) -> Path | None:
    """Which file to read, by the documented order; None means built-in defaults."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    key: str
    message: str


class ConfigError(Exception):
    def __init__(self, path: Path | None, problems: list[ConfigProblem]) -> None:
        super().__init__("; ".join(f"{p.key}: {p.message}" for p in problems))
        self.path = path
        self.problems = problems


def load_settings(explicit: str | Path | None = None) -> tuple[Settings, Path | None]:
    """The settings and the file they came from. Raises ``ConfigError`` naming every bad key."""
    path = config_path(explicit)
    if path is not None:
        if not path.is_file():
            raise ConfigError(path, [ConfigProblem("(file)", f"{path} does not exist or is not a file")])
        try:
            with path.open("rb") as f:
                tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(path, [ConfigProblem("(syntax)", str(e))]) from None
    token = _toml_path.set(path)
    try:
        settings = Settings()
    except ValidationError as e:
        raise ConfigError(path, [_problem(err) for err in e.errors()]) from None
    except SettingsError as e:  # an environment variable that cannot be parsed (e.g. YIBAO_REDIS=...)
        field = re.search(r'field "([^"]+)"', str(e))
        name = f"YIBAO_{field.group(1).upper()}" if field else "a YIBAO_* variable"
        raise ConfigError(
            path, [ConfigProblem("(environment)", f"{name} cannot be read as that setting")]
        ) from None
    finally:
        _toml_path.reset(token)
    problems = _secret_file_problems(settings)
    if problems:
        raise ConfigError(path, problems)
    return settings, path


def _problem(err: Any) -> ConfigProblem:
    key = ".".join(str(part) for part in err["loc"]) or "(top level)"
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key (see config.example.toml for the keys there are)"
    elif err["type"] not in ("missing", "value_error") and "input" in err and not _is_secret_key(key):
        shown = err["input"]
        if not isinstance(shown, dict | list):
            message += f" (got {shown!r})"
    return ConfigProblem(key, message)


_SECRET_SECTIONS = frozenset({"redis", "security", "telegram", "insurance", "wechat", "wecom"})


def _is_secret_key(key: str) -> bool:
    """Inputs under these keys are never echoed: they may be (or hold) a secret."""
    return key.split(".", 1)[0] in _SECRET_SECTIONS or any(
        word in key for word in ("key", "token", "url", "password", "secret")
    )


def _secret_file_problems(settings: Settings) -> list[ConfigProblem]:
    problems = []
    files = [
        ("security.pii_key_file", settings.security.pii_key_file),
        ("telegram.token_file", settings.telegram.token_file),
        ("telegram.webhook_secret_file", settings.telegram.webhook_secret_file),
        ("wechat.app_secret_file", settings.wechat.app_secret_file),
        ("wechat.token_file", settings.wechat.token_file),
        ("wechat.encoding_aes_key_file", settings.wechat.encoding_aes_key_file),
        ("wecom.secret_file", settings.wecom.secret_file),
        ("wecom.token_file", settings.wecom.token_file),
        ("wecom.encoding_aes_key_file", settings.wecom.encoding_aes_key_file),
    ]
    files += [
        (f"insurance.platforms.{i}.secret_file", p.secret_file)
        for i, p in enumerate(settings.insurance.platforms)
    ]
    for key, path in files:
        if path is not None and not path.is_file():
            problems.append(ConfigProblem(key, f"{path} does not exist or is not a file"))
    return problems


def read_secret(value: SecretStr | None, file: Path | None) -> SecretStr | None:
    """A secret given inline, or read (stripped) from its ``*_file``; inline wins."""
    if value is not None:
        return value
    if file is not None:
        return SecretStr(file.read_text(encoding="utf-8").strip())
    return None

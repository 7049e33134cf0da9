"""``yibao run``: the bot on every configured chat platform, in one process: Telegram
(``telegram.engine``: aiogram or python-telegram-bot; polling, or a webhook), a WeChat Official
Account and a WeCom app (their callbacks), the routes of all on the process's one HTTP server (``bot.http``, at
``[http]`` ``listen_host:listen_port``), with the alert work beside them; ``yibao worker``: the alert
work alone (checks, and sending on every configured platform).

SIGTERM or SIGINT: stop taking updates, finish the ones in flight (and the alert work in hand),
close Redis and the platforms' connections, return (exit 0).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from bot.app import StartupError, build_runtime
from bot.config import Settings, read_secret
from bot.http.server import HttpServer, Readiness
from dialogs.ports import Outlet
from platforms import web
from platforms.telegram.core import TelegramCore, TelegramStartError
from platforms.telegram.engines import build_engine
from platforms.telegram.options import Engine, TelegramOptions
from platforms.telegram.webhook import webhook_routes
from platforms.tencent.api import ApiRefusal, ApiUnavailable, TokenApi
from platforms.tencent.routes import callback_routes
from platforms.web.oauth import OAuthIdentity
from platforms.wechat.api import WechatError, WechatUnavailable
from platforms.wechat.core import WechatCore
from platforms.wechat.menu import conditional_menu, menu
from platforms.wecom.core import WecomCore

log = logging.getLogger(__name__)


def telegram_options(settings: Settings, *, required: bool = True) -> TelegramOptions | None:
    tg = settings.telegram
    token = read_secret(tg.token, tg.token_file)
    if token is None:
        if not required:
            return None
        raise StartupError(
            "yibao run needs telegram.token (or telegram.token_file, or YIBAO_TELEGRAM__TOKEN)"
        )
    return TelegramOptions(
        token=token.get_secret_value(),
        api_base_url=tg.api_base_url,
        global_rate=tg.global_rate,
        per_chat_rate=tg.per_chat_rate,
        max_retries=tg.max_retries,
        concurrent_updates=tg.concurrent_updates,
        webhook=tg.mode == "webhook",
    )


def telegram_check(core: TelegramCore) -> Callable[[], Awaitable[Readiness]]:
    """``/readyz``'s ``telegram`` part: the token was accepted (``getMe`` answered at start)."""

    async def check() -> Readiness:
        return Readiness(True) if core.token_ok else Readiness(False, "the token was not accepted yet")

    return check


def token_check(api: TokenApi) -> Callable[[], Awaitable[Readiness]]:
    """``/readyz``'s ``wechat`` or ``wecom`` part: the app's access_token, shared in Redis, is there
    and not expired (an instance fetches the next before it is)."""

    async def check() -> Readiness:
        try:
            token = await api.tokens.get()
        except Exception as e:
            return Readiness(False, f"the token cannot be read ({type(e).__name__})")
        if token is None or token.expires_at <= time.time():
            return Readiness(False, "no fresh access_token")
        return Readiness(True, f"token valid for {token.expires_at - time.time():.0f} s")

    return check


def web_prefix() -> str:
    from platforms import web

    return web.PREFIX


def http_server(settings: Settings) -> HttpServer:
    return HttpServer(
        host=settings.http.listen_host,
        port=settings.http.listen_port,
        trusted_proxies=settings.http.trusted_proxies,
    )


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Serve every configured chat platform (Telegram with ``telegram.token``, WeChat with
    ``wechat.app_id``) in this one process, on one HTTP port where any needs it, until ``stop`` is set
    (or SIGTERM/SIGINT arrive)."""
    started = time.monotonic()
    options = telegram_options(settings, required=False)
    wechat = settings.wechat.app_id is not None
    wecom = settings.wecom.corp_id is not None
    if options is None and not wechat and not wecom:
        raise StartupError(
            "yibao run needs a chat platform: telegram.token (or telegram.token_file, or "
            "YIBAO_TELEGRAM__TOKEN), wechat.app_id with its secret and token, or wecom.corp_id with its app"
        )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = await build_runtime(settings, stop=stop)
    tg = settings.telegram
    engine: Engine | None = None
    wx: WechatCore | None = None
    wc: WecomCore | None = None
    http: HttpServer | None = None
    alerts: asyncio.Task[None] | None = None
    outlets: dict[str, Outlet] = {}
    serving: list[str] = []
    try:
        routes = []
        checks: dict[str, Callable[[], Awaitable[Readiness]]] = {}
        webhook_secret: str | None = None
        if options is not None:
            core = runtime.telegram_core()
            engine = build_engine(tg.engine, core, options)
            await engine.initialize()
            try:
                await core.set_commands()
            except Exception as e:  # the token worked, so Telegram is there: say what failed, not a traceback
                raise StartupError(f"Telegram: setMyCommands failed ({type(e).__name__})") from None
            await _set_menu_button(settings, core)
            await engine.start()
            outlets[core.platform] = core
            checks["telegram"] = telegram_check(core)
            if tg.mode == "polling":
                await engine.start_polling()
            else:
                secret = read_secret(tg.webhook_secret, tg.webhook_secret_file)
                assert secret is not None  # the settings model requires it
                webhook_secret = secret.get_secret_value()
                routes += webhook_routes(engine, path=tg.webhook_path, secret=webhook_secret)
            serving.append(f"Telegram by {tg.mode} on {engine.name}")
        if wechat:
            wx, guard = runtime.wechat_core()
            await _check_wechat(wx)
            routes += callback_routes(wx, guard, path=settings.wechat.callback_path)
            outlets[wx.platform] = wx
            checks["wechat"] = token_check(wx.api)
            mode = "safe mode" if guard.crypto is not None else "plaintext mode"
            serving.append(f"WeChat on {settings.wechat.callback_path} ({mode})")
        if wecom:
            wc, wc_guard = runtime.wecom_core()
            await _check_wecom(wc)
            path = settings.wecom.callback_path
            routes += callback_routes(wc, wc_guard, path=path, platform="WeCom", encrypted_echo=True)
            outlets[wc.platform] = wc
            checks["wecom"] = token_check(wc.api)
            serving.append(f"WeCom on {path} (app {settings.wecom.agent_id})")
        if settings.web.enabled:
            if settings.web.public_url is None:
                log.warning(
                    "web.enabled without web.public_url: /web links point at this server's own "
                    "http://%s:%s, which only this machine may reach",
                    settings.http.listen_host,
                    settings.http.listen_port,
                )
            identities: dict[str, OAuthIdentity] = {}  # who opens /web/wx and /web/wecom
            if wx is not None:
                identities["wx"] = runtime.wechat_oauth(wx)
            if wc is not None:
                identities["wecom"] = runtime.wecom_oauth(wc)
            routes += runtime.web_pages(identities).routes()
            serving.append(f"the pages on {web_prefix()} ({settings.web.public_url or 'no web.public_url'})")
        if routes or settings.http.always:
            http = http_server(settings)
            runtime.observe(http)
            for name, check in checks.items():
                http.add_check(name, check)
            http.mount(routes)
            await http.start()
        if engine is not None and webhook_secret is not None:
            assert tg.webhook_url is not None
            await engine.register_webhook(tg.webhook_url, webhook_secret)
        runtime.followups.outlets.update(outlets)  # a face check passing reaches the user unprompted
        if settings.alerts.enabled:
            alerts = asyncio.create_task(runtime.alert_worker(outlets).run(stop))
        log.info("serving %s, %.2f s after start", "; ".join(serving), time.monotonic() - started)
        await stop.wait()
        log.info("stopping: no new updates; finishing the ones in flight")
    except TelegramStartError as e:
        raise StartupError(str(e)) from None
    finally:
        stop.set()
        if alerts is not None:
            await alerts
        if http is not None:
            await http.stop()
        if engine is not None:
            await engine.stop()
        if wx is not None:
            await wx.aclose()
        if wc is not None:
            await wc.aclose()
        await runtime.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped")


def page_url(settings: Settings, path: str) -> str | None:
    """``path`` of Yibao's pages at ``web.public_url``, when the pages are on and have an address
    users reach; else None (no entry for them in the chat platforms' menus)."""
    if not settings.web.enabled or settings.web.public_url is None:
        return None
    return web.url(settings.web.public_url, path)


async def _set_menu_button(settings: Settings, core: TelegramCore) -> None:
    """The chat's menu button opens the pages' Mini App, when ``[web]`` is on with an https
    ``public_url``. A refusal is logged: the chat works without it."""
    url = page_url(settings, web.TELEGRAM_ENTRY)
    if url is None:
        return
    try:
        if await core.set_menu_button(url):
            log.info("Telegram's menu button opens %s", url)
    except Exception as e:
        log.error("Telegram: setChatMenuButton failed (%s); the chat works without it", type(e).__name__)


class _Platform(Protocol):
    @property
    def api(self) -> TokenApi: ...

    async def aclose(self) -> None: ...


async def _check_token(platform: _Platform, name: str, keys: str) -> None:
    """A token at start: wrong credentials are said at once, not at the first message."""
    try:
        await platform.api.access_token()
    except ApiRefusal as e:
        await platform.aclose()
        raise StartupError(f"{name} refused the credentials ({e.errcode}); check {keys}") from None
    except ApiUnavailable as e:
        await platform.aclose()
        raise StartupError(f"{name}'s API cannot be reached ({e}); check its api_base_url") from None


async def _check_wechat(wx: WechatCore) -> None:
    await _check_token(wx, "WeChat", "wechat.app_id and wechat.app_secret")


async def _check_wecom(wc: WecomCore) -> None:
    await _check_token(wc, "WeCom", "wecom.corp_id, wecom.agent_id and wecom.secret")


async def _no_sms(masked_to: str, text: str) -> None:
    """The worker binds nobody, so it never sends an SMS code (and needs no SMS gateway)."""
    raise RuntimeError("yibao worker sends no SMS codes")


async def work(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """``yibao worker``: alert checks, and the Telegram outbox when a token is configured."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    options = telegram_options(settings, required=False)
    runtime = await build_runtime(settings, show_sms=_no_sms, stop=stop)
    engine: Engine | None = None
    wx: WechatCore | None = None
    wc: WecomCore | None = None
    http: HttpServer | None = None
    try:
        outlets: dict[str, Outlet] = {}
        if settings.http.always:
            http = http_server(settings)
            runtime.observe(http)
        if settings.wechat.app_id is not None:
            wx, _guard = runtime.wechat_core()
            await _check_wechat(wx)
            outlets[wx.platform] = wx
            if http is not None:
                http.add_check("wechat", token_check(wx.api))
        if settings.wecom.corp_id is not None:
            wc, _wc_guard = runtime.wecom_core()
            await _check_wecom(wc)
            outlets[wc.platform] = wc
            if http is not None:
                http.add_check("wecom", token_check(wc.api))
        if options is None:
            log.warning("no telegram.token: alerts for Telegram users wait in the outbox")
        else:
            core = runtime.telegram_core()
            # Sends only: no updates are taken here.
            engine = build_engine(settings.telegram.engine, core, dataclasses.replace(options, webhook=True))
            await engine.initialize()
            outlets[core.platform] = core
            if http is not None:
                http.add_check("telegram", telegram_check(core))
        if http is not None:
            await http.start()
        log.info("alert worker started")
        await runtime.alert_worker(outlets).run(stop)
    except TelegramStartError as e:
        raise StartupError(str(e)) from None
    finally:
        if http is not None:
            await http.stop()
        if engine is not None:
            await engine.close()
        if wx is not None:
            await wx.aclose()
        if wc is not None:
            await wc.aclose()
        await runtime.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped")


async def set_wechat_menu(settings: Settings) -> None:
    """``yibao wechat menu``: the account's custom menu in the default language, and one for WeChat
    clients in the other (``menu/addconditional``, matched on the client's language)."""
    if settings.wechat.app_id is None:
        raise StartupError("yibao wechat menu needs wechat.app_id, wechat.app_secret and wechat.token")
    runtime = await build_runtime(settings, show_sms=_no_sms)
    wx, _guard = runtime.wechat_core()
    try:
        await _check_wechat(wx)
        catalogs = runtime.conversation.catalogs
        default = settings.general.default_locale
        other, language = ("en", "en") if default == "zh" else ("zh", "zh_CN")
        page = page_url(settings, web.WECHAT_ENTRY)
        try:
            await wx.api.create_menu(menu(catalogs.get(default), page))
            await wx.api.add_conditional_menu(conditional_menu(catalogs.get(other), language, page))
        except (WechatError, WechatUnavailable) as e:
            raise StartupError(f"WeChat did not take the menu ({e})") from None
        print(f"menu set: {default} for everyone, {other} for WeChat in {language}")
        if page is not None:
            print(f"with the pages' entry: {page}")
    finally:
        await wx.aclose()
        await runtime.aclose()


async def set_wecom_menu(settings: Settings) -> None:
    """``yibao wecom menu``: the app's menu (查余额 / 消费记录 / 更多), in the default language (WeCom
    has one menu per app), with the pages' entry when ``[web]`` is on."""
    if settings.wecom.corp_id is None:
        raise StartupError("yibao wecom menu needs the [wecom] app: corp_id, agent_id, secret, token and key")
    runtime = await build_runtime(settings, show_sms=_no_sms)
    wc, _guard = runtime.wecom_core()
    try:
        await _check_wecom(wc)
        default = settings.general.default_locale
        page = page_url(settings, web.WECOM_ENTRY)
        try:
            await wc.api.create_menu(menu(runtime.conversation.catalogs.get(default), page))
        except (ApiRefusal, ApiUnavailable) as e:
            raise StartupError(f"WeCom did not take the menu ({e})") from None
        print(f"menu set for app {settings.wecom.agent_id}: {default}")
        if page is not None:
            print(f"with the pages' entry: {page}")
    finally:
        await wc.aclose()
        await runtime.aclose()

"""``yibao``: the command line.

``yibao chat`` talks to Yibao in the terminal; ``yibao run`` runs it on Telegram and WeChat; ``yibao
worker`` runs only the alert checks and sender; ``yibao config check`` validates a config file;
``yibao wechat menu`` sets the official account's custom menu, ``yibao wecom menu`` the WeCom app's;
``yibao sandbox ...`` lists the sandbox's fictional people, serves the sandbox over HTTP and changes a
running one (:mod:`bot.cli.sandbox`); ``yibao audit tail`` and ``yibao admin export|erase|stats`` are
the operator's (:mod:`bot.cli.admin`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli import admin, sandbox
from bot.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:  # imported when the command runs, not when the CLI starts
    from bot.app import Runtime
    from bot.http.server import HttpServer

EXIT_CONFIG = 2


def _version() -> str:
    try:
        return version("yibao-bot")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="yibao", description="Yibao: your medical-insurance (医保) balance in a chat."
    )
    p.add_argument("--version", action="version", version=f"yibao {_version()}")
    config_help = "config file (default: $YIBAO_CONFIG, else ./config.toml if present)"
    p.add_argument("--config", metavar="PATH", help=config_help)
    # ... and after the command too (`yibao chat --config x.toml`), without overriding one given before.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=config_help)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    chat = sub.add_parser(
        "chat",
        parents=[common],
        help="chat with Yibao in this terminal (embedded Redis and sandbox by default)",
    )
    chat.add_argument("--lang", choices=("zh", "en"), help="your language (default: from $LANG, else zh)")
    sub.add_parser(
        "run",
        parents=[common],
        help="run the chat platforms configured: Telegram (polling or webhook) and WeChat (its callback)",
    )
    sub.add_parser(
        "worker",
        parents=[common],
        help="run only the alert checks and sender; any number of them share the work through Redis",
    )

    config = sub.add_parser("config", help="work with the config file")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser(
        "check", parents=[common], help="validate a config file; exit 2 naming each bad key"
    )
    check.add_argument("path", nargs="?", help="the file (default: as --config)")

    wechat = sub.add_parser("wechat", help="work with the WeChat Official Account")
    wechat_sub = wechat.add_subparsers(dest="wechat_command", required=True, metavar="ACTION")
    wechat_sub.add_parser(
        "menu",
        parents=[common],
        help="set the account's custom menu (balance, payments, alerts, help, and the pages when [web] "
        "is on) in Chinese and English",
    )

    wecom = sub.add_parser("wecom", help="work with the WeCom app")
    wecom_sub = wecom.add_subparsers(dest="wecom_command", required=True, metavar="ACTION")
    wecom_sub.add_parser(
        "menu",
        parents=[common],
        help="set the app's menu (balance, payments, alerts, help, and the pages when [web] is on)",
    )

    sandbox.add_parser(sub)
    admin.add_parsers(sub, common)
    return p


def _load(path: str | None) -> Settings:
    try:
        settings, used = load_settings(path)
    except ConfigError as e:
        _print_problems(e)
        raise SystemExit(EXIT_CONFIG) from None
    _print_deprecations(settings, used)
    return settings


def _print_deprecations(settings: Settings, used: Path | None) -> None:
    for warning in settings.deprecations:
        print(f"{used or 'settings'}: warning: {warning}", file=sys.stderr)


def _print_problems(e: ConfigError) -> None:
    where = str(e.path) if e.path else "settings"
    for problem in e.problems:
        print(f"{where}: {problem.key}: {problem.message}", file=sys.stderr)


def cmd_config_check(path: str | None) -> int:
    try:
        settings, used = load_settings(path)
    except ConfigError as e:
        _print_problems(e)
        return EXIT_CONFIG
    _print_deprecations(settings, used)
    has_key = bool(settings.security.pii_key or settings.security.pii_key_file)
    if settings.redis.external and not has_key:  # what `yibao chat`/`run` would refuse to start with
        print(
            f"{used or 'settings'}: security.pii_key: required when redis.url is set (or redis.sentinels)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if settings.redis.sentinels:
        redis = f"sentinels {', '.join(settings.redis.sentinels)} (master {settings.redis.sentinel_master!r})"
    elif settings.redis.url:
        redis = "a cluster (redis.url, redis.cluster)" if settings.redis.cluster else "set (redis.url)"
    else:
        redis = f"embedded, data in {settings.general.data_dir}"
    key = "set" if has_key else "not set (demo key)"
    print(f"{used or 'built-in defaults'}: OK")
    print(f"  redis: {redis}; prefix {settings.redis.prefix!r}")
    platforms = ", ".join(f"{p.name} ({p.kind})" for p in settings.insurance.platforms)
    print(f"  pii key: {key}; sms gateway: {settings.sms.gateway}; insurance platforms: {platforms}")
    return 0


def cmd_chat(settings: Settings, lang: str | None) -> int:
    from bot.app import build_runtime
    from bot.logs import setup_logging
    from dialogs.i18n import normalize_locale
    from platforms.console import ConsoleAdapter

    setup_logging(
        settings.logging.level,
        settings.logging.file or settings.general.data_dir / "yibao.log",
        settings.logging.format,
    )
    locale = lang or normalize_locale(os.environ.get("LANG"))
    adapter = ConsoleAdapter(
        user_id=settings.console.user,
        locale=locale,
        files_dir=settings.general.data_dir / "files",
        choose_locale=lang is not None,  # --lang wins over a language stored with /lang
    )

    async def chat() -> None:
        runtime = await build_runtime(settings, show_sms=adapter.show_sms)
        runtime.followups.outlets[adapter.platform] = adapter  # a face check passing, unprompted
        stop = asyncio.Event()
        alerts = None
        pages = await _serve_pages(settings, runtime) if settings.web.enabled else None
        if settings.alerts.enabled:
            # The terminal's alerts arrive unprompted, between the messages.
            alerts = asyncio.create_task(runtime.alert_worker({adapter.platform: adapter}).run(stop))
        try:
            await adapter.run(runtime.handle)
        finally:
            stop.set()
            if alerts is not None:
                await alerts
            if pages is not None:
                await pages.stop()
            await runtime.aclose()

    return _run_async(chat())


async def _serve_pages(settings: Settings, runtime: Runtime) -> HttpServer:
    """``yibao chat`` with ``[web] enabled``: the pages on loopback (``http.listen_port``, or any
    free port when that one is taken), and ``/web`` links to them there unless ``web.public_url``
    says where users reach them."""
    from bot.http.server import HttpServer

    server = HttpServer(host="127.0.0.1", port=settings.http.listen_port)
    server.mount(runtime.web_pages().routes())
    try:
        await server.start()
    except OSError:
        server = HttpServer(host="127.0.0.1", port=0)
        server.mount(runtime.web_pages().routes())
        await server.start()
    if settings.web.public_url is None and runtime.web_links is not None:
        runtime.web_links.base_url = f"http://127.0.0.1:{server.port}"
    return server


def _run_async(main: Coroutine[Any, Any, None], *also: type[Exception]) -> int:
    """Run a command's coroutine: a failure to start is one line on stderr and exit 1 (2 for a
    Redis that never answered); Ctrl-C, 130; a SIGTERM while still waiting for Redis, 0."""
    from bot.app import StartupError, StoppedWhileStarting
    from bot.storage.embedded_redis import DataDirBusy, RedisBinaryNotFound, RedisStartError
    from bot.storage.health import RedisUnreachable

    errors: tuple[type[Exception], ...] = (
        StartupError,
        RedisBinaryNotFound,
        DataDirBusy,
        RedisStartError,
        OSError,
        *also,
    )
    try:
        asyncio.run(main)
    except RedisUnreachable as e:
        print(f"yibao: cannot start: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except StoppedWhileStarting:
        return 0
    except errors as e:
        print(f"yibao: cannot start: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config":
        return cmd_config_check(args.path or args.config)
    settings = _load(args.config)
    if args.command == "sandbox":
        return sandbox.run(settings, args)
    if args.command in ("audit", "admin"):
        return cmd_admin(settings, args)
    if args.command == "run":
        return cmd_run(settings)
    if args.command == "worker":
        return cmd_worker(settings)
    if args.command == "wechat":
        return cmd_wechat_menu(settings)
    if args.command == "wecom":
        return cmd_wecom_menu(settings)
    return cmd_chat(settings, args.lang)


def cmd_admin(settings: Settings, args: argparse.Namespace) -> int:
    from bot.logs import setup_logging

    problem = admin.check(args)
    if problem is not None:
        print(f"yibao: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging("WARNING", settings.logging.file, settings.logging.format)
    result: list[int] = []
    code = _run_async(admin.main(settings, args, result))
    return code or (result[0] if result else 1)


def cmd_run(settings: Settings) -> int:
    from bot.cli.run import serve
    from bot.logs import setup_logging

    setup_logging(settings.logging.level, settings.logging.file, settings.logging.format)
    return _run_async(serve(settings))


def cmd_worker(settings: Settings) -> int:
    from bot.cli.run import work
    from bot.logs import setup_logging

    setup_logging(settings.logging.level, settings.logging.file, settings.logging.format)
    return _run_async(work(settings))


def cmd_wechat_menu(settings: Settings) -> int:
    from bot.cli.run import set_wechat_menu
    from bot.logs import setup_logging

    setup_logging(settings.logging.level, settings.logging.file)
    return _run_async(set_wechat_menu(settings))


def cmd_wecom_menu(settings: Settings) -> int:
    from bot.cli.run import set_wecom_menu
    from bot.logs import setup_logging

    setup_logging(settings.logging.level, settings.logging.file)
    return _run_async(set_wecom_menu(settings))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

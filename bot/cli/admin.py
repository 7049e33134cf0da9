"""``yibao audit tail`` and ``yibao admin export|erase|stats``: the operator's commands.

- ``audit tail [--since WHEN] [--count N] [--json]``: the latest audit records, oldest first.
- ``admin export USER --ticket REF [--out FILE]``: for a data-subject request the operator has
  verified, a JSON of everything kept about ``USER`` (``tg:123``): the very items ``/mydata`` shows
  them. Audited (``exported``, the ticket as the reason).
- ``admin erase USER --ticket REF``: erase everything about ``USER`` (as ``/unbind`` does, and their
  traces in the alert queues and the limits keyed by their phone and ID number). Audited (``erased``).
- ``admin stats [--days N] [--png FILE]``: aggregates only (``bot.audit.report``).

They open the configured Redis (or the embedded one of ``general.data_dir``) like any service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.config import Settings

_USER = re.compile(r"^[a-z][a-z0-9]{0,15}:[A-Za-z0-9_.-]{1,64}$")
_TICKET = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    audit = sub.add_parser("audit", help="the audit trail (binds, unbinds, lockouts, erasures, exports)")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    tail = audit_sub.add_parser("tail", parents=[common], help="print the latest audit records")
    tail.add_argument("--since", help="only records at or after this: an ISO time, or 30m, 2h, 7d ago")
    tail.add_argument("--count", type=int, default=100, help="at most this many (default 100)")
    tail.add_argument("--json", action="store_true", help="one JSON object a line")

    admin = sub.add_parser("admin", help="the operator's data-subject requests and figures")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    export = admin_sub.add_parser(
        "export", parents=[common], help="write a JSON of everything kept about USER (a verified request)"
    )
    export.add_argument("user", help="the user key, e.g. tg:123456")
    export.add_argument("--ticket", required=True, help="the reference of the verified request (audited)")
    export.add_argument("--out", help="the file to write (default: stdout)")
    erase = admin_sub.add_parser("erase", parents=[common], help="erase everything kept about USER")
    erase.add_argument("user", help="the user key, e.g. tg:123456")
    erase.add_argument("--ticket", required=True, help="the reference of the verified request (audited)")
    stats = admin_sub.add_parser("stats", parents=[common], help="aggregate figures (no single person)")
    stats.add_argument("--days", type=int, default=30, help="the last N days (default 30)")
    stats.add_argument("--png", metavar="FILE", help="also draw them into this PNG file")


def _write_private(path: Path, content: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(content)


def parse_since(text: str | None, now: datetime) -> datetime | None:
    if not text:
        return None
    m = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now - timedelta(seconds=int(m.group(1)) * unit)
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def check(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, or None."""
    user = getattr(args, "user", None)
    if user is not None and not _USER.fullmatch(user):
        return f"not a user key: {user!r} (e.g. tg:123456)"
    ticket = getattr(args, "ticket", None)
    if ticket is not None and not _TICKET.fullmatch(ticket):
        return "--ticket: 1 to 40 of A-Z a-z 0-9 _ . - (a reference, not a name)"
    days = getattr(args, "days", None)
    if days is not None and not 1 <= days <= 400:
        return "--days: 1 to 400"
    return None


async def main(settings: Settings, args: argparse.Namespace, result: list[int]) -> None:
    """The command (checked with ``check`` first); its exit code goes into ``result``."""
    result.append(await _main(settings, args))


async def _main(settings: Settings, args: argparse.Namespace) -> int:
    from bot.app import build_runtime
    from bot.cli.run import _no_sms
    from dialogs.models import UserKey

    runtime = await build_runtime(settings, show_sms=_no_sms)
    try:
        assert runtime.audit is not None
        assert runtime.subject is not None
        assert runtime.figures is not None
        if args.command == "audit":
            since = parse_since(args.since, datetime.now(UTC))
            for record in await runtime.audit.tail(since=since, count=args.count):
                if args.json:
                    print(json.dumps(record.as_dict(), sort_keys=True))
                else:
                    extra = " ".join(
                        f"{k}={v}" for k, v in (("reason", record.reason), ("insurer", record.insurer)) if v
                    )
                    print(
                        f"{record.at} {record.action:<11} who={record.who} platform={record.platform} source={record.source} {extra}".rstrip()
                    )
            return 0
        if args.admin_command == "export":
            user = UserKey(args.user)
            data = await runtime.subject.export(user)
            text = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
            if args.out:
                await asyncio.to_thread(_write_private, Path(args.out), text.encode())
            else:
                sys.stdout.write(text)
            await runtime.audit.record("exported", user, source="admin", reason=args.ticket)
            print(f"exported {len(data['items'])} item(s) about {user}", file=sys.stderr)
            return 0
        if args.admin_command == "erase":
            user = UserKey(args.user)
            gone = await runtime.subject.erase(runtime.store, user)
            await runtime.audit.record("erased", user, source="admin", reason=args.ticket)
            print(f"erased {user}: {gone} record(s)", file=sys.stderr)
            return 0
        from bot.audit.report import build_report

        await runtime.figures.flush()
        report = await build_report(runtime.redis, runtime.keys, runtime.figures, args.days)
        print(report.as_text())
        if args.png:
            from bot.cli.stats_png import draw

            png = await asyncio.to_thread(draw, report)
            await asyncio.to_thread(Path(args.png).write_bytes, png)
            print(f"drew {args.png}", file=sys.stderr)
        return 0
    finally:
        await runtime.aclose()

"""``yibao sandbox ...``: list the sandbox's people, serve it over HTTP, and change a running one.

``serve`` runs :mod:`insurance.server` on this machine (``--profile``: which platform it plays);
``spend``, ``credit``, ``lock``, ``unlock``, ``sync-delay``, ``maintenance`` and ``face-check`` call a
running server's signed admin routes. Those accept a member
id or an ID number (the sandbox's people are fictional, and the operator's own), but print only
masked forms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import unicodedata
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from bot.config import Settings

EXIT_FAILED = 1
EXIT_USAGE = 2
SECRET_ENV = "YIBAO_SANDBOX_SECRET"  # noqa: S105 - the name of the variable, not a secret
DEFAULT_URL = "http://127.0.0.1:8700"
_ID_NUMBER = re.compile(r"\d{17}[\dXx]")


class _Refused(Exception):
    """Stop with a message on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def add_parser(sub: Any) -> None:
    """Add ``sandbox`` and its actions to ``yibao``'s sub-parsers."""
    sandbox = sub.add_parser("sandbox", help="the sandbox insurance platform")
    actions = sandbox.add_subparsers(dest="sandbox_command", required=True, metavar="ACTION")
    actions.add_parser("people", help="list the fictional insured people to try")

    serve = actions.add_parser("serve", help="run the sandbox as an HTTP insurance platform")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8700, help="port (default: %(default)s)")
    serve.add_argument("--data", metavar="PATH", help="sandbox data file (default: the configured one)")
    serve.add_argument(
        "--profile",
        choices=("national", "local_card", "face_check", "basic"),
        help="the platform it plays (default: the configured sandbox's, else national)",
    )
    _add_key_options(serve)

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--url", default=DEFAULT_URL, help="the running sandbox (default: %(default)s)")
    _add_key_options(client)
    who = "a member id, or a sandbox person's ID number"

    spend = actions.add_parser("spend", parents=[client], help="pay from a member's account, now")
    spend.add_argument("who", help=who)
    spend.add_argument("amount", type=_amount, help="yuan, e.g. 12.50")
    spend.add_argument("--place", help="where (default: a pharmacy)")
    spend.add_argument("--category", choices=("pharmacy", "outpatient", "inpatient"), default="pharmacy")
    spend.add_argument(
        "--pooled-share", type=_share, default=Decimal(0), help="the part the pooled fund pays, 0 to 1"
    )

    credit = actions.add_parser("credit", parents=[client], help="pay into a member's personal account")
    credit.add_argument("who", help=who)
    credit.add_argument("amount", type=_amount, help="yuan, e.g. 312")
    credit.add_argument("--place", help="what the credit is (default: 个人账户划入)")

    lock = actions.add_parser("lock", parents=[client], help="lock a member's account")
    lock.add_argument("who", help=who)
    lock.add_argument("--minutes", type=_positive_int, help="unlock by itself after this long")

    unlock = actions.add_parser("unlock", parents=[client], help="unlock a member's account")
    unlock.add_argument("who", help=who)

    delay = actions.add_parser("sync-delay", parents=[client], help="make a member's data lag behind")
    delay.add_argument("who", help=who)
    delay.add_argument("seconds", type=_seconds_or_off, help="seconds behind now, or 'off'")

    face = actions.add_parser(
        "face-check", parents=[client], help="pass or fail the face check a member's bind waits for"
    )
    face.add_argument("who", help=who)
    face.add_argument("outcome", choices=("pass", "fail"))

    maintenance = actions.add_parser("maintenance", parents=[client], help="put a region in maintenance")
    maintenance.add_argument("region", help="the region's area code, e.g. 510107")
    maintenance.add_argument("state", choices=("on", "off"))
    maintenance.add_argument(
        "--retry-after", type=_positive_int, default=1800, help="seconds (default: 1800)"
    )


def _add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-id", default="yibao", help="the signing key id (default: %(default)s)")
    parser.add_argument(
        "--secret-file",
        metavar="PATH",
        help=f"the signing secret (default: ${SECRET_ENV}, else the demo one)",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``yibao sandbox <ACTION>``; returns the exit code."""
    try:
        if args.sandbox_command == "people":
            return _people(settings)
        if args.sandbox_command == "serve":
            return _serve(settings, args)
        return _admin(args)
    except _Refused as e:
        print(f"yibao: {e}", file=sys.stderr)
        return e.code


# --- people -------------------------------------------------------------------------------------


def _people(settings: Settings) -> int:
    from dialogs.masking import mask_phone
    from insurance.sandbox import SandboxPlatform

    people = SandboxPlatform.from_file(_configured_data(settings)).people()
    print("Fictional people in the sandbox (not real persons):")
    print(
        f"{_pad('name', 16)} {'ID number':<19} {'phone on file':<14} {_pad('region', 14)} {'kind':<9} "
        f"{'scenario':<13} card (local_card)"
    )
    for p in people:
        print(
            f"{_pad(p.name, 16)} {p.id_number:<19} {mask_phone(p.phone):<14} {_pad(p.region_name, 14)} "
            f"{p.kind.value:<9} {p.scenario.value:<13} {p.local_card_number}"
        )
    return 0


def _pad(text: str, width: int) -> str:
    """Left-align in a terminal, where CJK characters take two columns."""
    used = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    return text + " " * max(0, width - used)


def _configured_profile(settings: Settings) -> str:
    for platform in settings.insurance.platforms:
        if platform.kind == "sandbox":
            return platform.sandbox_profile
    return "national"


def _configured_data(settings: Settings) -> Path | None:
    """The data file of the first configured sandbox platform; None: the shipped one."""
    for platform in settings.insurance.platforms:
        if platform.kind == "sandbox":
            return platform.sandbox_data
    return None


# --- serve --------------------------------------------------------------------------------------


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from insurance.sandbox import SandboxPlatform, SandboxProfile
    from insurance.sandbox_data import SandboxDataError
    from insurance.server import DEMO_SECRET, create_app, is_loopback, serve

    data = Path(args.data) if args.data else _configured_data(settings)
    profile = SandboxProfile(args.profile or _configured_profile(settings))
    try:
        platform = SandboxPlatform.from_file(data, profile=profile)
    except (SandboxDataError, OSError) as e:
        raise _Refused(f"cannot load the sandbox data: {e}", EXIT_USAGE) from None
    secret = _secret(args.secret_file)
    if secret is None:
        if not is_loopback(args.host):
            raise _Refused(
                f"refusing to serve on {args.host} with the well-known demo secret: "
                f"give --secret-file or ${SECRET_ENV}",
                EXIT_USAGE,
            )
        print(
            "yibao: warning: no secret given; signing with the well-known demo secret, "
            "which anyone on this machine can use",
            file=sys.stderr,
        )
        secret = DEMO_SECRET
    app = create_app(platform, keys={args.key_id: secret})
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"Sandbox insurance platform ({profile.value}) on http://{host}:{args.port} "
        f"(key id {args.key_id!r}); Ctrl-C stops it."
    )
    print(f"The contract: http://{host}:{args.port}/docs", flush=True)
    serve(app, args.host, args.port)
    return 0


def _secret(secret_file: str | None) -> bytes | None:
    """``--secret-file``, else ``$YIBAO_SANDBOX_SECRET``, else None."""
    if secret_file:
        try:
            secret = Path(secret_file).read_bytes().strip()
        except OSError as e:
            raise _Refused(f"cannot read the secret file: {e.strerror}", EXIT_USAGE) from None
        if not secret:
            raise _Refused("the secret file is empty", EXIT_USAGE)
        return secret
    from_env = os.environ.get(SECRET_ENV, "").strip()
    return from_env.encode() if from_env else None


# --- admin calls --------------------------------------------------------------------------------


class _Signer(httpx.Auth):
    """Signs each request as ``insurance.wire`` says."""

    def __init__(self, key_id: str, secret: bytes) -> None:
        self.key_id = key_id
        self.secret = secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        from insurance.client import sign_request

        sign_request(request, key_id=self.key_id, secret=self.secret, now=datetime.now(UTC))
        yield request


class _Admin:
    def __init__(self, args: argparse.Namespace) -> None:
        from insurance.server import DEMO_SECRET, is_loopback

        self.url = args.url
        secret = _secret(args.secret_file)
        if secret is None:
            if not is_loopback(urlsplit(args.url).hostname or ""):
                raise _Refused(f"give --secret-file or ${SECRET_ENV} for {args.url}", EXIT_USAGE)
            secret = DEMO_SECRET
        self.client = httpx.Client(base_url=args.url, auth=_Signer(args.key_id, secret), timeout=10.0)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self.client.request(method, path, json=body)
        except httpx.HTTPError as e:
            raise _Refused(f"cannot reach the sandbox at {self.url}: {e}") from None
        if response.status_code == 204:
            return None
        try:
            answer = response.json()
        except json.JSONDecodeError:
            raise _Refused(f"{self.url} answered HTTP {response.status_code}, not JSON") from None
        if response.is_error:
            detail = answer.get("detail") if isinstance(answer, dict) else None
            code = answer.get("code", "error") if isinstance(answer, dict) else "error"
            raise _Refused(f"the sandbox refused ({code}): {detail or response.reason_phrase}")
        return answer

    def resolve(self, who: str) -> tuple[str, str]:
        """``(member id, how to show who it is)`` for a member id or an ID number."""
        from dialogs.masking import mask_id_number

        if not _ID_NUMBER.fullmatch(who):
            return who, who
        wanted = who.upper()
        for person in self.call("GET", "/admin/people"):
            if str(person.get("id_number", "")).upper() == wanted:
                member_id = str(person["member_id"])
                return member_id, f"{member_id} ({mask_id_number(wanted)})"
        raise _Refused(f"no sandbox person has the ID number {mask_id_number(wanted)}")


def _admin(args: argparse.Namespace) -> int:
    admin = _Admin(args)
    try:
        command = args.sandbox_command
        if command == "maintenance":
            region = quote(args.region, safe="")
            on = args.state == "on"
            admin.call(
                "POST",
                f"/admin/regions/{region}/maintenance",
                {"on": on, "retry_after_seconds": args.retry_after},
            )
            print(
                f"region {args.region}: in maintenance, retry after {args.retry_after} s"
                if on
                else f"region {args.region}: out of maintenance"
            )
            return 0
        member_id, label = admin.resolve(args.who)
        path = f"/admin/members/{quote(member_id, safe='')}"
        if command == "spend":
            body: dict[str, Any] = {
                "amount": str(args.amount),
                "category": args.category,
                "pooled_share": str(args.pooled_share),
            }
            if args.place:
                body["place"] = args.place
            _print_balance(label, admin.call("POST", f"{path}/spend", body))
        elif command == "credit":
            body = {"amount": str(args.amount)}
            if args.place:
                body["place"] = args.place
            _print_balance(label, admin.call("POST", f"{path}/credit", body))
        elif command == "lock":
            until = None
            if args.minutes:
                until = (datetime.now().astimezone() + timedelta(minutes=args.minutes)).replace(microsecond=0)
            admin.call("POST", f"{path}/lock", {"until": until.isoformat() if until else None})
            print(f"{label}: locked " + (f"until {until:%Y-%m-%d %H:%M %z}" if until else "until unlocked"))
        elif command == "unlock":
            admin.call("POST", f"{path}/unlock")
            print(f"{label}: unlocked")
        elif command == "face-check":
            passed = args.outcome == "pass"
            admin.call("POST", f"{path}/face-check", {"passed": passed})
            print(f"{label}: face check {'passed' if passed else 'failed'}")
        else:
            admin.call("POST", f"{path}/sync-delay", {"seconds": args.seconds})
            print(f"{label}: " + (f"data lags {args.seconds} s behind" if args.seconds else "in sync"))
        return 0
    finally:
        admin.client.close()


def _print_balance(label: str, balance: dict[str, Any]) -> None:
    personal = balance.get("personal_account")
    account = f"personal account ¥{Decimal(personal):,.2f}" if personal is not None else "no personal account"
    print(
        f"{label}: {account}; pooled fund {balance['pooled_year']}: used ¥{Decimal(balance['pooled_used']):,.2f}, "
        f"remaining ¥{Decimal(balance['pooled_remaining']):,.2f}"
    )


# --- argument types -----------------------------------------------------------------------------


def _amount(text: str) -> Decimal:
    try:
        value = Decimal(text.strip().lstrip("¥"))
        exact = value.is_finite() and value > 0 and value == value.quantize(Decimal("0.01"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}") from None
    if not exact:
        raise argparse.ArgumentTypeError(f"an amount is above 0 with at most two decimals: {text!r}")
    return value


def _share(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite() or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("the pooled share is from 0 to 1")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"a whole number above 0: {text!r}")
    return int(text)


def _seconds_or_off(text: str) -> int | None:
    return None if text.lower() == "off" else _positive_int(text)

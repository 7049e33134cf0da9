"""The sandbox insurance platform over HTTP: the contract of :mod:`insurance.wire`, served by FastAPI.

``create_app`` puts a :class:`~insurance.sandbox.SandboxPlatform` behind the contract's routes, signed
as the contract says; ``yibao sandbox serve`` runs it. The published ``insurance/openapi.json`` is this
app's OpenAPI document (``tools/make_openapi.py`` writes it). The sandbox's admin routes (``/admin/...``:
spend, credit, lock, maintenance...) are signed like the rest but left out of the published contract:
a real platform has none.

Every error is an ``application/problem+json`` document (:class:`insurance.wire.Problem`) whose status
is ``wire.STATUS_OF[code]``; a request the contract does not define (a bad body or parameter, an unknown
path, a wrong method) is ``invalid_request`` with 400, 404 or 405. No problem detail ever holds an ID
number or a phone number: details are the platform's own words, request-validation messages name the
field and never the value, and anything shaped like either number is blanked on the way out.
"""

from __future__ import annotations

import heapq
import http
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import uvicorn
from fastapi import Body, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from insurance import wire
from insurance.models import (
    Balance,
    Capabilities,
    Category,
    Contributions,
    DrugPage,
    ErrorCode,
    Family,
    GeoPoint,
    InstitutionKind,
    InstitutionPage,
    InsuranceError,
    Member,
    MemberLookup,
    TransactionPage,
    Verification,
    Voucher,
)
from insurance.sandbox import MAX_PAGE, DemoPerson, SandboxPlatform

__all__ = [
    "API_TITLE",
    "API_VERSION",
    "DEMO_SECRET",
    "MAX_BODY_BYTES",
    "MAX_NONCES",
    "create_app",
    "is_loopback",
    "openapi_document",
    "serve",
]

API_TITLE = "Yibao insurance platform contract"
API_VERSION = "1.1.0"
"""1.1 added, and only added: capabilities, institutions, drugs, voucher, contributions, family, the
face check (``verification_required`` and ``/v1/verifications``) and ``local_card_number``. A 1.0
client never calls them, and a 1.0 platform is one whose capabilities are empty."""
MAX_LIST = 50
"""The largest ``limit`` of the institution and drug lists."""
DEMO_SECRET = b"yibao-sandbox-demo-secret"
"""The well-known secret ``yibao sandbox serve`` uses on a loopback address when given none."""
MAX_NONCES = 100_000
"""Nonces remembered at most; past that the server answers ``rate_limited`` rather than forget one."""
MAX_BODY_BYTES = 64 * 1024
"""The largest request body read (a full batch is about 7 KB)."""

AUTH_SCHEME = "YibaoSignature"
"""Named in the ``WWW-Authenticate`` header of a 401."""

# RFC 3339, as OpenAPI's ``format: date-time`` says: pydantic alone would also take "0.5" (Unix seconds).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("not an RFC 3339 date-time with an offset, e.g. 2026-11-24T10:00:00+08:00")
    return value


_DateTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]

# The sandbox's own people, one per scenario: examples in the contract, and the cases schemathesis
# tries first.
_EXAMPLE_MEMBERS = {
    "normal": "sbx-110101-0001",
    "resident": "sbx-110101-0003",
    "locked": "sbx-110101-0004",
    "syncing": "sbx-310101-0002",
    "maintenance": "sbx-510107-0001",
}
_MEMBER_ID = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        description="The platform's member id.",
        openapi_examples={
            name: {"summary": f"a sandbox member: {name}", "value": member_id}
            for name, member_id in _EXAMPLE_MEMBERS.items()
        },
    ),
]

DESCRIPTION = f"""\
How Yibao, the chat bot for checking a medical-insurance (医保) balance, talks to an insurance
platform: look a member up by name and Resident ID number, read a balance, page through
transactions, and read many balances at once for low-balance alerts. Money is a decimal string in
yuan with at most two decimals; times are ISO 8601 with an offset.

## Signing

Every request except `GET {wire.PATH_HEALTH}` is signed with HMAC-SHA256 under a secret shared per key
id. We chose signing over a bare API-key header because the secret never travels (a leaked log or
proxy trace of a request does not let anyone make new ones), a request cannot be altered in flight,
and the timestamp plus nonce make a captured request useless: older than {wire.MAX_SKEW_SECONDS} seconds
it is refused, and inside that window the server refuses a nonce it has already seen.

The signed text is six lines joined by `\\n`:

```
METHOD            upper case, e.g. GET
path              as sent, percent-encoded, e.g. /v1/members/sbx-110101-0001/balance
query             the raw query string as sent, without "?"; empty when there is none
timestamp         the {wire.HEADER_TIMESTAMP} header
nonce             the {wire.HEADER_NONCE} header
body hash         lower-case hex SHA-256 of the body bytes (of the empty string when there is none)
```

and sent in four headers:

| header | value |
|---|---|
| `{wire.HEADER_KEY_ID}` | the key id the secret belongs to |
| `{wire.HEADER_TIMESTAMP}` | Unix seconds, an integer; within {wire.MAX_SKEW_SECONDS} s of the server's clock |
| `{wire.HEADER_NONCE}` | 16 to 64 characters of `[A-Za-z0-9_-]`, new for every request |
| `{wire.HEADER_SIGNATURE}` | `v1=` and the lower-case hex HMAC-SHA256 of the signed text |

A request that fails any of this is answered 401 with the problem code `unauthorized`.

## Errors

Every error is an RFC 9457 `application/problem+json` document with a stable `code`:
`member_not_found` 404, `identity_mismatch` 409, `account_locked` 423 (with `until` when known),
`maintenance` 503 and `rate_limited` 429 (with `retry_after` seconds, also sent as `Retry-After`),
`unauthorized` 401, `invalid_request` 400 (or 404/405 for a path or method this contract does not
define). Problem details never contain an ID number or a phone number.
"""


# --- bodies of the admin routes (not in the published contract) ---------------------------------


class _AdminModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SpendRequest(_AdminModel):
    amount: Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=2)]
    place: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    category: Category = Category.PHARMACY
    pooled_share: Annotated[Decimal, Field(ge=0, le=1)] = Decimal(0)


class CreditRequest(_AdminModel):
    amount: Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=2)]
    place: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class LockRequest(_AdminModel):
    until: AwareDatetime | None = None


class SyncDelayRequest(_AdminModel):
    seconds: Annotated[int, Field(gt=0)] | None


class FaceCheckRequest(_AdminModel):
    passed: bool


class MaintenanceRequest(_AdminModel):
    on: bool
    retry_after_seconds: Annotated[int, Field(gt=0)] = 1800


# --- problems -----------------------------------------------------------------------------------


def _problem_of(error: InsuranceError, status: int | None = None) -> wire.Problem:
    """The problem document for a platform error (also used for a batch item)."""
    status = status or wire.STATUS_OF.get(error.code, 500)
    retry_after = None if error.retry_after is None else max(0, math.ceil(error.retry_after))
    return wire.Problem(
        title=http.HTTPStatus(status).phrase,
        status=status,
        code=error.code,
        detail=wire.scrub(error.detail),
        until=error.until,
        retry_after=retry_after,
        verification_url=error.verification_url,
        ticket=error.ticket,
    )


def _problem_response(problem: wire.Problem, headers: Mapping[str, str] | None = None) -> JSONResponse:
    out = dict(headers or {})
    if problem.retry_after is not None:
        out["Retry-After"] = str(problem.retry_after)
    if problem.code is ErrorCode.UNAUTHORIZED:
        out["WWW-Authenticate"] = AUTH_SCHEME
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=problem.status,
        headers=out,
        media_type=wire.PROBLEM_MEDIA_TYPE,
    )


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(part) for part in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


async def _on_insurance_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InsuranceError)
    return _problem_response(_problem_of(exc))


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    error = InsuranceError(ErrorCode.INVALID_REQUEST, _validation_detail(exc))
    return _problem_response(_problem_of(error))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code if 400 <= exc.status_code <= 599 else 500
    detail = {404: "no such route", 405: "method not allowed on this route"}.get(status, "")
    code = ErrorCode.INVALID_REQUEST if status < 500 else ErrorCode.UNAVAILABLE
    return _problem_response(_problem_of(InsuranceError(code, detail), status), exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    error = InsuranceError(ErrorCode.UNAVAILABLE, "internal error")
    return _problem_response(_problem_of(error, 500))


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry documenting a route's problem answers."""
    reasons = {
        400: "`invalid_request`: a body or parameter this contract does not accept.",
        401: "`unauthorized`: the request is not signed, or not signed right (see the description).",
        404: "`member_not_found`: no such member.",
        409: "`identity_mismatch`: the name does not match the ID number.",
        423: "`account_locked`: locked on the platform; `until` says when the lock ends, if known.",
        429: "`rate_limited`: too many requests; wait `retry_after` seconds.",
        503: "`maintenance`: the member's region is in maintenance; come back in `retry_after` seconds.",
        428: "`verification_required`: the platform's face check first: send the person to "
        "`verification_url`, then follow `ticket` at `GET /v1/verifications/{ticket}`.",
        -404: "`not_supported`: this platform does not serve it (see `/v1/capabilities`); "
        "`member_not_found` for an unknown member or ticket.",
    }
    retry_after = {
        "Retry-After": {
            "description": "Seconds to wait, as in the problem's `retry_after`.",
            "schema": {"type": "integer", "minimum": 0},
        }
    }
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        reason = reasons[status]
        if status < 0:
            status = -status
        entry: dict[str, Any] = {
            "description": reason,
            "content": {wire.PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if status in (429, 503):
            entry["headers"] = retry_after
        out[status] = entry
    return out


# --- signatures ---------------------------------------------------------------------------------


class _Nonces:
    """Nonces seen per key id, each kept until its request's timestamp is too old to be accepted."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._expiry: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, str, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, key_id: str, nonce: str, *, expires: float, now: float) -> bool:
        """Remember a nonce; False when it was already seen. Raises ``rate_limited`` when full."""
        while self._heap and self._heap[0][0] < now:
            _, old_key, old_nonce = heapq.heappop(self._heap)
            self._expiry.pop((old_key, old_nonce), None)
        if (key_id, nonce) in self._expiry:
            return False
        if len(self._expiry) >= self._capacity:
            wait = self._heap[0][0] - now if self._heap else wire.MAX_SKEW_SECONDS
            raise InsuranceError(
                ErrorCode.RATE_LIMITED, "too many requests in the signing window", retry_after=wait + 1
            )
        self._expiry[key_id, nonce] = expires
        heapq.heappush(self._heap, (expires, key_id, nonce))
        return True


class _Verifier:
    def __init__(self, keys: Mapping[str, bytes], clock: Callable[[], datetime], max_nonces: int) -> None:
        self.keys = dict(keys)
        self.clock = clock
        self.nonces = _Nonces(max_nonces)

    async def verify(self, request: Request) -> None:
        """Raise ``unauthorized`` unless the request is signed by a known key with a new nonce."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise InsuranceError(ErrorCode.INVALID_REQUEST, "the body is too large")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise InsuranceError(ErrorCode.INVALID_REQUEST, "the body is too large")
        scope = request.scope
        raw = scope.get("raw_path")
        raw_path = raw.decode("latin-1") if isinstance(raw, bytes) else scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        now = self.clock()
        reason: str | None = None
        # The path as sent is what the contract signs; the decoded form is accepted too, so a client
        # that signs ``/v1/members/会员/balance`` unencoded is not refused for a formality.
        for path in dict.fromkeys((raw_path, scope["path"])):
            reason = wire.check_signature(
                self.keys, request.headers, method=request.method, path=path, query=query, body=body, now=now
            )
            if reason is None:
                break
        if reason is not None:
            raise InsuranceError(ErrorCode.UNAUTHORIZED, reason)
        key_id = request.headers[wire.HEADER_KEY_ID]
        expires = float(int(request.headers[wire.HEADER_TIMESTAMP]) + wire.MAX_SKEW_SECONDS)
        if not self.nonces.add(
            key_id, request.headers[wire.HEADER_NONCE], expires=expires, now=now.timestamp()
        ):
            raise InsuranceError(ErrorCode.UNAUTHORIZED, "nonce already used")


class _SignedRoute(APIRoute):
    """A route that checks the request's signature and nonce before FastAPI reads its parameters."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def signed(request: Request) -> Response:
            verifier: _Verifier = request.app.state.verifier
            await verifier.verify(request)
            response: Response = await handler(request)
            return response

        return signed


# --- the app ------------------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    platform: SandboxPlatform,
    *,
    keys: Mapping[str, bytes],
    clock: Callable[[], datetime] | None = None,
    admin: bool = True,
    max_nonces: int = MAX_NONCES,
) -> FastAPI:
    """The sandbox platform as an ASGI app.

    ``keys`` maps key ids to their secrets; ``clock`` (aware datetimes; default: now) is the server's
    clock for signature timestamps and ``/v1/health`` — the platform keeps its own. ``admin`` mounts the
    sandbox's admin routes. ``max_nonces`` bounds the memory of seen nonces.
    """
    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.verifier = _Verifier(keys, clock or _utc_now, max_nonces)
    app.add_exception_handler(InsuranceError, _on_insurance_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)

    api = APIRouter(route_class=_SignedRoute, tags=["members"])

    @api.post(
        wire.PATH_LOOKUP,
        operation_id="lookupMember",
        summary="Find a member by real name and Resident ID number",
        responses=_problems(400, 401, 404, 409, 423, 428, 429, 503),
    )
    async def lookup(query: MemberLookup) -> Member:
        """Checks, in order: the ID number is known, the member's region is not in maintenance, the
        name matches (compared after NFKC, ignoring whitespace, any middle dot alike), the local
        card number matches where the platform needs it, the account is not locked. A platform with
        a face check then answers `verification_required`. The phone number in the answer is where
        the bot sends its SMS code."""
        return await platform.lookup(query)

    @api.get(
        wire.PATH_CAPABILITIES,
        operation_id="getCapabilities",
        summary="What this platform serves beyond the balance, and what its bind needs",
        responses=_problems(400, 401, 429),
        tags=["capabilities"],
    )
    async def capabilities() -> Capabilities:
        """A platform that answers 404 here is a contract-1.0 platform: it serves nothing extra."""
        return platform.capabilities()

    @api.get(
        wire.PATH_VERIFICATION,
        operation_id="getVerification",
        summary="Where a face check that a lookup asked for stands",
        responses=_problems(400, 401, -404, 429),
    )
    async def verification(ticket: Annotated[str, Path(min_length=1, max_length=128)]) -> Verification:
        """`passed` carries the member, as a lookup would have; `failed` and `expired` end the bind."""
        return await platform.verification(ticket)

    @api.get(
        wire.PATH_INSTITUTIONS,
        operation_id="listInstitutions",
        summary="Designated hospitals and pharmacies (定点医药机构)",
        responses=_problems(400, 401, -404, 429),
        tags=["catalogues"],
    )
    async def institutions(
        region: Annotated[
            str | None, Query(pattern=r"^\d{2,6}$", description="Leading digits of the area code.")
        ] = None,
        kind: Annotated[InstitutionKind | None, Query()] = None,
        q: Annotated[
            str | None, Query(min_length=1, max_length=64, description="Part of a name or address.")
        ] = None,
        near: Annotated[
            str | None,
            Query(
                pattern=r"^-?\d{1,2}(\.\d{1,8})?,-?\d{1,3}(\.\d{1,8})?$",
                description="`lat,lon` (WGS 84): nearest first, each with `distance_m`.",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 10,
        cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
    ) -> InstitutionPage:
        point = None
        if near is not None:
            lat, lon = (float(x) for x in near.split(","))
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise InsuranceError(ErrorCode.INVALID_REQUEST, "near: latitude or longitude out of range")
            point = GeoPoint(lat=lat, lon=lon)
        try:
            return await platform.institutions(
                region=region, kind=kind, q=q, near=point, limit=limit, cursor=cursor
            )
        except ValueError as e:
            raise InsuranceError(ErrorCode.INVALID_REQUEST, str(e)) from None

    @api.get(
        wire.PATH_DRUGS,
        operation_id="listDrugs",
        summary="The reimbursement drug list (医保药品目录)",
        responses=_problems(400, 401, -404, 429),
        tags=["catalogues"],
    )
    async def drugs(
        q: Annotated[
            str | None, Query(min_length=1, max_length=64, description="Part of a generic name.")
        ] = None,
        region: Annotated[
            str | None, Query(pattern=r"^\d{6}$", description="An area code: its self-pay share.")
        ] = None,
        member_id: Annotated[
            str | None,
            Query(min_length=1, max_length=64, description="A member: their region's self-pay share."),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 10,
        cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
    ) -> DrugPage:
        """`self_pay_share` is given for `region`, or for the region of `member_id`, where known."""
        try:
            return await platform.drugs(q=q, region=region, member_id=member_id, limit=limit, cursor=cursor)
        except ValueError as e:
            raise InsuranceError(ErrorCode.INVALID_REQUEST, str(e)) from None

    @api.get(
        wire.PATH_VOUCHER,
        operation_id="getVoucher",
        summary="The member's e-voucher (医保电子凭证) as the platform issues it",
        responses=_problems(400, 401, -404, 423, 429, 503),
    )
    async def voucher(member_id: _MEMBER_ID) -> Voucher:
        """`qr_payload` only from a certified issuer, valid until `expires_at`."""
        return await platform.voucher(member_id)

    @api.get(
        wire.PATH_CONTRIBUTIONS,
        operation_id="listContributions",
        summary="Contribution months and the monthly credit into the personal account",
        responses=_problems(400, 401, -404, 423, 429, 503),
    )
    async def contributions(
        member_id: _MEMBER_ID, months: Annotated[int, Query(ge=1, le=36)] = 12
    ) -> Contributions:
        """Newest first; `base × rate` is the month's `credit`."""
        return await platform.contributions(member_id, months=months)

    @api.get(
        wire.PATH_FAMILY,
        operation_id="getFamily",
        summary="Family members who may use the personal account (家庭共济), and their spending",
        responses=_problems(400, 401, -404, 423, 429, 503),
    )
    async def family(member_id: _MEMBER_ID) -> Family:
        return await platform.family(member_id)

    @api.get(
        wire.PATH_BALANCE,
        operation_id="getBalance",
        summary="A member's personal account and this year's pooled fund",
        responses=_problems(400, 401, 404, 423, 429, 503),
    )
    async def balance(member_id: _MEMBER_ID) -> Balance:
        """`sync_status: delayed` means the figures are the last known ones, as of `as_of`."""
        return await platform.balance(member_id)

    @api.get(
        wire.PATH_TRANSACTIONS,
        operation_id="listTransactions",
        summary="A member's transactions, newest first",
        responses=_problems(400, 401, 404, 423, 429, 503),
    )
    async def transactions(
        member_id: _MEMBER_ID,
        start: Annotated[_DateTime | None, Query(description="Only at or after this time.")] = None,
        end: Annotated[_DateTime | None, Query(description="Only before this time.")] = None,
        cursor: Annotated[
            str | None, Query(min_length=1, max_length=512, description="`next_cursor` of the previous page.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Transactions a page.")] = 20,
    ) -> TransactionPage:
        """Pass `next_cursor` back, with the same `start` and `end`, for the next page."""
        try:
            return await platform.transactions(member_id, start=start, end=end, cursor=cursor, limit=limit)
        except ValueError as e:
            raise InsuranceError(ErrorCode.INVALID_REQUEST, str(e)) from None

    @api.post(
        wire.PATH_BATCH,
        operation_id="getBalances",
        summary="Many members' balances at once",
        responses=_problems(400, 401, 429),
    )
    async def batch(
        request: Annotated[
            wire.BatchBalanceRequest,
            Body(
                openapi_examples={
                    "mixed": {
                        "summary": "sandbox members in every state, and one unknown",
                        "value": {"member_ids": [*_EXAMPLE_MEMBERS.values(), "sbx-000000-0000"]},
                    }
                }
            ),
        ],
    ) -> wire.BatchBalanceResponse:
        """One item per requested member id, in order: a `balance`, or a `problem` for that member
        alone (not found, locked, in maintenance)."""
        items = []
        for member_id in request.member_ids:
            try:
                items.append(
                    wire.BatchBalanceItem(member_id=member_id, balance=await platform.balance(member_id))
                )
            except InsuranceError as e:
                items.append(wire.BatchBalanceItem(member_id=member_id, problem=_problem_of(e)))
        return wire.BatchBalanceResponse(items=items)

    @app.get(wire.PATH_HEALTH, operation_id="health", summary="Liveness; not signed", tags=["health"])
    async def health() -> wire.Health:
        """`degraded` while a region is in maintenance."""
        regions = platform.regions_in_maintenance()
        now = app.state.verifier.clock()
        return wire.Health(status="degraded" if regions else "ok", regions_in_maintenance=regions, time=now)

    app.include_router(api)
    if admin:
        app.include_router(_admin_router(platform))
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _admin_router(platform: SandboxPlatform) -> APIRouter:
    """The operator's hand on the sandbox: signed like the contract's routes, absent from its schema."""
    admin = APIRouter(prefix="/admin", route_class=_SignedRoute, include_in_schema=False)
    no_content: dict[str, Any] = {"status_code": 204, "response_class": Response}

    def refused(e: ValueError) -> InsuranceError:
        return InsuranceError(ErrorCode.INVALID_REQUEST, str(e))

    @admin.post("/members/{member_id}/spend")
    async def spend(member_id: _MEMBER_ID, body: SpendRequest) -> Balance:
        extra = {"place": body.place} if body.place else {}
        try:
            return platform.spend(
                member_id, body.amount, category=body.category, pooled_share=body.pooled_share, **extra
            )
        except ValueError as e:
            raise refused(e) from None

    @admin.post("/members/{member_id}/credit")
    async def credit(member_id: _MEMBER_ID, body: CreditRequest) -> Balance:
        try:
            if body.place:
                return platform.credit(member_id, body.amount, place=body.place)
            return platform.credit(member_id, body.amount)
        except ValueError as e:
            raise refused(e) from None

    @admin.post("/members/{member_id}/lock", **no_content)
    async def lock(member_id: _MEMBER_ID, body: Annotated[LockRequest | None, Body()] = None) -> Response:
        try:
            platform.lock(member_id, body.until if body else None)
        except ValueError as e:
            raise refused(e) from None
        return Response(status_code=204)

    @admin.post("/members/{member_id}/unlock", **no_content)
    async def unlock(member_id: _MEMBER_ID) -> Response:
        platform.unlock(member_id)
        return Response(status_code=204)

    @admin.post("/members/{member_id}/sync-delay", **no_content)
    async def sync_delay(member_id: _MEMBER_ID, body: SyncDelayRequest) -> Response:
        platform.set_sync_delay(member_id, body.seconds)
        return Response(status_code=204)

    @admin.post("/regions/{region}/maintenance", **no_content)
    async def maintenance(region: Annotated[str, Path(max_length=16)], body: MaintenanceRequest) -> Response:
        try:
            platform.set_maintenance(region, body.on, body.retry_after_seconds)
        except ValueError as e:
            raise refused(e) from None
        return Response(status_code=204)

    @admin.post("/members/{member_id}/face-check")
    async def face_check(member_id: _MEMBER_ID, body: FaceCheckRequest) -> dict[str, str]:
        try:
            return {"ticket": platform.finish_face_check(member_id, body.passed)}
        except ValueError as e:
            raise refused(e) from None

    @admin.get("/people")
    async def people() -> list[DemoPerson]:
        return platform.people()

    return admin


_SECURITY_SCHEMES = {
    "YibaoKeyId": (wire.HEADER_KEY_ID, "The key id whose secret signed the request."),
    "YibaoTimestamp": (wire.HEADER_TIMESTAMP, "Unix seconds when the request was signed."),
    "YibaoNonce": (wire.HEADER_NONCE, "16 to 64 characters of `[A-Za-z0-9_-]`, new for every request."),
    "YibaoSignature": (wire.HEADER_SIGNATURE, "`v1=` and the hex HMAC-SHA256 of the signed text."),
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, made to say what the server does: problems, not FastAPI's 422s; signatures."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    if "Problem" not in schemas:  # pragma: no cover - it is reached through the batch answer today
        schemas["Problem"] = wire.Problem.model_json_schema(
            mode="serialization", ref_template="#/components/schemas/{model}"
        )
    components["securitySchemes"] = {
        name: {"type": "apiKey", "in": "header", "name": header, "description": description}
        for name, (header, description) in _SECURITY_SCHEMES.items()
    }
    signed: list[dict[str, list[str]]] = [{name: [] for name in _SECURITY_SCHEMES}]
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
            operation["security"] = [] if path == wire.PATH_HEALTH else signed
    app.openapi_schema = schema
    return schema


def openapi_document() -> str:
    """The published contract, ``insurance/openapi.json``, as ``tools/make_openapi.py`` writes it."""
    app = create_app(SandboxPlatform.from_file(), keys={}, admin=False)
    return json.dumps(app.openapi(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run ``app`` with uvicorn until interrupted (warnings and errors logged only)."""
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False, proxy_headers=False)

"""The HTTP side of the insurance contract: paths, problem documents, batch shapes and request signing.

The models in ``insurance.models`` are the bodies; this module is what both ends of the wire share:
the sandbox server (``insurance.server``) and the client (``insurance.client``). The published
OpenAPI document, ``insurance/openapi.json``, is generated from the server.

Authentication: every request except ``GET /v1/health`` is signed with HMAC-SHA256 over the method,
path, query, a timestamp, a nonce and the body's SHA-256, under a secret shared per key id. We chose
signing over a bare API-key header because the secret never travels (a leaked log or proxy trace of a
request does not let anyone make new ones), a request cannot be altered in flight, and the timestamp
plus nonce make a captured request useless: older than ``MAX_SKEW_SECONDS`` it is refused, and inside
that window the server refuses a nonce it has already seen.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from insurance.models import Balance, ErrorCode

PATH_LOOKUP = "/v1/members/lookup"
"""POST ``MemberLookup`` -> ``Member``."""
PATH_BALANCE = "/v1/members/{member_id}/balance"
"""GET -> ``Balance``."""
PATH_TRANSACTIONS = "/v1/members/{member_id}/transactions"
"""GET ``?start=&end=&cursor=&limit=`` (ISO times, limit 1..100) -> ``TransactionPage``, newest first."""
PATH_BATCH = "/v1/balances/batch"
"""POST ``BatchBalanceRequest`` -> ``BatchBalanceResponse`` (one item per member id, in order)."""
PATH_CAPABILITIES = "/v1/capabilities"
"""GET -> ``Capabilities`` (contract 1.1; a 1.0 platform answers 404: it serves nothing extra)."""
PATH_INSTITUTIONS = "/v1/institutions"
"""GET ``?region=&kind=&q=&near=lat,lon&limit=&cursor=`` -> ``InstitutionPage`` (nearest first with ``near``)."""
PATH_DRUGS = "/v1/drugs"
"""GET ``?q=&region=&limit=&cursor=`` -> ``DrugPage``."""
PATH_VOUCHER = "/v1/members/{member_id}/voucher"
"""GET -> ``Voucher``."""
PATH_CONTRIBUTIONS = "/v1/members/{member_id}/contributions"
"""GET ``?months=`` -> ``Contributions``, newest first."""
PATH_FAMILY = "/v1/members/{member_id}/family"
"""GET -> ``Family``."""
PATH_VERIFICATION = "/v1/verifications/{ticket}"
"""GET -> ``Verification``: where the face check a lookup asked for stands."""
PATH_HEALTH = "/v1/health"
"""GET -> ``Health``; not signed, so load balancers can call it."""

PROBLEM_MEDIA_TYPE = "application/problem+json"
MAX_BATCH = 100

HEADER_KEY_ID = "X-Yibao-Key-Id"
HEADER_TIMESTAMP = "X-Yibao-Timestamp"
"""Unix seconds, an integer, as text."""
HEADER_NONCE = "X-Yibao-Nonce"
"""16 to 64 characters of ``[A-Za-z0-9_-]``, new for every request."""
HEADER_SIGNATURE = "X-Yibao-Signature"
"""``v1=<hex HMAC-SHA256 of canonical_request(...)>``."""
MAX_SKEW_SECONDS = 300

STATUS_OF: Mapping[ErrorCode, int] = {
    ErrorCode.MEMBER_NOT_FOUND: 404,
    ErrorCode.IDENTITY_MISMATCH: 409,
    ErrorCode.ACCOUNT_LOCKED: 423,
    ErrorCode.SYNC_DELAYED: 503,
    ErrorCode.MAINTENANCE: 503,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.UNAVAILABLE: 502,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.VERIFICATION_REQUIRED: 428,
    ErrorCode.NOT_SUPPORTED: 404,
}
"""The HTTP status each problem code is sent with."""


class Problem(BaseModel):
    """An error answer (RFC 9457 ``application/problem+json``) with a stable ``code``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: str = "about:blank"
    title: str
    status: Annotated[int, Field(ge=400, le=599)]
    code: ErrorCode
    detail: str = ""
    until: AwareDatetime | None = None
    """``account_locked``: when the lock ends, if known."""
    retry_after: Annotated[int, Field(ge=0)] | None = None
    """``maintenance``, ``rate_limited``: seconds to wait (also sent as the ``Retry-After`` header)."""
    verification_url: Annotated[str, Field(pattern=r"^https://")] | None = None
    """``verification_required``: the platform's own face-check page, to send the person to."""
    ticket: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    """``verification_required``: follow it at ``GET /v1/verifications/{ticket}``."""


class BatchBalanceRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    member_ids: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1, max_length=MAX_BATCH)
    ]


class BatchBalanceItem(BaseModel):
    """Exactly one of ``balance`` and ``problem`` is set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    member_id: str
    balance: Balance | None = None
    problem: Problem | None = None


class BatchBalanceResponse(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    items: list[BatchBalanceItem]


class Health(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["ok", "degraded"]
    regions_in_maintenance: list[str] = []
    time: AwareDatetime


_PERSONAL = re.compile(r"\d[\dXx]{10,}")
"""An ID number (17 digits and a check character), a mobile number, or any digit run as long."""


def scrub(text: str) -> str:
    """A problem's detail with anything shaped like an ID or phone number taken out: details are
    logged and shown, and must not carry what a lookup was about."""
    return _PERSONAL.sub("***", text)


def canonical_request(method: str, path: str, query: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """What is signed: one field a line.

    ``path`` is the path as sent, percent-encoded (httpx: ``request.url.raw_path`` up to the ``?``);
    ``query`` is the raw query string as sent (no ``?``).
    """
    return "\n".join(
        (method.upper(), path, query, timestamp, nonce, hashlib.sha256(body).hexdigest())
    ).encode()


def sign(secret: bytes, method: str, path: str, query: str, timestamp: str, nonce: str, body: bytes) -> str:
    mac = hmac.new(secret, canonical_request(method, path, query, timestamp, nonce, body), hashlib.sha256)
    return "v1=" + mac.hexdigest()


def check_signature(
    secrets: Mapping[str, bytes],
    headers: Mapping[str, str],
    *,
    method: str,
    path: str,
    query: str,
    body: bytes,
    now: datetime,
) -> str | None:
    """None when the request is signed by a known key within the allowed skew, else why not.

    Nonce replay is the server's to check (it must remember nonces for ``MAX_SKEW_SECONDS``).
    ``headers`` must be case-insensitive (as Starlette's and httpx's are).
    """
    key_id = headers.get(HEADER_KEY_ID, "")
    timestamp = headers.get(HEADER_TIMESTAMP, "")
    nonce = headers.get(HEADER_NONCE, "")
    signature = headers.get(HEADER_SIGNATURE, "")
    if not (key_id and timestamp and nonce and signature):
        return "missing signature headers"
    secret = secrets.get(key_id)
    if secret is None:
        return "unknown key id"
    if not timestamp.isdigit() or abs(now.timestamp() - int(timestamp)) > MAX_SKEW_SECONDS:
        return "timestamp missing or too far from the server's clock"
    if not (16 <= len(nonce) <= 64) or not all(c.isalnum() or c in "-_" for c in nonce):
        return "malformed nonce"
    expected = sign(secret, method, path, query, timestamp, nonce, body)
    if not hmac.compare_digest(expected, signature):
        return "bad signature"
    return None

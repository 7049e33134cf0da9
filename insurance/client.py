"""The HTTP client every insurance platform is reached through, the embedded sandbox included.

One :class:`HttpPlatformClient` per platform: one connection pool (so connections are reused), a cap
on requests in flight, a deadline per call, retries with full-jitter backoff where a retry is safe, and
a circuit breaker so a platform that is down costs a user a fast "unavailable", not a wait.

What an answer means (see :mod:`insurance.wire` for the contract):

- 2xx: the data, parsed into the model. A body that is not JSON or breaks the model is a failure
  (``unavailable``): the platform is not working as it should.
- A problem document (``application/problem+json``, or any 4xx/5xx whose body parses as
  :class:`~insurance.wire.Problem`) becomes :class:`~insurance.models.InsuranceError` with the problem's
  code, detail, ``until`` and ``retry_after`` (the body's, else the ``Retry-After`` header's).
- The platform's word, never retried and never held against it by the breaker: ``member_not_found``,
  ``identity_mismatch``, ``account_locked``, ``unauthorized``, an invalid request (any other 4xx) and
  ``maintenance``/``sync_delayed`` without a time to come back.
- "Come back later" (429, ``rate_limited``, and 503 or ``maintenance``/``sync_delayed`` with a
  Retry-After): retried after that many seconds when that is at most
  ``ClientPolicy.max_retry_after_seconds``, ends before the deadline and a retry is left; otherwise
  raised at once as ``rate_limited``/``maintenance`` with ``retry_after``. Not a breaker failure either.
- Failures: other 5xx (and 408), a malformed 2xx body, timeouts, connection errors. They count
  towards the breaker (once per call, however many attempts it made) and end as ``unavailable``.
  Any answer that is not a failure shows the platform is up: it resets the breaker's count and, for
  the half-open trial, closes it. An open breaker fails calls fast as ``unavailable``.

Nothing personal reaches an exception message or a log line: the lookup body (name, ID number) is
never logged, problem details are scrubbed of anything shaped like an ID or mobile number, and
validation errors (which quote their input, a phone number say) are not chained.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from insurance import wire
from insurance.models import (
    Balance,
    Capabilities,
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
from insurance.resilience import BreakerState, CircuitBreaker, Ticket, full_jitter

__all__ = ["ClientPolicy", "HttpPlatformClient"]

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

MAX_PAGE = 100
"""The largest ``limit`` of ``transactions`` the contract allows."""

_JSON = "application/json"
_PLATFORMS_WORD = frozenset(
    {
        ErrorCode.MEMBER_NOT_FOUND,
        ErrorCode.IDENTITY_MISMATCH,
        ErrorCode.ACCOUNT_LOCKED,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.INVALID_REQUEST,
        ErrorCode.VERIFICATION_REQUIRED,
        ErrorCode.NOT_SUPPORTED,
    }
)
_COME_BACK = frozenset({ErrorCode.MAINTENANCE, ErrorCode.SYNC_DELAYED})


def sign_request(request: httpx.Request, *, key_id: str, secret: bytes, now: datetime) -> None:
    """Add ``insurance.wire``'s signature headers to a built request: the path and query exactly as
    they will be sent, a fresh nonce, and the body's bytes."""
    path, _, query = request.url.raw_path.decode("ascii").partition("?")
    timestamp = str(int(now.timestamp()))
    nonce = secrets.token_urlsafe(18)
    request.headers[wire.HEADER_KEY_ID] = key_id
    request.headers[wire.HEADER_TIMESTAMP] = timestamp
    request.headers[wire.HEADER_NONCE] = nonce
    request.headers[wire.HEADER_SIGNATURE] = wire.sign(
        secret, request.method, path, query, timestamp, nonce, request.content
    )


@dataclass(frozen=True)
class ClientPolicy:
    """How patient a client is with one platform. The defaults suit a person waiting in a chat."""

    timeout_seconds: float = 5.0
    """One attempt: httpx read, write and pool timeout (never more than the time left)."""
    connect_timeout_seconds: float = 2.0
    deadline_seconds: float = 8.0
    """The whole call, retries and waits included: the user gets an answer by then."""
    retries: int = 2
    """Extra attempts after the first."""
    backoff_base_seconds: float = 0.2
    """Full-jitter exponential backoff: ``random(0, min(max, base * 2**attempt))``."""
    backoff_max_seconds: float = 2.0
    max_retry_after_seconds: float = 5.0
    """Honour Retry-After up to this (and never past the deadline); longer -> give up at once."""
    max_concurrency: int = 20
    """Requests in flight to this platform."""
    breaker_failures: int = 5
    """Consecutive failed calls that open the breaker."""
    breaker_reset_seconds: float = 30.0
    """Open -> half-open after this; one trial call; success closes, failure re-opens."""

    def __post_init__(self) -> None:
        if min(self.timeout_seconds, self.connect_timeout_seconds, self.deadline_seconds) <= 0:
            raise ValueError("timeouts and the deadline must be positive")
        if self.retries < 0 or self.max_concurrency < 1 or self.breaker_failures < 1:
            raise ValueError("retries must be >= 0, max_concurrency and breaker_failures >= 1")


# --- what one attempt came to ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Done(Generic[T]):
    value: T


@dataclass(frozen=True, slots=True)
class _Answer:
    """The platform's word: raise it, no retry, not a failure."""

    error: InsuranceError


@dataclass(frozen=True, slots=True)
class _ComeBack:
    """The platform asks us to wait (``retry_after`` seconds, or unknown): it did not act on the request."""

    error: InsuranceError
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class _Failure:
    outcome: str
    """For the log: the HTTP status or the exception's class, never a body."""
    maybe_processed: bool = True
    """False only when the request certainly never reached the platform (connect errors)."""


_Outcome = _Done[T] | _Answer | _ComeBack | _Failure


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    method: Literal["GET", "POST"]
    template: str
    path: str
    parse: Callable[[bytes], T]
    idempotent: bool
    params: Mapping[str, str] | None = None
    body: bytes | None = None
    signed: bool = True


class HttpPlatformClient:
    """One insurance platform over HTTP, speaking :mod:`insurance.wire`.

    ``transport`` replaces the network (``httpx.ASGITransport(app)`` runs a platform in-process over
    this same code). ``clock`` (monotonic seconds) drives deadlines and the breaker; ``wall_clock``
    (aware datetime) the signature timestamps and HTTP-date Retry-After.

    Retries. ``balance``, ``transactions``, ``health`` and the batch ``balances`` are reads: running one
    twice does no harm, so they are retried after any failure. ``lookup`` is a POST that may start
    something on the platform (an audit record, a count towards an identity-check lock), and a read
    timeout, a dropped connection or a 5xx do not tell us whether it was processed: it is retried
    only when it certainly was not, that is after a connect error or connect timeout (nothing was sent)
    or a 429/503 "come back after N seconds". A user whose lookup failed can simply try again.
    """

    def __init__(
        self,
        base_url: str,
        *,
        key_id: str,
        secret: bytes,
        policy: ClientPolicy = ClientPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
        name: str = "platform",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self._key_id = key_id
        self._secret = secret
        self._clock = clock
        self._wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self._breaker = CircuitBreaker(policy.breaker_failures, policy.breaker_reset_seconds, clock)
        self._slots = asyncio.Semaphore(policy.max_concurrency)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            limits=httpx.Limits(
                max_connections=policy.max_concurrency, max_keepalive_connections=policy.max_concurrency
            ),
            timeout=httpx.Timeout(policy.timeout_seconds, connect=policy.connect_timeout_seconds),
            headers={"Accept": f"{_JSON}, {wire.PROBLEM_MEDIA_TYPE}"},
        )

    @property
    def breaker_state(self) -> BreakerState:
        return self._breaker.state

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the contract --------------------------------------------------------------------------

    async def lookup(self, query: MemberLookup) -> Member:
        """The member with this name and ID number.

        A POST the platform may act on (audit it, count it towards an identity-check lock), so it is
        retried only when it certainly was not processed: after a connect error (nothing was sent) or a
        429/503 that says when to come back. A read timeout or a 5xx may come after the platform did
        the work, and a second lookup must not be charged to the person twice.
        """
        return await self._call(
            _Call(
                method="POST",
                template=wire.PATH_LOOKUP,
                path=wire.PATH_LOOKUP,
                parse=Member.model_validate_json,
                idempotent=False,
                body=query.model_dump_json(exclude_none=True).encode(),
            )
        )

    async def balance(self, member_id: str) -> Balance:
        def parse(content: bytes) -> Balance:
            balance = Balance.model_validate_json(content)
            if balance.member_id != member_id:
                raise ValueError("a balance for another member")
            return balance

        return await self._call(
            _Call(
                method="GET",
                template=wire.PATH_BALANCE,
                path=wire.PATH_BALANCE.format(member_id=_segment(member_id)),
                parse=parse,
                idempotent=True,
            )
        )

    async def transactions(
        self,
        member_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> TransactionPage:
        """One page, newest first; raises ``ValueError`` for a bad ``limit`` or a naive time."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        params = {"limit": str(limit)}
        for key, bound in (("start", start), ("end", end)):
            if bound is not None:
                if bound.utcoffset() is None:
                    raise ValueError("start and end must be timezone-aware")
                params[key] = bound.isoformat()
        if cursor is not None:
            params["cursor"] = cursor
        return await self._call(
            _Call(
                method="GET",
                template=wire.PATH_TRANSACTIONS,
                path=wire.PATH_TRANSACTIONS.format(member_id=_segment(member_id)),
                parse=TransactionPage.model_validate_json,
                idempotent=True,
                params=params,
            )
        )

    async def balances(self, member_ids: Sequence[str]) -> list[wire.BatchBalanceItem]:
        """One item per member id, in order, fetched ``wire.MAX_BATCH`` at a time, one chunk after another.

        Each chunk is a call of its own (own deadline, retries, breaker verdict). A chunk that fails as
        a whole does not lose the others: each of its members gets an item whose ``problem`` carries
        the error (``unavailable``, ``rate_limited`` with ``retry_after``...). Chunks run one after
        another because this serves the alert scheduler, not a person waiting, and spares the platform.
        """
        items: list[wire.BatchBalanceItem] = []
        for first in range(0, len(member_ids), wire.MAX_BATCH):
            chunk = list(member_ids[first : first + wire.MAX_BATCH])
            try:
                items.extend(await self._batch(chunk))
            except InsuranceError as e:
                problem = _problem_of(e)
                items.extend(wire.BatchBalanceItem(member_id=m, problem=problem) for m in chunk)
        return items

    # --- contract 1.1: beyond the balance ------------------------------------------------------

    async def capabilities(self) -> Capabilities:
        """What the platform serves beyond the balance. A 1.0 platform has no such route: its 404
        (``invalid_request`` or ``not_supported``) means empty capabilities."""
        try:
            return await self._get(wire.PATH_CAPABILITIES, wire.PATH_CAPABILITIES, Capabilities)
        except InsuranceError as e:
            if e.code in (ErrorCode.INVALID_REQUEST, ErrorCode.NOT_SUPPORTED):
                return Capabilities()
            raise

    async def verification(self, ticket: str) -> Verification:
        path = wire.PATH_VERIFICATION.format(ticket=_segment(ticket))
        return await self._get(wire.PATH_VERIFICATION, path, Verification)

    async def institutions(
        self,
        *,
        region: str | None = None,
        kind: InstitutionKind | None = None,
        q: str | None = None,
        near: GeoPoint | None = None,
        limit: int = 10,
        cursor: str | None = None,
    ) -> InstitutionPage:
        params = {"limit": str(limit)}
        if region is not None:
            params["region"] = region
        if kind is not None:
            params["kind"] = kind.value
        if q:
            params["q"] = q
        if near is not None:
            params["near"] = f"{near.lat:.6f},{near.lon:.6f}"
        if cursor is not None:
            params["cursor"] = cursor
        return await self._get(wire.PATH_INSTITUTIONS, wire.PATH_INSTITUTIONS, InstitutionPage, params)

    async def drugs(
        self,
        *,
        q: str | None = None,
        region: str | None = None,
        member_id: str | None = None,
        limit: int = 10,
        cursor: str | None = None,
    ) -> DrugPage:
        params = {"limit": str(limit)}
        if q:
            params["q"] = q
        if region is not None:
            params["region"] = region
        if member_id is not None:
            params["member_id"] = member_id
        if cursor is not None:
            params["cursor"] = cursor
        return await self._get(wire.PATH_DRUGS, wire.PATH_DRUGS, DrugPage, params)

    async def voucher(self, member_id: str) -> Voucher:
        path = wire.PATH_VOUCHER.format(member_id=_segment(member_id))
        return await self._get(wire.PATH_VOUCHER, path, Voucher)

    async def contributions(self, member_id: str, *, months: int = 12) -> Contributions:
        path = wire.PATH_CONTRIBUTIONS.format(member_id=_segment(member_id))
        return await self._get(wire.PATH_CONTRIBUTIONS, path, Contributions, {"months": str(months)})

    async def family(self, member_id: str) -> Family:
        path = wire.PATH_FAMILY.format(member_id=_segment(member_id))
        return await self._get(wire.PATH_FAMILY, path, Family)

    async def _get(
        self, template: str, path: str, model: type[M], params: Mapping[str, str] | None = None
    ) -> M:
        return await self._call(
            _Call(
                method="GET",
                template=template,
                path=path,
                parse=model.model_validate_json,
                idempotent=True,
                params=params,
            )
        )

    async def health(self) -> wire.Health:
        """The platform's own view of itself; not signed, so it also works with a wrong key."""
        return await self._call(
            _Call(
                method="GET",
                template=wire.PATH_HEALTH,
                path=wire.PATH_HEALTH,
                parse=wire.Health.model_validate_json,
                idempotent=True,
                signed=False,
            )
        )

    async def _batch(self, chunk: list[str]) -> list[wire.BatchBalanceItem]:
        def parse(content: bytes) -> list[wire.BatchBalanceItem]:
            items = wire.BatchBalanceResponse.model_validate_json(content).items
            if [item.member_id for item in items] != chunk:
                raise ValueError("batch items do not match the member ids asked for")
            for item in items:
                if (item.balance is None) == (item.problem is None):
                    raise ValueError("a batch item needs exactly one of balance and problem")
                if item.balance is not None and item.balance.member_id != item.member_id:
                    raise ValueError("a balance for another member")
            return items

        return await self._call(
            _Call(
                method="POST",
                template=wire.PATH_BATCH,
                path=wire.PATH_BATCH,
                parse=parse,
                idempotent=True,
                body=wire.BatchBalanceRequest(member_ids=chunk).model_dump_json().encode(),
            )
        )

    # --- one call: breaker, deadline, attempts -------------------------------------------------

    async def _call(self, call: _Call[T]) -> T:
        ticket = self._breaker.admit()
        if ticket is None:
            self._warn(call, "circuit_open", 0)
            raise InsuranceError(ErrorCode.UNAVAILABLE, f"{self.name}: circuit open")
        deadline = self._clock() + self.policy.deadline_seconds
        attempts = 0
        settled = False
        try:
            while True:
                attempts += 1
                outcome = await self._attempt(call, deadline)
                if isinstance(outcome, _Done):
                    self._breaker.success(ticket)
                    settled = True
                    return outcome.value
                if isinstance(outcome, _Answer):
                    self._breaker.success(ticket)
                    settled = True
                    raise outcome.error
                if isinstance(outcome, _ComeBack):
                    wait = self._come_back_wait(outcome, attempts, ticket, deadline)
                    if wait is None:
                        self._breaker.success(ticket)
                        settled = True
                        self._warn(call, outcome.error.code.value, attempts)
                        raise outcome.error
                    self._debug_retry(call, outcome.error.code.value, attempts, wait)
                    await asyncio.sleep(wait)
                    continue
                wait = self._failure_wait(call, outcome, attempts, ticket, deadline)
                if wait is None:
                    self._breaker.failure(ticket)
                    settled = True
                    self._warn(call, outcome.outcome, attempts)
                    raise InsuranceError(ErrorCode.UNAVAILABLE, f"{self.name}: {outcome.outcome}")
                self._debug_retry(call, outcome.outcome, attempts, wait)
                await asyncio.sleep(wait)
        finally:
            if not settled:  # cancelled, or a bug: no verdict on the platform
                self._breaker.abandon(ticket)

    def _come_back_wait(
        self, outcome: _ComeBack, attempts: int, ticket: Ticket, deadline: float
    ) -> float | None:
        if attempts > self.policy.retries or self._breaker.blocks(ticket):
            return None
        if outcome.retry_after is None:
            wait = self._backoff(attempts)
        elif outcome.retry_after > self.policy.max_retry_after_seconds:
            return None
        else:
            wait = outcome.retry_after
        return wait if self._clock() + wait < deadline else None

    def _failure_wait(
        self, call: _Call[T], outcome: _Failure, attempts: int, ticket: Ticket, deadline: float
    ) -> float | None:
        if not (call.idempotent or not outcome.maybe_processed):
            return None
        if attempts > self.policy.retries or self._breaker.blocks(ticket):
            return None
        wait = self._backoff(attempts)
        return wait if self._clock() + wait < deadline else None

    def _backoff(self, attempts: int) -> float:
        return full_jitter(
            attempts - 1, base=self.policy.backoff_base_seconds, cap=self.policy.backoff_max_seconds
        )

    async def _attempt(self, call: _Call[T], deadline: float) -> _Outcome[T]:
        left = deadline - self._clock()
        if left <= 0:
            return _Failure("deadline")
        try:
            # Bounds the wait for a slot too, and a body trickled in byte by byte (httpx's read
            # timeout is per read, not per response).
            async with asyncio.timeout(left):
                async with self._slots:
                    request = self._request(call, deadline - self._clock())
                    response = await self._http.send(request)
        except TimeoutError:
            return _Failure("deadline")
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
            return _Failure(type(e).__name__, maybe_processed=False)
        except httpx.HTTPError as e:
            return _Failure(type(e).__name__)
        return self._read(call, response)

    def _request(self, call: _Call[T], left: float) -> httpx.Request:
        per_attempt = max(0.001, min(self.policy.timeout_seconds, left))
        timeout = httpx.Timeout(
            per_attempt, connect=max(0.001, min(self.policy.connect_timeout_seconds, left))
        )
        headers = {"Content-Type": _JSON} if call.body is not None else {}
        request = self._http.build_request(
            call.method, call.path, params=call.params, content=call.body, headers=headers, timeout=timeout
        )
        if call.signed:
            sign_request(request, key_id=self._key_id, secret=self._secret, now=self._wall_clock())
        return request

    def _read(self, call: _Call[T], response: httpx.Response) -> _Outcome[T]:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return _Done(call.parse(response.content))
            except ValueError:  # pydantic's ValidationError included; its text quotes the body
                return _Failure(f"{status} malformed body")
        if status < 400:
            return _Failure(str(status))
        problem = _parse_problem(response)
        retry_after = (
            float(problem.retry_after)
            if problem is not None and problem.retry_after is not None
            else self._retry_after_header(response)
        )
        if problem is None:
            return self._read_bare(status, retry_after)
        code = problem.code
        detail = wire.scrub(problem.detail)
        error = InsuranceError(
            code,
            detail,
            until=problem.until,
            retry_after=retry_after,
            verification_url=problem.verification_url,
            ticket=problem.ticket,
        )
        if code in _PLATFORMS_WORD:
            return _Answer(error)
        if code is ErrorCode.RATE_LIMITED:
            return _ComeBack(error, retry_after)
        if code in _COME_BACK:
            return _ComeBack(error, retry_after) if retry_after is not None else _Answer(error)
        return _Failure(f"{status} {code.value}")

    @staticmethod
    def _read_bare(status: int, retry_after: float | None) -> _Answer | _ComeBack | _Failure:
        """An error status whose body is not a problem document."""
        if status == 429:
            return _ComeBack(InsuranceError(ErrorCode.RATE_LIMITED, retry_after=retry_after), retry_after)
        if status == 503 and retry_after is not None:
            return _ComeBack(InsuranceError(ErrorCode.MAINTENANCE, retry_after=retry_after), retry_after)
        if status >= 500 or status == 408:
            return _Failure(str(status))
        if status in (401, 403):
            return _Answer(InsuranceError(ErrorCode.UNAUTHORIZED, f"HTTP {status}"))
        return _Answer(InsuranceError(ErrorCode.INVALID_REQUEST, f"HTTP {status}"))

    def _retry_after_header(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After", "").strip()
        if not value:
            return None
        try:
            seconds = float(value)  # the standard says whole seconds; "1.5" is taken at its word
        except ValueError:
            pass
        else:
            return seconds if math.isfinite(seconds) and seconds >= 0 else None
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, (when - self._wall_clock()).total_seconds())

    # --- logging: one warning per failed call, debug per retry ---------------------------------

    def _warn(self, call: _Call[T], outcome: str, attempts: int) -> None:
        log.warning(
            "insurance call failed: platform=%s call=%s %s outcome=%s attempts=%d",
            self.name,
            call.method,
            call.template,
            outcome,
            attempts,
        )

    def _debug_retry(self, call: _Call[T], outcome: str, attempts: int, wait: float) -> None:
        log.debug(
            "insurance call retrying: platform=%s call=%s %s outcome=%s attempt=%d wait=%.2fs",
            self.name,
            call.method,
            call.template,
            outcome,
            attempts,
            wait,
        )


def _segment(value: str) -> str:
    """A path segment, so a member id can never reach another path."""
    return quote(value, safe="")


def _parse_problem(response: httpx.Response) -> wire.Problem | None:
    try:
        return wire.Problem.model_validate_json(response.content)
    except ValueError:
        return None


def _problem_of(error: InsuranceError) -> wire.Problem:
    return wire.Problem(
        title=error.code.value.replace("_", " "),
        status=wire.STATUS_OF.get(error.code, 502),
        code=error.code,
        detail=error.detail,
        until=error.until,
        retry_after=math.ceil(error.retry_after) if error.retry_after is not None else None,
    )

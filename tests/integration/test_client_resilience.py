"""The HTTP platform client against upstreams that misbehave on purpose, over real HTTP on 127.0.0.1.

Each test scripts a tiny platform (a raw ASGI app under uvicorn, or a raw asyncio TCP server for
misbehaviour below HTTP): what it answers, how slowly, or that it hangs. The upstream checks every
signature with ``wire.check_signature`` and refuses a nonce it has seen, as a real platform must.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn

from insurance import wire
from insurance.client import ClientPolicy, HttpPlatformClient
from insurance.models import ErrorCode, InsuranceError, MemberLookup
from insurance.sandbox import SandboxPlatform
from insurance.server import create_app

KEY_ID = "yibao-test"
SECRET = b"test-secret-not-for-production"
ID_NUMBER = "11010519491231002X"
PHONE = "13800138000"
LOOKUP = MemberLookup(name="张三", id_number=ID_NUMBER)

# Short everything, so a test that waits out a deadline costs well under a second.
FAST = ClientPolicy(
    timeout_seconds=0.5,
    connect_timeout_seconds=0.3,
    deadline_seconds=0.8,
    retries=2,
    backoff_base_seconds=0.01,
    backoff_max_seconds=0.05,
    max_retry_after_seconds=2.0,
    max_concurrency=5,
    breaker_failures=50,
    breaker_reset_seconds=30.0,
)


def balance_body(member_id: str = "M1") -> dict[str, Any]:
    return {
        "member_id": member_id,
        "personal_account": "1234.56",
        "pooled_used": "100.00",
        "pooled_remaining": "9900.00",
        "pooled_year": 2026,
        "as_of": "2026-11-24T09:00:00+08:00",
    }


def member_body() -> dict[str, Any]:
    return {"member_id": "M1", "region": "110101", "kind": "employee", "phone": PHONE}


def problem(code: ErrorCode, **extra: Any) -> Reply:
    status = wire.STATUS_OF[code]
    body = {"title": code.value, "status": status, "code": code.value, **extra}
    headers = {"Content-Type": wire.PROBLEM_MEDIA_TYPE}
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra["retry_after"])
    return Reply(status, body, headers)


# --- the scripted upstream ---------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] | bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False
    """Never answer (until the test ends)."""
    trickle: float = 0.0
    """Send the body one byte every this many seconds."""


HANG = Reply(hang=True)


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    client_port: int
    signature_problem: str | None


class Upstream:
    """A platform whose answers the test scripts: ``script(a, b)`` answers a, then b for ever after."""

    def __init__(self) -> None:
        self.replies: list[Reply] = [Reply(200, balance_body())]
        self.seen: list[Seen] = []
        self.nonces: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = asyncio.Event()
        self.url = ""

    def script(self, *replies: Reply) -> None:
        self.replies = list(replies)

    def requests_to(self, path_prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(path_prefix)]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = httpx.Headers([(k.decode(), v.decode()) for k, v in scope["headers"]])
        path = scope["raw_path"].decode()
        query = scope["query_string"].decode()
        verdict = None
        if path != wire.PATH_HEALTH:
            verdict = wire.check_signature(
                {KEY_ID: SECRET},
                headers,
                method=scope["method"],
                path=path,
                query=query,
                body=body,
                now=datetime.now(UTC),
            )
            nonce = headers.get(wire.HEADER_NONCE, "")
            if verdict is None and nonce in self.nonces:
                verdict = "nonce already used"
            self.nonces.add(nonce)
        self.seen.append(Seen(scope["method"], path, query, dict(headers), body, scope["client"][1], verdict))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if verdict is not None:
            reply = problem(ErrorCode.UNAUTHORIZED, detail=verdict)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._answer(reply, send)
        finally:
            self.in_flight -= 1

    async def _answer(self, reply: Reply, send: Any) -> None:
        if reply.hang:
            await self.release.wait()
            return
        if reply.delay:
            await asyncio.sleep(reply.delay)
        content = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        headers = {"Content-Type": "application/json", **reply.headers}
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        raw.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": raw})
        if reply.trickle:
            for i in range(len(content)):
                await send({"type": "http.response.body", "body": content[i : i + 1], "more_body": True})
                await asyncio.sleep(reply.trickle)
                if self.release.is_set():
                    return
        await send({"type": "http.response.body", "body": b"" if reply.trickle else content})


class _QuietServer(uvicorn.Server):
    def capture_signals(self) -> contextlib.nullcontext[None]:  # type: ignore[override]
        return contextlib.nullcontext()  # pytest owns the signals


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = Upstream()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=1)
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
        await asyncio.sleep(0.01)
    yield app
    app.release.set()
    server.should_exit = True
    server.force_exit = True
    await task


MakeClient = Callable[..., HttpPlatformClient]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    made: list[HttpPlatformClient] = []

    def make(base_url: str, policy: ClientPolicy = FAST, **kwargs: Any) -> HttpPlatformClient:
        client = HttpPlatformClient(
            base_url, key_id=KEY_ID, secret=kwargs.pop("secret", SECRET), policy=policy, name="test", **kwargs
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


async def error_of(call: Awaitable[Any]) -> InsuranceError:
    with pytest.raises(InsuranceError) as caught:
        await call
    return caught.value


def breaker(client: HttpPlatformClient) -> str:
    """The breaker's state, as a plain str (mypy would narrow the Literal across calls)."""
    return client.breaker_state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- signing -----------------------------------------------------------------------------------


async def test_every_call_is_signed_and_passes_the_platforms_check(
    upstream: Upstream, make_client: MakeClient
) -> None:
    client = make_client(upstream.url)
    start = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(hours=8)
    upstream.script(Reply(200, {"items": [], "next_cursor": None}))
    page = await client.transactions("M 1/..", start=start, cursor="c+/=", limit=5)
    assert page.items == []
    upstream.script(Reply(200, member_body()))
    await client.lookup(LOOKUP)
    upstream.script(Reply(200, {"status": "ok", "time": "2026-11-24T09:00:00+08:00"}))
    assert (await client.health()).status == "ok"

    tx, lookup, health = upstream.seen
    assert [tx.signature_problem, lookup.signature_problem] == [None, None]
    assert tx.path == "/v1/members/M%201%2F../transactions"  # the id stays one path segment
    assert "%2B" in tx.query
    assert "limit=5" in tx.query
    assert json.loads(lookup.body) == {"name": "张三", "id_number": ID_NUMBER}
    assert tx.headers[wire.HEADER_NONCE.lower()] != lookup.headers[wire.HEADER_NONCE.lower()]
    assert wire.HEADER_SIGNATURE.lower() not in health.headers  # health is for load balancers


async def test_a_tampered_or_replayed_request_is_refused(upstream: Upstream, make_client: MakeClient) -> None:
    client = make_client(upstream.url)
    upstream.script(Reply(200, member_body()))
    await client.lookup(LOOKUP)
    sent = upstream.seen[0]
    check = dict(method="POST", path=sent.path, query="", now=datetime.now(UTC))
    headers = httpx.Headers(sent.headers)
    assert wire.check_signature({KEY_ID: SECRET}, headers, body=sent.body, **check) is None  # type: ignore[arg-type]
    tampered = sent.body.replace("张三".encode(), "李四".encode())
    assert wire.check_signature({KEY_ID: SECRET}, headers, body=tampered, **check) == "bad signature"  # type: ignore[arg-type]

    # Sent again as it was, over the wire: the platform has seen that nonce.
    async with httpx.AsyncClient(base_url=upstream.url) as raw:
        replay = await raw.post(sent.path, content=sent.body, headers=sent.headers)
    assert replay.status_code == 401
    assert replay.json()["detail"] == "nonce already used"


async def test_a_wrong_secret_is_unauthorized_not_retried_and_not_a_failure(
    upstream: Upstream, make_client: MakeClient
) -> None:
    client = make_client(upstream.url, ClientPolicy(breaker_failures=1), secret=b"wrong")
    error = await error_of(client.balance("M1"))
    assert error.code is ErrorCode.UNAUTHORIZED
    assert error.detail == "bad signature"
    assert len(upstream.seen) == 1
    assert breaker(client) == "closed"


# --- timeouts and the deadline -----------------------------------------------------------------


async def test_a_hanging_platform_costs_no_more_than_the_deadline(
    upstream: Upstream, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    policy = ClientPolicy(timeout_seconds=0.25, deadline_seconds=0.6, backoff_base_seconds=0.01, retries=5)
    client = make_client(upstream.url, policy)
    upstream.script(HANG)
    began = time.monotonic()
    with caplog.at_level(logging.DEBUG, logger="insurance.client"):
        error = await error_of(client.balance("M1"))
    elapsed = time.monotonic() - began
    assert error.code is ErrorCode.UNAVAILABLE
    assert 0.5 <= elapsed < policy.deadline_seconds + 1.5
    assert 2 <= len(upstream.seen) <= 3  # retried on read timeouts, stopped by the deadline
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "/v1/members/{member_id}/balance" in warnings[0].getMessage()
    assert "M1" not in warnings[0].getMessage()
    assert any(r.levelno == logging.DEBUG and "ReadTimeout" in r.getMessage() for r in caplog.records)


async def test_a_body_trickled_in_byte_by_byte_is_cut_at_the_deadline(
    upstream: Upstream, make_client: MakeClient
) -> None:
    policy = ClientPolicy(timeout_seconds=0.3, deadline_seconds=0.6, retries=0)
    client = make_client(upstream.url, policy)
    upstream.script(Reply(200, balance_body(), trickle=0.05))  # each read is quick; the whole is not
    began = time.monotonic()
    error = await error_of(client.balance("M1"))
    assert error.code is ErrorCode.UNAVAILABLE
    assert time.monotonic() - began < policy.deadline_seconds + 1.5


async def test_a_lookup_is_not_retried_after_a_read_timeout(
    upstream: Upstream, make_client: MakeClient
) -> None:
    client = make_client(upstream.url, ClientPolicy(timeout_seconds=0.2, deadline_seconds=0.8))
    upstream.script(HANG)
    error = await error_of(client.lookup(LOOKUP))
    assert error.code is ErrorCode.UNAVAILABLE
    assert len(upstream.seen) == 1


# --- 5xx and bodies ----------------------------------------------------------------------------


async def test_a_read_is_retried_after_a_500_and_succeeds(
    upstream: Upstream, make_client: MakeClient
) -> None:
    client = make_client(upstream.url)
    upstream.script(Reply(500, b"oops", {"Content-Type": "text/plain"}), Reply(200, balance_body()))
    balance = await client.balance("M1")
    assert str(balance.personal_account) == "1234.56"
    assert len(upstream.seen) == 2
    assert (
        upstream.seen[0].headers[wire.HEADER_NONCE.lower()]
        != upstream.seen[1].headers[wire.HEADER_NONCE.lower()]
    )


async def test_a_lookup_is_not_retried_after_a_500(upstream: Upstream, make_client: MakeClient) -> None:
    client = make_client(upstream.url)
    upstream.script(Reply(500, b"oops"), Reply(200, member_body()))
    error = await error_of(client.lookup(LOOKUP))
    assert error.code is ErrorCode.UNAVAILABLE
    assert len(upstream.seen) == 1


async def test_an_unavailable_problem_is_a_failure_and_retried(
    upstream: Upstream, make_client: MakeClient
) -> None:
    client = make_client(upstream.url)
    upstream.script(problem(ErrorCode.UNAVAILABLE, detail="backend down"), Reply(200, balance_body()))
    await client.balance("M1")
    assert len(upstream.seen) == 2


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"member_id": "M1", "personal', id="malformed-json"),
        pytest.param(b"<html>Bad Gateway</html>", id="html"),
        pytest.param({**member_body(), "region": "Beijing"}, id="breaks-the-model"),
    ],
)
async def test_a_body_that_is_not_the_model_is_unavailable_and_a_failure(
    upstream: Upstream,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    body: dict[str, Any] | bytes,
) -> None:
    client = make_client(upstream.url, ClientPolicy(breaker_failures=1))
    upstream.script(Reply(200, body))
    with caplog.at_level(logging.DEBUG):
        error = await error_of(client.lookup(LOOKUP))
    assert error.code is ErrorCode.UNAVAILABLE
    assert len(upstream.seen) == 1  # the POST was processed: not sent again
    assert breaker(client) == "open"
    said = str(error) + repr(error.__cause__) + repr(error.__context__) + caplog.text
    assert PHONE not in said
    assert ID_NUMBER not in said


async def test_a_balance_for_another_member_is_refused(upstream: Upstream, make_client: MakeClient) -> None:
    client = make_client(upstream.url, ClientPolicy(retries=0))
    upstream.script(Reply(200, balance_body("M2")))
    assert (await error_of(client.balance("M1"))).code is ErrorCode.UNAVAILABLE


# --- the platform's word -----------------------------------------------------------------------

UNTIL = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("reply", "code", "until"),
    [
        (
            problem(ErrorCode.MEMBER_NOT_FOUND, detail=f"no member {ID_NUMBER}"),
            ErrorCode.MEMBER_NOT_FOUND,
            None,
        ),
        (problem(ErrorCode.IDENTITY_MISMATCH), ErrorCode.IDENTITY_MISMATCH, None),
        (problem(ErrorCode.ACCOUNT_LOCKED, until=UNTIL.isoformat()), ErrorCode.ACCOUNT_LOCKED, UNTIL),
        (problem(ErrorCode.UNAUTHORIZED), ErrorCode.UNAUTHORIZED, None),
        (problem(ErrorCode.SYNC_DELAYED), ErrorCode.SYNC_DELAYED, None),
        (problem(ErrorCode.MAINTENANCE), ErrorCode.MAINTENANCE, None),
        (problem(ErrorCode.INVALID_REQUEST, detail="bad body"), ErrorCode.INVALID_REQUEST, None),
        (Reply(404, b"Not Found", {"Content-Type": "text/plain"}), ErrorCode.INVALID_REQUEST, None),
        (Reply(422, {"detail": [{"loc": ["body"], "msg": "bad"}]}), ErrorCode.INVALID_REQUEST, None),
        (Reply(403, b"Forbidden"), ErrorCode.UNAUTHORIZED, None),
    ],
    ids=lambda v: str(getattr(v, "status", v)),
)
async def test_the_platforms_word_is_raised_at_once_and_is_no_failure(
    upstream: Upstream,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    reply: Reply,
    code: ErrorCode,
    until: datetime | None,
) -> None:
    client = make_client(upstream.url, ClientPolicy(breaker_failures=1))
    upstream.script(reply, Reply(200, member_body()))
    with caplog.at_level(logging.DEBUG):
        error = await error_of(client.lookup(LOOKUP))
    assert error.code is code
    assert error.until == until
    assert len(upstream.seen) == 1
    assert breaker(client) == "closed"
    assert ID_NUMBER not in str(error)
    assert ID_NUMBER not in caplog.text
    # The platform is fine: the next call goes through.
    assert (await client.lookup(LOOKUP)).member_id == "M1"


# --- come back later ---------------------------------------------------------------------------


async def test_429_with_retry_after_1_is_waited_out_even_for_a_lookup(
    upstream: Upstream, make_client: MakeClient
) -> None:
    client = make_client(upstream.url, ClientPolicy(deadline_seconds=3.0))
    upstream.script(Reply(429, b"slow down", {"Retry-After": "1"}), Reply(200, member_body()))
    began = time.monotonic()
    member = await client.lookup(LOOKUP)
    elapsed = time.monotonic() - began
    assert member.phone == PHONE
    assert len(upstream.seen) == 2
    assert 0.9 <= elapsed < 2.5


async def test_429_with_retry_after_past_the_policy_is_raised_at_once(
    upstream: Upstream, make_client: MakeClient
) -> None:
    client = make_client(upstream.url, ClientPolicy(breaker_failures=1))
    upstream.script(Reply(429, b"", {"Retry-After": "3600"}), Reply(200, balance_body()))
    began = time.monotonic()
    error = await error_of(client.balance("M1"))
    assert time.monotonic() - began < 0.5
    assert error.code is ErrorCode.RATE_LIMITED
    assert error.retry_after == 3600
    assert len(upstream.seen) == 1
    assert breaker(client) == "closed"


async def test_retry_after_that_would_pass_the_deadline_is_raised_at_once(
    upstream: Upstream, make_client: MakeClient
) -> None:
    client = make_client(upstream.url, ClientPolicy(deadline_seconds=1.0, max_retry_after_seconds=5))
    when = datetime.now(UTC) + timedelta(seconds=3)
    http_date = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    upstream.script(Reply(429, b"", {"Retry-After": http_date}), Reply(200, balance_body()))
    error = await error_of(client.balance("M1"))
    assert error.code is ErrorCode.RATE_LIMITED
    assert error.retry_after is not None
    assert 1.0 < error.retry_after <= 3.0
    assert len(upstream.seen) == 1


async def test_maintenance_with_retry_after_is_raised_with_it_and_is_no_failure(
    upstream: Upstream, make_client: MakeClient
) -> None:
    client = make_client(upstream.url, ClientPolicy(breaker_failures=1))
    upstream.script(problem(ErrorCode.MAINTENANCE, detail="region 510107", retry_after=1800))
    error = await error_of(client.lookup(LOOKUP))
    assert error.code is ErrorCode.MAINTENANCE
    assert error.retry_after == 1800
    assert len(upstream.seen) == 1
    assert breaker(client) == "closed"


async def test_a_short_maintenance_is_waited_out(upstream: Upstream, make_client: MakeClient) -> None:
    client = make_client(upstream.url, ClientPolicy(deadline_seconds=2.0))
    upstream.script(Reply(503, b"back soon", {"Retry-After": "0"}), Reply(200, balance_body()))
    await client.balance("M1")
    assert len(upstream.seen) == 2


# --- the breaker -------------------------------------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_breaker_opens_half_opens_and_recovers(upstream: Upstream, make_client: MakeClient) -> None:
    clock = FakeMonotonic()
    policy = ClientPolicy(retries=1, backoff_base_seconds=0.001, breaker_failures=3, breaker_reset_seconds=30)
    client = make_client(upstream.url, policy, clock=clock)
    upstream.script(Reply(500, b"down"))
    for _ in range(3):
        assert (await error_of(client.balance("M1"))).code is ErrorCode.UNAVAILABLE
    assert breaker(client) == "open"
    assert len(upstream.seen) == 6  # three calls of two attempts each

    # Open: fails fast, nothing reaches the platform.
    error = await error_of(client.balance("M1"))
    assert error.code is ErrorCode.UNAVAILABLE
    assert "circuit open" in str(error)
    assert len(upstream.seen) == 6

    # Half-open: one trial; it fails and the breaker opens again.
    clock.now += 30
    assert breaker(client) == "half_open"
    await error_of(client.balance("M1"))
    assert breaker(client) == "open"
    assert len(upstream.seen) == 8

    # The platform recovers. While the trial is in flight, other calls fail fast.
    upstream.script(Reply(200, balance_body(), delay=0.2))
    clock.now += 30
    trial = asyncio.create_task(client.balance("M1"))
    await asyncio.sleep(0.05)
    assert breaker(client) == "half_open"
    assert "circuit open" in str(await error_of(client.balance("M1")))
    await trial
    assert breaker(client) == "closed"
    assert len(upstream.seen) == 9
    await client.balance("M1")
    assert len(upstream.seen) == 10


async def test_a_cancelled_trial_frees_the_half_open_slot(
    upstream: Upstream, make_client: MakeClient
) -> None:
    clock = FakeMonotonic()
    client = make_client(upstream.url, ClientPolicy(retries=0, breaker_failures=1), clock=clock)
    upstream.script(Reply(500, b""), Reply(200, balance_body(), delay=5), Reply(200, balance_body()))
    await error_of(client.balance("M1"))
    clock.now += 31
    trial = asyncio.create_task(client.balance("M1"))
    await asyncio.sleep(0.05)
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert breaker(client) == "half_open"
    await client.balance("M1")
    assert breaker(client) == "closed"


# --- concurrency and connections ---------------------------------------------------------------


async def test_no_more_than_max_concurrency_requests_are_in_flight(
    upstream: Upstream, make_client: MakeClient
) -> None:
    client = make_client(upstream.url, ClientPolicy(max_concurrency=3, deadline_seconds=5))
    upstream.script(Reply(200, balance_body(), delay=0.05))
    await asyncio.gather(*(client.balance("M1") for _ in range(12)))
    assert len(upstream.seen) == 12
    assert upstream.max_in_flight == 3


async def test_sequential_calls_reuse_one_connection(upstream: Upstream, make_client: MakeClient) -> None:
    client = make_client(upstream.url)
    for _ in range(5):
        await client.balance("M1")
    assert len({seen.client_port for seen in upstream.seen}) == 1


async def test_balances_go_in_chunks_and_a_failed_chunk_becomes_problems(
    upstream: Upstream, make_client: MakeClient
) -> None:
    ids = [f"M{i}" for i in range(230)]

    def batch(chunk: list[str]) -> Reply:
        return Reply(200, {"items": [{"member_id": m, "balance": balance_body(m)} for m in chunk]})

    client = make_client(upstream.url, ClientPolicy(retries=0))
    upstream.script(
        batch(ids[:100]),
        problem(ErrorCode.RATE_LIMITED, retry_after=60),
        batch(ids[200:]),
    )
    items = await client.balances(ids)
    assert [item.member_id for item in items] == ids
    assert [len(json.loads(s.body)["member_ids"]) for s in upstream.seen] == [100, 100, 30]
    assert all(item.balance is not None for item in items[:100] + items[200:])
    middle = {(item.problem.code, item.problem.retry_after) for item in items[100:200] if item.problem}
    assert middle == {(ErrorCode.RATE_LIMITED, 60)}
    assert await client.balances([]) == []


# --- below HTTP --------------------------------------------------------------------------------


async def test_connection_refused_is_retried_even_for_a_lookup(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(f"http://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.DEBUG, logger="insurance.client"):
        error = await error_of(client.lookup(LOOKUP))
    assert error.code is ErrorCode.UNAVAILABLE
    retries = [r for r in caplog.records if r.levelno == logging.DEBUG]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(retries) == 2
    assert "ConnectError" in warning.getMessage()
    assert "attempts=3" in warning.getMessage()


@pytest.fixture
async def dropper() -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server that reads a request and hangs up without answering; counts connections."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(0.02)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", connections
    server.close()
    await server.wait_closed()


async def test_a_dropped_connection_retries_reads_but_not_a_lookup(
    dropper: tuple[str, list[int]], make_client: MakeClient
) -> None:
    url, connections = dropper
    client = make_client(url)
    assert (await error_of(client.lookup(LOOKUP))).code is ErrorCode.UNAVAILABLE
    assert len(connections) == 1
    assert (await error_of(client.balance("M1"))).code is ErrorCode.UNAVAILABLE
    assert len(connections) == 1 + 3


# --- the sandbox in-process --------------------------------------------------------------------


async def test_the_sandbox_runs_in_process_over_the_same_client(make_client: MakeClient) -> None:
    sandbox = SandboxPlatform.from_file()
    app = create_app(sandbox, keys={KEY_ID: SECRET})
    client = make_client("http://sandbox", transport=httpx.ASGITransport(app))
    normal = next(p for p in sandbox.people() if p.scenario.value == "normal")
    member = await client.lookup(MemberLookup(name=normal.name, id_number=normal.id_number))
    assert member.member_id == normal.member_id
    assert (await client.balance(member.member_id)).member_id == member.member_id
    first = await client.transactions(member.member_id, limit=2)
    assert first.next_cursor is not None
    second = await client.transactions(member.member_id, limit=2, cursor=first.next_cursor)
    assert {t.id for t in first.items}.isdisjoint(t.id for t in second.items)
    items = await client.balances([member.member_id, "nobody"])
    assert items[0].balance is not None
    assert items[1].problem is not None
    assert items[1].problem.code is ErrorCode.MEMBER_NOT_FOUND
    assert (
        await error_of(client.transactions(member.member_id, cursor="x"))
    ).code is ErrorCode.INVALID_REQUEST
    assert breaker(client) == "closed"

"""The sandbox platform over real HTTP on loopback: signatures, problems, batch, admin routes.

Each test gets its own uvicorn server on a free 127.0.0.1 port, over a fresh sandbox whose clock the
test holds; the server's own clock (for signature timestamps) is the real one, as a client's is.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from insurance import wire
from insurance.models import Balance, ErrorCode, Member, SyncStatus, TransactionPage
from insurance.sandbox import SandboxPlatform, lock_ends
from insurance.sandbox_data import CHINA_TZ, SandboxPerson, Scenario
from insurance.server import create_app, openapi_document

ROOT = Path(__file__).resolve().parents[2]
KEY_ID = "test"
SECRET = b"a test secret, not the demo one"
NOW = datetime(2026, 11, 24, 10, 7, 30, tzinfo=CHINA_TZ)
DATA = SandboxPlatform.from_file().data
PROBLEM = wire.PROBLEM_MEDIA_TYPE


def one(scenario: Scenario, index: int = 0) -> SandboxPerson:
    return [p for p in DATA.people if p.scenario is scenario][index]


def signed_headers(
    request: httpx.Request,
    *,
    key_id: str = KEY_ID,
    secret: bytes = SECRET,
    skew: int = 0,
    nonce: str | None = None,
    path: str | None = None,
) -> None:
    """Sign ``request`` in place as the contract says (``path``: sign this path instead)."""
    raw_path, _, query = request.url.raw_path.decode("ascii").partition("?")
    timestamp = str(int(time.time()) + skew)
    nonce = nonce or secrets.token_urlsafe(16)
    request.headers[wire.HEADER_KEY_ID] = key_id
    request.headers[wire.HEADER_TIMESTAMP] = timestamp
    request.headers[wire.HEADER_NONCE] = nonce
    request.headers[wire.HEADER_SIGNATURE] = wire.sign(
        secret, request.method, path or raw_path, query, timestamp, nonce, request.content
    )


class Signer(httpx.Auth):
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        signed_headers(request, **self.kwargs)
        yield request


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@contextlib.contextmanager
def running(app: FastAPI | Swappable) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Server:
    url: str
    platform: SandboxPlatform
    clock: Clock

    def client(self, auth: httpx.Auth | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=auth or Signer(), timeout=10.0)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        with self.client() as client:
            return client.get(path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        with self.client() as client:
            return client.post(path, json=body, **kwargs)


class Swappable:
    """One uvicorn for the module; each test puts its own fresh app behind it."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def loopback() -> Iterator[tuple[str, Swappable]]:
    swappable = Swappable()
    with running(swappable) as url:
        yield url, swappable


@pytest.fixture
def server(loopback: tuple[str, Swappable]) -> Server:
    url, swappable = loopback
    clock = Clock()
    platform = SandboxPlatform(DATA, clock=clock)
    swappable.app = create_app(platform, keys={KEY_ID: SECRET})
    return Server(url, platform, clock)


def balance_path(member_id: str) -> str:
    return wire.PATH_BALANCE.format(member_id=member_id)


def assert_problem(
    response: httpx.Response, status: int, code: ErrorCode, detail: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    problem = wire.Problem.model_validate(body)
    assert (problem.status, problem.code) == (status, code)
    assert problem.title
    if detail is not None:
        assert problem.detail == detail
    return body


# --- the published contract -------------------------------------------------------------------------


def test_the_shipped_openapi_document_is_the_generated_one(server: Server) -> None:
    shipped = (ROOT / "insurance" / "openapi.json").read_text(encoding="utf-8")
    assert shipped == openapi_document(), "run tools/make_openapi.py"
    served = httpx.get(f"{server.url}/openapi.json").json()
    assert served == json.loads(shipped)
    assert served["openapi"].startswith("3.1")
    assert served["info"]["title"] == "Yibao insurance platform contract"
    assert served["info"]["version"] == "1.1.0"  # 1.1 only added to 1.0
    assert "HMAC-SHA256" in served["info"]["description"]
    assert set(served["paths"]) == {
        wire.PATH_LOOKUP,
        wire.PATH_BALANCE,
        wire.PATH_TRANSACTIONS,
        wire.PATH_BATCH,
        wire.PATH_HEALTH,
        wire.PATH_CAPABILITIES,
        wire.PATH_INSTITUTIONS,
        wire.PATH_DRUGS,
        wire.PATH_VOUCHER,
        wire.PATH_CONTRIBUTIONS,
        wire.PATH_FAMILY,
        wire.PATH_VERIFICATION,
    }
    schemes = served["components"]["securitySchemes"]
    assert {s["name"] for s in schemes.values()} == {
        wire.HEADER_KEY_ID,
        wire.HEADER_TIMESTAMP,
        wire.HEADER_NONCE,
        wire.HEADER_SIGNATURE,
    }
    for path, operations in served["paths"].items():
        for operation in operations.values():
            responses = operation["responses"]
            assert "422" not in responses
            if path == wire.PATH_HEALTH:
                assert operation["security"] == []
                continue
            assert operation["security"] == [{key: [] for key in schemes}]
            for status in ("400", "401", "429"):
                content = responses[status]["content"]
                assert content == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
            assert "Retry-After" in responses["429"]["headers"]


def test_the_contract_s_example_members_are_in_the_sandbox(server: Server) -> None:
    served = httpx.get(f"{server.url}/openapi.json").json()
    parameter = served["paths"][wire.PATH_BALANCE]["get"]["parameters"][0]
    by_id = {p.member_id: p for p in DATA.people}
    for scenario, example in parameter["examples"].items():
        assert by_id[example["value"]].scenario.value == scenario


# --- signatures -------------------------------------------------------------------------------------


def test_health_needs_no_signature(server: Server) -> None:
    response = httpx.get(f"{server.url}{wire.PATH_HEALTH}")
    assert response.status_code == 200
    health = wire.Health.model_validate(response.json())
    assert health.status == "degraded"
    assert health.regions_in_maintenance == [one(Scenario.MAINTENANCE).region]
    assert abs((health.time - datetime.now(CHINA_TZ)).total_seconds()) < 60


def test_a_signed_request_is_answered(server: Server) -> None:
    response = server.get(balance_path(one(Scenario.NORMAL).member_id))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert Balance.model_validate(response.json()).personal_account == one(Scenario.NORMAL).personal_balance


@pytest.mark.parametrize(
    ("auth", "detail"),
    [
        (None, "missing signature headers"),
        (Signer(key_id="someone"), "unknown key id"),
        (Signer(secret=b"not the secret"), "bad signature"),
        (Signer(skew=-(wire.MAX_SKEW_SECONDS + 5)), "timestamp missing or too far from the server's clock"),
        (Signer(skew=wire.MAX_SKEW_SECONDS + 5), "timestamp missing or too far from the server's clock"),
        (Signer(nonce="short"), "malformed nonce"),
        (Signer(nonce="no spaces allowed in a nonce"), "malformed nonce"),
        (Signer(path="/v1/members/someone-else/balance"), "bad signature"),
    ],
    ids=[
        "unsigned",
        "wrong-key",
        "bad-signature",
        "stale",
        "future",
        "short-nonce",
        "bad-nonce",
        "other-path",
    ],
)
def test_badly_signed_requests_are_401(server: Server, auth: httpx.Auth | None, detail: str) -> None:
    person = one(Scenario.NORMAL)
    with httpx.Client(base_url=server.url, auth=auth) as client:
        response = client.get(balance_path(person.member_id))
    body = assert_problem(response, 401, ErrorCode.UNAUTHORIZED, detail)
    assert response.headers["www-authenticate"] == "YibaoSignature"
    assert set(body) == {"type", "title", "status", "code", "detail"}


def test_a_body_changed_after_signing_is_401(server: Server) -> None:
    person = one(Scenario.NORMAL)
    with httpx.Client(base_url=server.url) as client:
        request = client.build_request(
            "POST", wire.PATH_LOOKUP, json={"name": person.name, "id_number": person.id_number}
        )
        signed_headers(request)
        forged = client.build_request(
            "POST",
            wire.PATH_LOOKUP,
            json={"name": "王五", "id_number": person.id_number},
            headers=request.headers,
        )
        assert_problem(client.send(forged), 401, ErrorCode.UNAUTHORIZED, "bad signature")
        assert client.send(request).status_code == 200


def test_a_query_changed_after_signing_is_401(server: Server) -> None:
    path = wire.PATH_TRANSACTIONS.format(member_id=one(Scenario.NORMAL).member_id)
    with httpx.Client(base_url=server.url) as client:
        request = client.build_request("GET", path, params={"limit": 1})
        signed_headers(request)
        forged = client.build_request("GET", path, params={"limit": 100}, headers=request.headers)
        assert_problem(client.send(forged), 401, ErrorCode.UNAUTHORIZED, "bad signature")


def test_a_replayed_request_is_401(server: Server) -> None:
    person = one(Scenario.NORMAL)
    with httpx.Client(base_url=server.url) as client:
        request = client.build_request("GET", balance_path(person.member_id))
        signed_headers(request)
        assert client.send(request).status_code == 200
        assert_problem(client.send(request), 401, ErrorCode.UNAUTHORIZED, "nonce already used")
        # The same nonce under a new timestamp and signature is still a replay.
        again = client.build_request("GET", balance_path(person.member_id))
        signed_headers(again, nonce=request.headers[wire.HEADER_NONCE], skew=1)
        assert_problem(client.send(again), 401, ErrorCode.UNAUTHORIZED, "nonce already used")


def test_a_failed_signature_does_not_use_up_the_nonce(server: Server) -> None:
    nonce = secrets.token_urlsafe(16)
    with server.client(Signer(nonce=nonce, secret=b"wrong")) as client:
        assert client.get(wire.PATH_BATCH).status_code in (401, 405)
        assert client.post(wire.PATH_BATCH, json={"member_ids": ["x"]}).status_code == 401
    with server.client(Signer(nonce=nonce)) as client:
        assert client.post(wire.PATH_BATCH, json={"member_ids": ["x"]}).status_code == 200


def test_a_path_signed_decoded_is_accepted(server: Server) -> None:
    member_id = "会员 1"
    with server.client(Signer(path=f"/v1/members/{member_id}/balance")) as client:
        response = client.get(balance_path(member_id))
    assert_problem(response, 404, ErrorCode.MEMBER_NOT_FOUND)
    with server.client() as client:  # and percent-encoded, as sent
        assert_problem(client.get(balance_path(member_id)), 404, ErrorCode.MEMBER_NOT_FOUND)


def test_too_many_nonces_is_rate_limited(server: Server) -> None:
    app = create_app(server.platform, keys={KEY_ID: SECRET}, max_nonces=2)
    with running(app) as url, httpx.Client(base_url=url, auth=Signer()) as client:
        for _ in range(2):
            assert client.get(wire.PATH_HEALTH).status_code == 200
            assert client.post(wire.PATH_BATCH, json={"member_ids": ["x"]}).status_code == 200
        response = client.post(wire.PATH_BATCH, json={"member_ids": ["x"]})
    body = assert_problem(response, 429, ErrorCode.RATE_LIMITED)
    assert wire.MAX_SKEW_SECONDS <= body["retry_after"] <= 2 * wire.MAX_SKEW_SECONDS + 1
    assert response.headers["retry-after"] == str(body["retry_after"])


# --- each problem -----------------------------------------------------------------------------------


def test_lookup_and_its_problems(server: Server) -> None:
    person = one(Scenario.NORMAL)
    found = server.post(wire.PATH_LOOKUP, {"name": person.name, "id_number": person.id_number})
    assert found.status_code == 200
    assert Member.model_validate(found.json()).member_id == person.member_id

    unknown = person.id_number[:14] + "000" + "0"
    assert_problem(
        server.post(wire.PATH_LOOKUP, {"name": person.name, "id_number": unknown}),
        404,
        ErrorCode.MEMBER_NOT_FOUND,
    )
    assert_problem(
        server.post(wire.PATH_LOOKUP, {"name": "王五", "id_number": person.id_number}),
        409,
        ErrorCode.IDENTITY_MISMATCH,
    )
    locked = one(Scenario.LOCKED)
    response = server.post(wire.PATH_LOOKUP, {"name": locked.name, "id_number": locked.id_number})
    body = assert_problem(response, 423, ErrorCode.ACCOUNT_LOCKED)
    assert datetime.fromisoformat(body["until"]) == lock_ends(NOW)
    assert "retry-after" not in response.headers


def test_balance_problems_carry_until_and_retry_after(server: Server) -> None:
    locked = server.get(balance_path(one(Scenario.LOCKED).member_id))
    body = assert_problem(locked, 423, ErrorCode.ACCOUNT_LOCKED)
    assert body["until"] == "2026-11-24T10:45:00+08:00"

    down = server.get(balance_path(one(Scenario.MAINTENANCE).member_id))
    body = assert_problem(down, 503, ErrorCode.MAINTENANCE)
    assert body["retry_after"] == 1800
    assert down.headers["retry-after"] == "1800"

    assert_problem(server.get(balance_path("sbx-000000-0000")), 404, ErrorCode.MEMBER_NOT_FOUND)

    syncing = server.get(balance_path(one(Scenario.SYNCING).member_id))
    assert syncing.status_code == 200
    assert Balance.model_validate(syncing.json()).sync_status is SyncStatus.DELAYED


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"limit": 0}, "query.limit: Input should be greater than or equal to 1"),
        ({"limit": 101}, "query.limit: Input should be less than or equal to 100"),
        ({"limit": "ten"}, None),
        ({"start": "2026-11-01T00:00:00"}, None),
        ({"end": "yesterday"}, None),
        ({"cursor": "not-a-cursor"}, "not a transactions cursor"),
    ],
)
def test_bad_transaction_parameters_are_400(
    server: Server, params: dict[str, Any], detail: str | None
) -> None:
    path = wire.PATH_TRANSACTIONS.format(member_id=one(Scenario.NORMAL).member_id)
    body = assert_problem(server.get(path, params=params), 400, ErrorCode.INVALID_REQUEST, detail)
    assert body["detail"]


def test_bad_bodies_are_400(server: Server) -> None:
    with server.client() as client:
        for content in (b"{not json", b"", b"[]", json.dumps({"name": "张伟"}).encode()):
            response = client.post(
                wire.PATH_LOOKUP, content=content, headers={"content-type": "application/json"}
            )
            assert_problem(response, 400, ErrorCode.INVALID_REQUEST)
        response = client.post(wire.PATH_BATCH, json={"member_ids": []})
        assert_problem(response, 400, ErrorCode.INVALID_REQUEST)
        response = client.post(wire.PATH_BATCH, json={"member_ids": ["x"] * (wire.MAX_BATCH + 1)})
        assert_problem(response, 400, ErrorCode.INVALID_REQUEST)


def test_unknown_routes_and_methods_are_problems(server: Server) -> None:
    assert_problem(server.get("/v2/nothing"), 404, ErrorCode.INVALID_REQUEST, "no such route")
    response = httpx.delete(f"{server.url}{wire.PATH_HEALTH}")
    assert_problem(response, 405, ErrorCode.INVALID_REQUEST)
    assert response.headers["allow"] == "GET"


def test_transactions_over_http(server: Server) -> None:
    person = one(Scenario.NORMAL)
    path = wire.PATH_TRANSACTIONS.format(member_id=person.member_id)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 7, "start": "2026-01-01T00:00:00+08:00"}
        if cursor:
            params["cursor"] = cursor
        page = TransactionPage.model_validate(server.get(path, params=params).json())
        seen.extend(tx.id for tx in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    expected = [tx for tx in person.transactions if tx.at >= datetime(2026, 1, 1, tzinfo=CHINA_TZ)]
    assert sorted(seen) == sorted(tx.id for tx in expected)


# --- batch ------------------------------------------------------------------------------------------


def test_batch_answers_each_member_in_order(server: Server) -> None:
    normal, locked, down, syncing = (
        one(Scenario.NORMAL),
        one(Scenario.LOCKED),
        one(Scenario.MAINTENANCE),
        one(Scenario.SYNCING),
    )
    ids = [normal.member_id, "sbx-000000-0000", locked.member_id, down.member_id, syncing.member_id]
    response = server.post(wire.PATH_BATCH, {"member_ids": [*ids, normal.member_id]})
    assert response.status_code == 200
    items = wire.BatchBalanceResponse.model_validate(response.json()).items
    assert [item.member_id for item in items] == [*ids, normal.member_id]
    assert all((item.balance is None) != (item.problem is None) for item in items)
    ok, missing, locked_item, down_item, syncing_item, again = items
    assert ok.balance is not None
    assert ok.balance.personal_account == normal.personal_balance
    assert again.balance == ok.balance
    assert missing.problem is not None
    assert missing.problem.code is ErrorCode.MEMBER_NOT_FOUND
    assert missing.problem.status == 404
    assert locked_item.problem is not None
    assert locked_item.problem.code is ErrorCode.ACCOUNT_LOCKED
    assert locked_item.problem.until == lock_ends(NOW)
    assert down_item.problem is not None
    assert down_item.problem.code is ErrorCode.MAINTENANCE
    assert (down_item.problem.status, down_item.problem.retry_after) == (503, 1800)
    assert syncing_item.balance is not None
    assert syncing_item.balance.sync_status is SyncStatus.DELAYED


# --- admin ------------------------------------------------------------------------------------------


def test_spend_and_credit_change_balance_and_transactions(server: Server) -> None:
    person = one(Scenario.NORMAL)
    admin = f"/admin/members/{person.member_id}"
    before = Balance.model_validate(server.get(balance_path(person.member_id)).json())
    assert before.personal_account is not None

    spent = server.post(
        f"{admin}/spend",
        {"amount": "100.00", "place": "示范医院", "category": "outpatient", "pooled_share": "0.7"},
    )
    assert spent.status_code == 200
    after = Balance.model_validate(spent.json())
    assert after.personal_account == before.personal_account - 30
    assert after.pooled_used == before.pooled_used + 70
    assert Balance.model_validate(server.get(balance_path(person.member_id)).json()) == after

    credited = Balance.model_validate(server.post(f"{admin}/credit", {"amount": 12.5}).json())
    assert credited.personal_account == after.personal_account + Decimal("12.50")

    path = wire.PATH_TRANSACTIONS.format(member_id=person.member_id)
    newest = TransactionPage.model_validate(server.get(path, params={"limit": 2}).json()).items
    assert [(tx.category.value, str(tx.personal_amount), str(tx.pooled_amount)) for tx in newest] == [
        ("credit", "12.50", "0.00"),
        ("outpatient", "-30.00", "-70.00"),
    ]
    assert newest[1].place == "示范医院"

    too_much = server.post(f"{admin}/spend", {"amount": "99999.00"})
    assert "personal account holds" in assert_problem(too_much, 400, ErrorCode.INVALID_REQUEST)["detail"]
    assert_problem(server.post(f"{admin}/spend", {"amount": "-1"}), 400, ErrorCode.INVALID_REQUEST)
    assert_problem(server.post(f"{admin}/spend", {"amount": "1.001"}), 400, ErrorCode.INVALID_REQUEST)
    assert_problem(
        server.post("/admin/members/nobody/credit", {"amount": "1"}), 404, ErrorCode.MEMBER_NOT_FOUND
    )


def test_lock_and_unlock(server: Server) -> None:
    person = one(Scenario.NORMAL)
    admin = f"/admin/members/{person.member_id}"
    assert server.post(f"{admin}/lock").status_code == 204
    body = assert_problem(server.get(balance_path(person.member_id)), 423, ErrorCode.ACCOUNT_LOCKED)
    assert datetime.fromisoformat(body["until"]) == lock_ends(NOW)

    until = NOW + timedelta(minutes=20)
    assert server.post(f"{admin}/lock", {"until": until.isoformat()}).status_code == 204
    body = assert_problem(server.get(balance_path(person.member_id)), 423, ErrorCode.ACCOUNT_LOCKED)
    assert datetime.fromisoformat(body["until"]) == until
    server.clock.now = until
    assert server.get(balance_path(person.member_id)).status_code == 200

    assert_problem(server.post(f"{admin}/lock", {"until": NOW.isoformat()}), 400, ErrorCode.INVALID_REQUEST)
    locked = one(Scenario.LOCKED)
    assert server.post(f"/admin/members/{locked.member_id}/unlock").status_code == 204
    assert server.get(balance_path(locked.member_id)).status_code == 200


def test_sync_delay_and_maintenance(server: Server) -> None:
    person = one(Scenario.NORMAL)
    admin = f"/admin/members/{person.member_id}"
    assert server.post(f"{admin}/sync-delay", {"seconds": 3600}).status_code == 204
    delayed = Balance.model_validate(server.get(balance_path(person.member_id)).json())
    assert delayed.sync_status is SyncStatus.DELAYED
    assert delayed.as_of == datetime(2026, 11, 24, 9, 7, tzinfo=CHINA_TZ)
    assert server.post(f"{admin}/sync-delay", {"seconds": None}).status_code == 204
    assert (
        Balance.model_validate(server.get(balance_path(person.member_id)).json()).sync_status is SyncStatus.OK
    )
    assert_problem(server.post(f"{admin}/sync-delay", {"seconds": 0}), 400, ErrorCode.INVALID_REQUEST)

    region = f"/admin/regions/{person.region}/maintenance"
    assert server.post(region, {"on": True, "retry_after_seconds": 60}).status_code == 204
    response = server.get(balance_path(person.member_id))
    assert assert_problem(response, 503, ErrorCode.MAINTENANCE)["retry_after"] == 60
    assert response.headers["retry-after"] == "60"
    health = httpx.get(f"{server.url}{wire.PATH_HEALTH}").json()
    assert person.region in health["regions_in_maintenance"]
    assert server.post(region, {"on": False}).status_code == 204
    assert server.get(balance_path(person.member_id)).status_code == 200
    assert_problem(
        server.post("/admin/regions/999999/maintenance", {"on": True}), 400, ErrorCode.INVALID_REQUEST
    )


def test_admin_people_lists_the_sandbox(server: Server) -> None:
    people = server.get("/admin/people").json()
    assert [p["member_id"] for p in people] == [p.member_id for p in DATA.people]


def test_admin_routes_are_signed_and_can_be_left_out(server: Server) -> None:
    person = one(Scenario.NORMAL)
    response = httpx.post(f"{server.url}/admin/members/{person.member_id}/spend", json={"amount": "1"})
    assert_problem(response, 401, ErrorCode.UNAUTHORIZED)
    app = create_app(server.platform, keys={KEY_ID: SECRET}, admin=False)
    with running(app) as url, httpx.Client(base_url=url, auth=Signer()) as client:
        response = client.post(f"/admin/members/{person.member_id}/spend", json={"amount": "1"})
    assert_problem(response, 404, ErrorCode.INVALID_REQUEST)


# --- personal data ----------------------------------------------------------------------------------


def test_problems_never_hold_an_id_number_or_a_phone(server: Server) -> None:
    people = [one(Scenario.NORMAL), one(Scenario.LOCKED), one(Scenario.MAINTENANCE)]
    responses: list[httpx.Response] = []
    with server.client() as client:
        for p in people:
            responses += [
                client.post(wire.PATH_LOOKUP, json={"name": "王五", "id_number": p.id_number}),
                client.post(wire.PATH_LOOKUP, json={"name": p.name, "id_number": p.id_number}),
                client.post(wire.PATH_LOOKUP, json={"name": p.phone, "id_number": p.id_number[:-1]}),
                client.post(wire.PATH_LOOKUP, json={"name": p.name, "id_number": p.id_number, p.phone: 1}),
                client.post(wire.PATH_LOOKUP, json={p.id_number: p.phone}),
                client.get(balance_path(p.id_number)),
                client.get(balance_path(p.phone)),
                client.get(
                    wire.PATH_TRANSACTIONS.format(member_id=p.member_id),
                    params={"cursor": p.id_number, "limit": p.phone},
                ),
                client.post(wire.PATH_BATCH, json={"member_ids": [p.id_number, p.phone]}),
                client.post(f"/admin/members/{p.id_number}/spend", json={"amount": p.phone}),
                client.post(
                    f"/admin/members/{p.member_id}/spend", json={"amount": "1", p.id_number: p.phone}
                ),
            ]
    responses.append(httpx.post(f"{server.url}{wire.PATH_LOOKUP}", json={"id_number": people[0].id_number}))
    for response in responses:
        if response.status_code == 200:
            continue
        assert response.headers["content-type"] == PROBLEM, response.text
        raw = response.content.decode()
        for p in people:
            assert p.id_number not in raw, raw
            assert p.phone not in raw, raw
            assert p.id_number[:-1] not in raw, raw
    statuses = {r.status_code for r in responses}
    assert {400, 401, 404, 409, 423, 503} <= statuses

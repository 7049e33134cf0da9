"""``yibao sandbox serve`` as a real process on a free loopback port, changed by ``yibao sandbox spend`` etc."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from insurance import wire
from insurance.models import Balance, ErrorCode, SyncStatus
from insurance.sandbox import SandboxPlatform
from insurance.server import DEMO_SECRET

PEOPLE = SandboxPlatform.from_file().people()
NORMAL = next(p for p in PEOPLE if p.scenario.value == "normal")
RESIDENT = next(p for p in PEOPLE if p.scenario.value == "resident")


def yibao_command() -> list[str]:
    script = Path(sys.executable).with_name("yibao")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIBAO_")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Signer(httpx.Auth):
    def __init__(self, secret: bytes, key_id: str = "yibao") -> None:
        self.secret, self.key_id = secret, key_id

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        path, _, query = request.url.raw_path.decode().partition("?")
        timestamp, nonce = str(int(time.time())), secrets.token_urlsafe(16)
        request.headers[wire.HEADER_KEY_ID] = self.key_id
        request.headers[wire.HEADER_TIMESTAMP] = timestamp
        request.headers[wire.HEADER_NONCE] = nonce
        request.headers[wire.HEADER_SIGNATURE] = wire.sign(
            self.secret, request.method, path, query, timestamp, nonce, request.content
        )
        yield request


@dataclass
class Sandbox:
    url: str
    env: dict[str, str]
    cwd: Path
    secret: bytes
    process: subprocess.Popen[str]

    def yibao(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*yibao_command(), "sandbox", *args, "--url", self.url],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", auth=Signer(self.secret), timeout=10)

    def balance(self, member_id: str) -> httpx.Response:
        return self.get(wire.PATH_BALANCE.format(member_id=member_id))


def start(tmp_path: Path, *args: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [*yibao_command(), "sandbox", "serve", "--port", str(port), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"yibao sandbox serve exited {process.returncode}: {out}{err}")
        try:
            if httpx.get(f"{url}{wire.PATH_HEALTH}", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "yibao sandbox serve did not come up"
        time.sleep(0.05)


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.terminate()
    try:
        return process.communicate(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - only when shutting down hangs
        process.kill()
        return process.communicate()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """A served sandbox signed with a secret from a file; the admin commands get it from the env."""
    secret = b"a secret for the cli test"
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(secret + b"\n")
    process, url = start(tmp_path, "--secret-file", str(secret_file), env=clean_env())
    yield Sandbox(url, clean_env(YIBAO_SANDBOX_SECRET=secret.decode()), tmp_path, secret, process)
    stop(process)


def test_spend_by_id_number_changes_the_balance(sandbox: Sandbox) -> None:
    before = Balance.model_validate(sandbox.balance(NORMAL.member_id).json())
    assert before.personal_account is not None

    done = sandbox.yibao("spend", NORMAL.id_number, "12.50", "--place", "测试药房", "--category", "pharmacy")

    assert done.returncode == 0, done.stderr
    after = Balance.model_validate(sandbox.balance(NORMAL.member_id).json())
    assert after.personal_account == before.personal_account - Decimal("12.50")
    assert NORMAL.member_id in done.stdout
    assert f"{after.personal_account:,.2f}" in done.stdout
    # Only masked forms are printed.
    assert NORMAL.id_number not in done.stdout + done.stderr
    assert NORMAL.id_number[:3] + "*" * 11 + NORMAL.id_number[-4:] in done.stdout
    page = sandbox.get(wire.PATH_TRANSACTIONS.format(member_id=NORMAL.member_id) + "?limit=1").json()
    assert page["items"][0]["place"] == "测试药房"


def test_the_other_admin_commands(sandbox: Sandbox) -> None:
    member = NORMAL.member_id
    credited = sandbox.yibao("credit", member, "100")
    assert credited.returncode == 0, credited.stderr
    assert "personal account ¥" in credited.stdout

    assert sandbox.yibao("lock", member, "--minutes", "5").returncode == 0
    assert sandbox.balance(member).json()["code"] == ErrorCode.ACCOUNT_LOCKED
    assert sandbox.yibao("unlock", member).returncode == 0
    assert sandbox.balance(member).status_code == 200

    assert sandbox.yibao("sync-delay", member, "3600").returncode == 0
    assert Balance.model_validate(sandbox.balance(member).json()).sync_status is SyncStatus.DELAYED
    assert sandbox.yibao("sync-delay", member, "off").returncode == 0
    assert Balance.model_validate(sandbox.balance(member).json()).sync_status is SyncStatus.OK

    assert sandbox.yibao("maintenance", NORMAL.region, "on", "--retry-after", "60").returncode == 0
    down = sandbox.balance(member)
    assert (down.status_code, down.headers["retry-after"]) == (503, "60")
    assert sandbox.yibao("maintenance", NORMAL.region, "off").returncode == 0
    assert sandbox.balance(member).status_code == 200


def test_refusals_are_reported_with_exit_1(sandbox: Sandbox) -> None:
    refused = sandbox.yibao("credit", RESIDENT.id_number, "10")
    assert refused.returncode == 1
    assert "no personal account" in refused.stderr
    assert RESIDENT.id_number not in refused.stdout + refused.stderr

    unknown = sandbox.yibao("spend", "sbx-000000-0000", "1")
    assert (unknown.returncode, "member_not_found" in unknown.stderr) == (1, True)

    wrong_key = subprocess.run(
        [*yibao_command(), "sandbox", "unlock", NORMAL.member_id, "--url", sandbox.url],
        cwd=sandbox.cwd,
        env=clean_env(),  # no secret: the demo one, which this server does not know
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (wrong_key.returncode, "unauthorized" in wrong_key.stderr) == (1, True)


def test_serve_on_loopback_without_a_secret_uses_the_demo_one(tmp_path: Path) -> None:
    process, url = start(tmp_path, env=clean_env())
    try:
        response = httpx.get(
            f"{url}{wire.PATH_BALANCE.format(member_id=NORMAL.member_id)}",
            auth=Signer(DEMO_SECRET),
            timeout=10,
        )
        assert response.status_code == 200
        spent = subprocess.run(
            [*yibao_command(), "sandbox", "spend", NORMAL.member_id, "1", "--url", url],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert spent.returncode == 0, spent.stderr
    finally:
        _, err = stop(process)
    assert "demo secret" in err


def test_serve_elsewhere_needs_a_secret(tmp_path: Path) -> None:
    refused = subprocess.run(
        [*yibao_command(), "sandbox", "serve", "--host", "0.0.0.0", "--port", str(free_port())],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 2
    assert "YIBAO_SANDBOX_SECRET" in refused.stderr

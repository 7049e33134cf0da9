"""Schemathesis against the sandbox server: whatever the contract allows, the server answers as documented.

The schema is the app's own ``/openapi.json`` (the same document as ``insurance/openapi.json``), loaded
and called in process through ASGI. Every generated request, valid or not, is signed the way a client
signs it, by a ``requests`` auth object that sees the request as it will be sent (final path, query and
body bytes). The signing headers are not generated (``with-security-parameters = false``): schemathesis
tests the contract's inputs, ``test_sandbox_server.py`` tests the signatures, over real HTTP.

The only 5xx the contract defines is 503 (a region in maintenance; the sandbox has one), so
``not_a_server_error`` lets 503 through and ``contract_rules`` insists it is that problem.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, Response

from insurance import wire
from insurance.sandbox import SandboxPlatform, SandboxProfile
from insurance.server import create_app

KEY_ID = "schemathesis"
SECRET = b"schemathesis secret"
MAX_EXAMPLES = 100

CONFIG = schemathesis.Config.from_str(
    f"""
[generation]
max-examples = {MAX_EXAMPLES}
with-security-parameters = false
database = "none"

[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""
)
APP = create_app(SandboxPlatform.from_file(), keys={KEY_ID: SECRET})
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)
# The same contract served by a platform whose bind asks for its face check (lookups answer 428,
# verifications are looked up): fewer examples, since only the bind's answers differ.
FACE_EXAMPLES = 25
FACE_APP = create_app(SandboxPlatform.from_file(profile=SandboxProfile.FACE_CHECK), keys={KEY_ID: SECRET})
face_schema = schemathesis.openapi.from_asgi("/openapi.json", FACE_APP, config=CONFIG).include(
    path_regex="lookup|verifications|capabilities"
)


@schemathesis.check
def contract_rules(ctx: CheckContext, response: Response, case: Case[Any]) -> None:
    """What the schema cannot say: signed requests get in; a 503 is the maintenance problem."""
    if response.status_code == 401:
        raise AssertionError(f"a signed request was refused: {response.text}")
    if response.status_code >= 500:
        problem = wire.Problem.model_validate_json(response.content)
        assert response.status_code == 503, response.text
        assert problem.code == "maintenance", response.text
        assert response.headers.get("retry-after") == [str(problem.retry_after)], response.headers


CHECKS = [
    contract_rules,
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
]


class Sign(requests.auth.AuthBase):
    """Sign the prepared request: its percent-encoded path and raw query, as the server receives them."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        path, _, query = request.path_url.partition("?")
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        assert isinstance(body, bytes), "schemathesis sends whole bodies"
        timestamp = str(int(time.time()))
        nonce = secrets.token_urlsafe(16)
        request.headers[wire.HEADER_KEY_ID] = KEY_ID
        request.headers[wire.HEADER_TIMESTAMP] = timestamp
        request.headers[wire.HEADER_NONCE] = nonce
        request.headers[wire.HEADER_SIGNATURE] = wire.sign(
            SECRET, request.method or "GET", path, query, timestamp, nonce, body
        )
        return request


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_server_keeps_the_contract(case: Case[Any]) -> None:
    case.call_and_validate(auth=Sign(), checks=CHECKS)


@face_schema.parametrize()
@settings(
    max_examples=FACE_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_a_face_check_platform_keeps_the_contract(case: Case[Any]) -> None:
    case.call_and_validate(auth=Sign(), checks=CHECKS)

"""Revocation at logout (T6, RFC 7009): request shape and outcome classification."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from brokerd.oauth import (
    Fetch,
    PolicyError,
    Registration,
    RevocationOutcome,
    TokenSet,
    TransportFailure,
    UrlPolicy,
    revoke,
    run_sync,
)
from brokerd.oauth.testing import Answer, FakeDriver, json_response
from brokerd.secret import Secret

AS = "https://auth.example.com"
REVOKE = f"{AS}/revoke"
POLICY = UrlPolicy()
PUBLIC = Registration(issuer=AS, client_id="pub")
BASIC = Registration(
    issuer=AS, client_id="conf", client_secret=Secret("cs"), token_endpoint_auth_method="client_secret_basic"
)


def tokens(registration: Registration = PUBLIC, **changes: Any) -> TokenSet:
    base: dict[str, Any] = {
        "access_token": Secret("the-access"),
        "refresh_token": Secret("the-refresh"),
        "issuer": AS,
        "client_id": registration.client_id,
        "token_endpoint": f"{AS}/token",
        "revocation_endpoint": REVOKE,
    }
    base.update(changes)
    return TokenSet(**base)


def run(
    answers: Answer | list[Answer], held: TokenSet | None = None, registration: Registration = PUBLIC
) -> tuple[tuple[RevocationOutcome, ...], FakeDriver]:
    driver = FakeDriver({f"POST {REVOKE}": answers})
    return run_sync(revoke(held or tokens(registration), registration, policy=POLICY), driver), driver


def test_refresh_token_first_then_access_token() -> None:
    """T6: the refresh token is revoked first, then the access token, each with token_type_hint."""
    outcomes, driver = run(json_response(200, b""))
    forms = [r.form() for r in driver.requests]
    assert forms == [
        {"token": "the-refresh", "token_type_hint": "refresh_token", "client_id": "pub"},
        {"token": "the-access", "token_type_hint": "access_token", "client_id": "pub"},
    ]
    assert all((r.method, r.url) == ("POST", REVOKE) for r in driver.requests)
    assert [o.outcome for o in outcomes] == ["revoked", "revoked"]


def test_revocation_uses_client_authentication() -> None:
    """T6: a confidential client authenticates to the revocation endpoint as to the token endpoint."""
    _, driver = run(json_response(200, b""), registration=BASIC)
    assert driver.requests[0].header("authorization") == "Basic " + base64.b64encode(b"conf:cs").decode()
    assert "client_secret" not in driver.requests[0].form()


def test_revocation_by_hand() -> None:
    """T6: driven by hand, revocation yields two Fetch effects and returns the outcomes."""
    flow = revoke(tokens(), PUBLIC, policy=POLICY)
    first = next(flow)
    assert isinstance(first, Fetch)
    second = flow.send(json_response(200, b""))
    assert isinstance(second, Fetch)
    with pytest.raises(StopIteration) as stop:
        flow.send(json_response(503, b""))
    assert [o.outcome for o in stop.value.value] == ["revoked", "unreachable"]


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (json_response(200, b""), "revoked"),
        (json_response(200, {"anything": 1}), "revoked"),
        (json_response(400, {"error": "unsupported_token_type"}), "unsupported"),
        (json_response(400, {"error": "invalid_request"}), "rejected"),
        (json_response(401, {"error": "invalid_client"}), "rejected"),
        (json_response(503, b"", [("retry-after", "5")]), "unreachable"),
        (json_response(429, b""), "unreachable"),
        (TransportFailure("timeout"), "unreachable"),
    ],
)
def test_outcome_classification(answer: Answer, outcome: str) -> None:
    """T6: 200 is done; unsupported_token_type, other refusals and outages are told apart; nothing raises."""
    outcomes, _ = run(answer)
    assert {o.outcome for o in outcomes} == {outcome}


def test_without_refresh_token_only_access_token() -> None:
    """T6: with no refresh token, only the access token is revoked."""
    outcomes, driver = run(json_response(200, b""), held=tokens(refresh_token=None))
    assert [r.form()["token_type_hint"] for r in driver.requests] == ["access_token"]
    assert [o.token_type_hint for o in outcomes] == ["access_token"]


def test_without_endpoint_no_request() -> None:
    """T6: an authorization server without a revocation endpoint gets no request; outcome unsupported."""
    outcomes, driver = run([], held=tokens(revocation_endpoint=None))
    assert driver.requests == []
    assert [o.outcome for o in outcomes] == ["unsupported", "unsupported"]


def test_refused_endpoint_gets_no_token() -> None:
    """T6, S2: a revocation endpoint the policy refuses gets no token."""
    outcomes, driver = run([], held=tokens(revocation_endpoint="https://10.0.0.1/revoke"))
    assert driver.requests == []
    assert [o.outcome for o in outcomes] == ["refused", "refused"]


def test_foreign_registration_is_refused() -> None:
    """T6, T2: tokens are not revoked with another client's credentials."""
    with pytest.raises(PolicyError):
        run([], held=tokens(client_id="other"))

"""Token endpoint (T1, T3, T4, T5): token responses in, TokenSets and classified errors out."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import pytest

from brokerd.oauth import (
    Fetch,
    GrantEndedError,
    HttpResponse,
    OAuthError,
    PeerError,
    PolicyError,
    Registration,
    RequestRejectedError,
    TokenSet,
    TransientError,
    TransportFailure,
    UrlPolicy,
    bearer_header,
    parse_retry_after,
    refresh,
    run_sync,
)
from brokerd.oauth.testing import Answer, FakeDriver, json_response
from brokerd.secret import Secret, dec_hook, enc_hook

AS = "https://auth.example.com"
TOKEN_URL = f"{AS}/token"
RESOURCE = "https://mcp.example.com/mcp"
POLICY = UrlPolicy()
NOW = 1_000_000.0
PUBLIC = Registration(issuer=AS, client_id="pub")
BASIC = Registration(
    issuer=AS, client_id="conf", client_secret=Secret("cs"), token_endpoint_auth_method="client_secret_basic"
)
POST = Registration(
    issuer=AS, client_id="conf", client_secret=Secret("cs"), token_endpoint_auth_method="client_secret_post"
)


def tokens(registration: Registration = PUBLIC, **changes: Any) -> TokenSet:
    base: dict[str, Any] = {
        "access_token": Secret("old-access"),
        "refresh_token": Secret("old-refresh"),
        "issuer": registration.issuer,
        "client_id": registration.client_id,
        "token_endpoint": TOKEN_URL,
        "resource": RESOURCE,
        "scopes": ("read",),
        "expires_at": NOW - 1,
        "revocation_endpoint": f"{AS}/revoke",
    }
    base.update(changes)
    return TokenSet(**base)


def run_refresh(
    answer: Answer, held: TokenSet | None = None, registration: Registration = PUBLIC
) -> tuple[TokenSet, FakeDriver]:
    driver = FakeDriver({f"POST {TOKEN_URL}": answer}, now=NOW)
    return run_sync(refresh(held or tokens(registration), registration, policy=POLICY), driver), driver


@pytest.mark.parametrize(
    ("registration", "auth_header", "form_auth"),
    [
        (PUBLIC, None, {"client_id": "pub"}),
        (POST, None, {"client_id": "conf", "client_secret": "cs"}),
        (BASIC, "Basic " + base64.b64encode(b"conf:cs").decode(), {}),
    ],
)
def test_refresh_request_shape(
    registration: Registration, auth_header: str | None, form_auth: dict[str, str]
) -> None:
    """T3: the refresh POST carries grant_type, refresh_token, resource and the registration's client auth."""
    _, driver = run_refresh(
        json_response(200, {"access_token": "new", "token_type": "Bearer"}), registration=registration
    )
    (request,) = driver.requests
    assert (request.method, request.url) == ("POST", TOKEN_URL)
    assert request.header("content-type") == "application/x-www-form-urlencoded"
    assert request.header("authorization") == auth_header
    assert request.form() == {
        "grant_type": "refresh_token",
        "refresh_token": "old-refresh",
        "resource": RESOURCE,
        **form_auth,
    }


def test_refresh_by_hand() -> None:
    """T3: driven with next()/send(), a refresh is one Fetch and then the new TokenSet."""
    flow = refresh(tokens(), PUBLIC, policy=POLICY)
    effect = next(flow)
    assert isinstance(effect, Fetch)
    with pytest.raises(StopIteration) as stop:
        flow.send(
            HttpResponse(
                200, (), b'{"access_token": "n", "token_type": "bearer", "expires_in": 60}', received_at=50.0
            )
        )
    assert stop.value.value.expires_at == 110.0


@pytest.mark.parametrize(
    ("body", "expires_at", "lifetime", "scopes", "token_type"),
    [
        (
            {"access_token": "a", "token_type": "Bearer", "expires_in": 3600},
            NOW + 3600,
            3600.0,
            ("read",),
            "Bearer",
        ),
        ({"access_token": "a", "token_type": "bearer", "expires_in": 5}, NOW + 5, 5.0, ("read",), "Bearer"),
        (
            {"access_token": "a", "token_type": "Bearer", "expires_in": "120"},
            NOW + 120,
            120.0,
            ("read",),
            "Bearer",
        ),
        (
            {"access_token": "a", "token_type": "Bearer", "expires_in": 1.5},
            NOW + 1.5,
            1.5,
            ("read",),
            "Bearer",
        ),
        ({"access_token": "a", "token_type": "Bearer"}, None, None, ("read",), "Bearer"),
        (
            {"access_token": "a", "token_type": "Bearer", "expires_in": "soon"},
            None,
            None,
            ("read",),
            "Bearer",
        ),
        ({"access_token": "a", "token_type": "Bearer", "expires_in": -3}, None, None, ("read",), "Bearer"),
        (
            {"access_token": "a", "expires_in": 10, "scope": "read write"},
            NOW + 10,
            10.0,
            ("read", "write"),
            "Bearer",
        ),
        ({"access_token": "a", "expires_in": 10, "scope": ""}, NOW + 10, 10.0, (), "Bearer"),
    ],
)
def test_token_response_parsing(
    body: dict[str, Any],
    expires_at: float | None,
    lifetime: float | None,
    scopes: tuple[str, ...],
    token_type: str,
) -> None:
    """T3: expiry is absolute (received_at + expires_in) or None; scope falls back to the requested one."""
    new, _ = run_refresh(json_response(200, body))
    assert new.expires_at == expires_at
    assert (None if new.expires_at is None else new.expires_at - new.obtained_at) == lifetime
    assert new.scopes == scopes
    assert new.token_type == token_type
    assert new.obtained_at == NOW
    assert (new.issuer, new.client_id, new.token_endpoint, new.resource) == (AS, "pub", TOKEN_URL, RESOURCE)
    assert new.revocation_endpoint == f"{AS}/revoke"
    assert new.remaining(NOW) == (None if expires_at is None else expires_at - NOW)


def test_rotation_replaces_refresh_token() -> None:
    """T4: a refresh that returns a refresh token replaces the old one."""
    new, _ = run_refresh(
        json_response(200, {"access_token": "a2", "token_type": "Bearer", "refresh_token": "r2"})
    )
    assert new.refresh_token == Secret("r2")
    assert new.access_token == Secret("a2")


def test_no_rotation_keeps_refresh_token() -> None:
    """T4: a refresh without a refresh token keeps the old one."""
    new, _ = run_refresh(json_response(200, {"access_token": "a2", "token_type": "Bearer"}))
    assert new.refresh_token == Secret("old-refresh")


@pytest.mark.parametrize(
    ("answer", "error", "attrs"),
    [
        (TransportFailure("connection reset"), TransientError, {"status": None, "retry_after": None}),
        (
            json_response(503, {}, [("retry-after", "120")]),
            TransientError,
            {"status": 503, "retry_after": 120.0},
        ),
        (json_response(500, b"oops"), TransientError, {"status": 500, "retry_after": None}),
        (json_response(502, b""), TransientError, {"status": 502}),
        (
            json_response(429, {"error": "slow"}, [("retry-after", "7")]),
            TransientError,
            {"status": 429, "retry_after": 7.0},
        ),
        (json_response(408, b""), TransientError, {"status": 408}),
        (
            json_response(400, {"error": "invalid_grant"}),
            GrantEndedError,
            {"error": "invalid_grant", "client_rejected": False},
        ),
        (
            json_response(401, {"error": "invalid_client"}),
            GrantEndedError,
            {"error": "invalid_client", "client_rejected": True},
        ),
        (
            json_response(400, {"error": "unauthorized_client"}),
            GrantEndedError,
            {"error": "unauthorized_client"},
        ),
        (
            json_response(400, {"error": "invalid_scope"}),
            RequestRejectedError,
            {"error": "invalid_scope", "status": 400},
        ),
        (json_response(400, {"error": "invalid_target"}), RequestRejectedError, {"error": "invalid_target"}),
        (json_response(400, {"error": "something_new"}), RequestRejectedError, {"error": "something_new"}),
        (
            json_response(400, b"<html>bad request</html>"),
            RequestRejectedError,
            {"error": None, "status": 400},
        ),
        (json_response(404, b""), RequestRejectedError, {"error": None, "status": 404}),
        (json_response(302, b""), PeerError, {}),
        (json_response(200, b"not json"), PeerError, {}),
        (json_response(200, {"token_type": "Bearer"}), PeerError, {}),
        (json_response(200, {"access_token": "", "token_type": "Bearer"}), PeerError, {}),
        (json_response(200, {"access_token": "a", "token_type": "mac"}), PeerError, {}),
        (json_response(200, {"access_token": "a", "token_type": "DPoP"}), PeerError, {}),
    ],
)
def test_refresh_failure_classification(
    answer: Answer, error: type[OAuthError], attrs: dict[str, Any]
) -> None:
    """T5: network, 408, 429, 5xx are transient; invalid_grant & co end the grant; other 4xx keep it."""
    with pytest.raises(error) as info:
        run_refresh(answer)
    assert type(info.value) is error
    for name, value in attrs.items():
        assert getattr(info.value, name) == value


def test_grant_ended_has_a_hint() -> None:
    """T5: invalid_grant tells the user to log in again."""
    with pytest.raises(GrantEndedError) as info:
        run_refresh(
            json_response(400, {"error": "invalid_grant", "error_description": "grant request is invalid"})
        )
    assert "grant request is invalid" in str(info.value)
    assert info.value.hint is not None


def test_no_refresh_token_ends_the_grant_without_a_request() -> None:
    """T5: with no refresh token there is nothing to send; the grant has ended."""
    driver = FakeDriver()
    with pytest.raises(GrantEndedError):
        run_sync(refresh(tokens(refresh_token=None), PUBLIC, policy=POLICY), driver)
    assert driver.requests == []


@pytest.mark.parametrize(
    "registration",
    [
        Registration(issuer="https://other.example.com", client_id="pub"),
        Registration(issuer=AS, client_id="someone-else"),
    ],
)
def test_refresh_with_foreign_registration_is_refused(registration: Registration) -> None:
    """T2, D7: tokens are never sent with another issuer's or another client's registration."""
    driver = FakeDriver()
    with pytest.raises(PolicyError):
        run_sync(refresh(tokens(), registration, policy=POLICY), driver)
    assert driver.requests == []


def test_persisted_token_endpoint_passes_the_policy() -> None:
    """S1: a persisted token endpoint is checked again before a refresh is sent."""
    with pytest.raises(PolicyError):
        run_sync(
            refresh(tokens(token_endpoint="http://auth.example.com/token"), PUBLIC, policy=POLICY),
            FakeDriver(),
        )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("999999999", 86400.0),
        ("Thu, 01 Jan 1970 00:00:30 GMT", 20.0),
        ("Thu, 01 Jan 1970 00:00:05 GMT", 0.0),
        ("Thu, 01 Foo 1970 00:00:30 GMT", None),
        ("Thu, 31 Feb 1970 00:00:30 GMT", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("١٢", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """T5: Retry-After as delta-seconds or an HTTP date, counted from received_at, capped at a day."""
    assert parse_retry_after(value, received_at=10.0) == expected


def test_tokenset_round_trip_and_repr() -> None:
    """T3, T4: a TokenSet survives msgspec with the Secret hooks; its repr hides the tokens."""
    held = tokens()
    data = msgspec.json.encode(held, enc_hook=enc_hook)
    assert msgspec.json.decode(data, type=TokenSet, dec_hook=dec_hook) == held
    assert "old-access" not in repr(held)
    assert "old-refresh" not in repr(held)
    minimal = (
        b'{"access_token": "a", "issuer": "https://a", "client_id": "c", "token_endpoint": "https://a/t"}'
    )
    assert msgspec.json.decode(minimal, type=TokenSet, dec_hook=dec_hook).refresh_token is None


def test_bearer_header_is_the_only_way_out() -> None:
    """T1: the access token goes in an Authorization: Bearer header."""
    assert bearer_header(Secret("tok")) == ("authorization", "Bearer tok")


def test_no_request_carries_a_token_in_its_url() -> None:
    """T1: no request the core makes has a token in its URL."""
    _, driver = run_refresh(json_response(200, {"access_token": "new-access", "token_type": "Bearer"}))
    for request in driver.requests:
        assert "old-refresh" not in request.url
        assert "old-access" not in request.url
        assert "old-refresh" not in repr(request)

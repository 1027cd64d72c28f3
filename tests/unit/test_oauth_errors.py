"""Errors: the tree, user-facing messages with hints, and no secret in any message (DESIGN rule 8)."""

from __future__ import annotations

from typing import Any

import pytest

from brokerd.oauth import (
    AuthorizationDeniedError,
    CallbackError,
    Discovery,
    DiscoveryError,
    Fetch,
    GrantEndedError,
    HttpRequest,
    OAuthError,
    PeerError,
    PolicyError,
    Registration,
    RegistrationError,
    RequestRejectedError,
    TokenSet,
    TransientError,
    UrlPolicy,
    authorization_code_flow,
    device_flow,
    loopback_redirect_uri,
    refresh,
    register,
    revoke,
    run_sync,
)
from brokerd.oauth._text import untrusted
from brokerd.oauth.testing import FakeDriver, counter_entropy, json_response
from brokerd.secret import Secret

AS = "https://auth.example.com"
POLICY = UrlPolicy()
REFRESH = "rt-SUPERSECRET-0123456789"
ACCESS = "at-SUPERSECRET-9876543210"
CLIENT_SECRET = "cs-SUPERSECRET-abcdef"
CONF = Registration(
    issuer=AS,
    client_id="conf",
    client_secret=Secret(CLIENT_SECRET),
    token_endpoint_auth_method="client_secret_post",
)
DISCOVERY = Discovery(
    server_url="https://mcp.example.com/mcp",
    resource="https://mcp.example.com/mcp",
    issuer=AS,
    authorization_endpoint=f"{AS}/authorize",
    token_endpoint=f"{AS}/token",
    registration_endpoint=f"{AS}/register",
    device_authorization_endpoint=f"{AS}/device",
    code_challenge_methods_supported=("S256",),
)
TOKENS = TokenSet(
    access_token=Secret(ACCESS),
    refresh_token=Secret(REFRESH),
    issuer=AS,
    client_id="conf",
    token_endpoint=f"{AS}/token",
    revocation_endpoint=f"{AS}/revoke",
)
SECRETS = (REFRESH, ACCESS, CLIENT_SECRET, "the-code-SECRET", "dev-code-SECRET")


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (PeerError, OAuthError),
        (DiscoveryError, PeerError),
        (CallbackError, PeerError),
        (PolicyError, OAuthError),
        (RegistrationError, OAuthError),
        (AuthorizationDeniedError, OAuthError),
        (GrantEndedError, OAuthError),
        (RequestRejectedError, OAuthError),
        (TransientError, OAuthError),
    ],
)
def test_error_tree(cls: type[OAuthError], parent: type[OAuthError]) -> None:
    """Errors: every error is an OAuthError in the documented place of the tree."""
    assert issubclass(cls, parent)
    assert cls.__doc__


def test_grant_ending_and_transient_are_disjoint() -> None:
    """T5: the error that ends a grant and the one that keeps it are different branches."""
    assert not issubclass(TransientError, GrantEndedError)
    assert not issubclass(GrantEndedError, TransientError)
    assert not issubclass(RequestRejectedError, GrantEndedError)


def test_message_and_hint() -> None:
    """Errors: str() is the message; the hint is separate."""
    exc = RegistrationError("no client", hint="set auth.oauth21.clientId", error="x")
    assert (str(exc), exc.hint, exc.error) == ("no client", "set auth.oauth21.clientId", "x")


def echo(status: int = 400, error: str = "invalid_grant") -> Any:
    """A server that echoes secrets back in its error description (each flow blanks the ones it holds)."""
    return json_response(status, {"error": error, "error_description": "bad: " + " ".join(SECRETS)})


def assert_clean(exc: BaseException, *secrets: str) -> None:
    text = f"{exc} {getattr(exc, 'hint', '')} {exc!r}"
    for secret in secrets:
        assert secret not in text


@pytest.mark.parametrize("error", ["invalid_grant", "invalid_scope", "invalid_client"])
def test_refresh_errors_never_echo_secrets(error: str) -> None:
    """T5, rule 8: refresh, access token and client secret echoed by the token endpoint are blanked."""
    driver = FakeDriver({f"POST {AS}/token": echo(error=error)})
    with pytest.raises(OAuthError) as info:
        run_sync(refresh(TOKENS, CONF, policy=POLICY), driver)
    assert "<redacted>" in str(info.value)
    assert_clean(info.value, REFRESH, ACCESS, CLIENT_SECRET)


def test_code_exchange_errors_never_echo_the_code() -> None:
    """A4, rule 8: an error from the code exchange does not show the code or the verifier."""
    driver = FakeDriver(
        {f"POST {AS}/token": echo()}, redirect=lambda e: {"code": "the-code-SECRET", "state": e.state}
    )
    flow = authorization_code_flow(
        DISCOVERY,
        CONF,
        policy=POLICY,
        redirect_uri=loopback_redirect_uri(9876),
        scopes=None,
        entropy=counter_entropy(),
    )
    with pytest.raises(GrantEndedError) as info:
        run_sync(flow, driver)
    assert_clean(info.value, "the-code-SECRET", CLIENT_SECRET)
    verifier = driver.requests[0].form()["code_verifier"]
    assert verifier not in str(info.value)


def test_device_errors_never_echo_the_device_code() -> None:
    """A8, rule 8: a device-grant poll error does not show the device code."""
    device = json_response(
        200,
        {
            "device_code": "dev-code-SECRET",
            "user_code": "U",
            "verification_uri": f"{AS}/d",
            "expires_in": 100,
        },
    )
    driver = FakeDriver({f"POST {AS}/device": device, f"POST {AS}/token": echo(error="invalid_request")})
    with pytest.raises(RequestRejectedError) as info:
        run_sync(device_flow(DISCOVERY, CONF, policy=POLICY, scopes=None), driver)
    assert_clean(info.value, "dev-code-SECRET", CLIENT_SECRET)


def test_revocation_details_never_echo_tokens() -> None:
    """T6, rule 8: revocation outcome details do not show the tokens."""
    driver = FakeDriver({f"POST {AS}/revoke": echo(error="invalid_request")})
    outcomes = run_sync(revoke(TOKENS, CONF, policy=POLICY), driver)
    for outcome in outcomes:
        for secret in (REFRESH, ACCESS, CLIENT_SECRET):
            assert secret not in outcome.detail
        assert "<redacted>" in outcome.detail


def test_registration_errors_never_echo_secrets() -> None:
    """R3, rule 8: a registration refusal is shown without secrets it echoes."""
    driver = FakeDriver({f"POST {AS}/register": echo(error="invalid_client_metadata")})
    flow = register(DISCOVERY, policy=POLICY, redirect_uris=[loopback_redirect_uri(1)], now=0.0)
    with pytest.raises(RegistrationError) as info:
        run_sync(flow, driver)
    assert "invalid_client_metadata" in str(info.value)


def test_request_repr_hides_body_and_authorization() -> None:
    """T1, rule 8: a request's repr shows neither its body nor its Authorization header."""
    request = HttpRequest(
        "POST", f"{AS}/token", (("authorization", "Basic " + CLIENT_SECRET),), REFRESH.encode()
    )
    text = repr(request)
    assert CLIENT_SECRET not in text
    assert REFRESH not in text
    assert f"{AS}/token" in text


def test_fetch_effect_repr_hides_secrets() -> None:
    """Rule 8: logging an effect does not leak what the request carries."""
    driver = FakeDriver({f"POST {AS}/token": echo()})
    flow = refresh(TOKENS, CONF, policy=POLICY)
    effect = next(flow)
    assert isinstance(effect, Fetch)
    assert REFRESH not in repr(effect)
    assert CLIENT_SECRET not in repr(effect)
    del driver


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("a\x1b[31mred\x1b[0m", "a [31mred [0m"),
        ("line1\nline2\r\n\tend", "line1 line2 end"),
        ("rtl\u202eevil", "rtl evil"),
        ("x" * 300, "x" * 199 + "…"),
        (42, ""),
        (None, ""),
    ],
)
def test_untrusted_text(value: object, expected: str) -> None:
    """A5: untrusted server text loses control and formatting characters and is cut to 200 characters."""
    assert untrusted(value) == expected

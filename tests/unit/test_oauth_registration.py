"""Client registration (R1-R4) and client authentication: configuration and canned answers in."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import pytest

from brokerd.oauth import (
    Discovery,
    Fetch,
    PeerError,
    PolicyError,
    Registration,
    RegistrationError,
    TransientError,
    TransportFailure,
    UrlPolicy,
    client_auth,
    client_metadata_document,
    loopback_redirect_uri,
    register,
    run_sync,
)
from brokerd.oauth.testing import Answer, FakeDriver, json_response
from brokerd.secret import Secret, dec_hook, enc_hook

AS = "https://auth.example.com"
REDIRECT = loopback_redirect_uri(9876)
NOW = 1_700_000_000.0
POLICY = UrlPolicy()
CIMD_URL = "https://client.example.com/ncp-broker.json"


def discovery(**changes: Any) -> Discovery:
    base: dict[str, Any] = {
        "server_url": "https://mcp.example.com/mcp",
        "resource": "https://mcp.example.com/mcp",
        "issuer": AS,
        "authorization_endpoint": f"{AS}/authorize",
        "token_endpoint": f"{AS}/token",
        "registration_endpoint": f"{AS}/register",
        "code_challenge_methods_supported": ("S256",),
    }
    base.update(changes)
    return Discovery(**base)


def run(d: Discovery, answer: Answer | None = None, **kwargs: Any) -> tuple[Registration, FakeDriver]:
    driver = FakeDriver({f"POST {AS}/register": answer} if answer is not None else {})
    options: dict[str, Any] = {"policy": POLICY, "redirect_uris": [REDIRECT], "now": NOW, **kwargs}
    return run_sync(register(d, **options), driver), driver


@pytest.mark.parametrize(
    ("secret", "supported", "method"),
    [
        (None, None, "none"),
        (None, ("client_secret_basic",), "none"),
        ("s3cret", None, "client_secret_basic"),
        ("s3cret", ("client_secret_basic", "client_secret_post"), "client_secret_basic"),
        ("s3cret", ("client_secret_post", "client_secret_basic"), "client_secret_basic"),
        ("s3cret", ("client_secret_post",), "client_secret_post"),
        ("s3cret", ("none", "private_key_jwt"), "none"),
    ],
)
def test_preregistered_client_method(
    secret: str | None, supported: tuple[str, ...] | None, method: str
) -> None:
    """R1: a configured clientId is used with the auth method the AS supports; no request is made."""
    d = discovery(token_endpoint_auth_methods_supported=supported)
    reg, driver = run(d, client_id="my-client", client_secret=Secret(secret) if secret else None)
    assert driver.requests == []
    assert (reg.client_id, reg.token_endpoint_auth_method, reg.source) == (
        "my-client",
        method,
        "preregistered",
    )
    assert reg.issuer == AS
    assert reg.redirect_uris == (REDIRECT,)
    assert reg.registered_at == NOW
    assert (reg.client_secret is not None) == (method != "none")


def test_preregistered_client_wins_over_everything() -> None:
    """R1: a configured clientId is preferred to a metadata document and to dynamic registration."""
    d = discovery(client_id_metadata_document_supported=True)
    reg, driver = run(d, client_id="my-client", client_metadata_url=CIMD_URL)
    assert reg.source == "preregistered"
    assert driver.requests == []


def test_preregistered_secret_with_no_supported_method() -> None:
    """R1: a secret the AS accepts by no supported method is a clear policy error."""
    d = discovery(token_endpoint_auth_methods_supported=("private_key_jwt",))
    with pytest.raises(PolicyError, match="client_secret_basic"):
        run(d, client_id="c", client_secret=Secret("s"))


def test_client_id_metadata_document_when_supported() -> None:
    """R2: with AS support and a configured URL, the URL is the client ID; nothing is registered."""
    reg, driver = run(discovery(client_id_metadata_document_supported=True), client_metadata_url=CIMD_URL)
    assert (reg.client_id, reg.source, reg.token_endpoint_auth_method) == (
        CIMD_URL,
        "metadata_document",
        "none",
    )
    assert driver.requests == []


def test_client_id_metadata_document_needs_as_support() -> None:
    """R2: without AS support the metadata URL is not used; dynamic registration follows (R3)."""
    reg, driver = run(discovery(), json_response(201, {"client_id": "dyn"}), client_metadata_url=CIMD_URL)
    assert reg.source == "dynamic"
    assert len(driver.requests) == 1


@pytest.mark.parametrize(
    "url", ["http://client.example.com/c.json", "https://client.example.com", "https://client.example.com/"]
)
def test_client_id_metadata_document_url_must_be_https_with_path(url: str) -> None:
    """R2: the client metadata URL must be https and have a path."""
    with pytest.raises(PolicyError, match="https URL with a path"):
        run(discovery(client_id_metadata_document_supported=True), client_metadata_url=url)


def test_client_metadata_document_names_itself() -> None:
    """R2: the document to publish has its own URL as client_id and the refresh grant."""
    doc = msgspec.json.decode(client_metadata_document(CIMD_URL, redirect_uris=[REDIRECT], client_name="ncp"))
    assert doc["client_id"] == CIMD_URL
    assert doc["redirect_uris"] == [REDIRECT]
    assert "refresh_token" in doc["grant_types"]


def test_dynamic_registration_request_shape() -> None:
    """R3: the RFC 7591 request is a native public client with loopback redirects and the refresh grant."""
    reg, driver = run(discovery(), json_response(201, {"client_id": "dyn-1"}), scopes=["read", "write"])
    (request,) = driver.requests
    assert (request.method, request.url) == ("POST", f"{AS}/register")
    assert request.header("content-type") == "application/json"
    assert request.json() == {
        "client_name": "ncp-broker",
        "application_type": "native",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "read write",
    }
    assert (reg.client_id, reg.client_secret, reg.token_endpoint_auth_method) == ("dyn-1", None, "none")
    assert reg.issuer == AS


def test_dynamic_registration_adds_device_grant_when_offered() -> None:
    """R3, A8: the device grant is registered too when the AS offers it and lists it as supported."""
    device = "urn:ietf:params:oauth:grant-type:device_code"
    d = discovery(
        device_authorization_endpoint=f"{AS}/device", grant_types_supported=("authorization_code", device)
    )
    _, driver = run(d, json_response(201, {"client_id": "dyn"}))
    assert driver.requests[0].json()["grant_types"] == ["authorization_code", "refresh_token", device]
    assert "scope" not in driver.requests[0].json()


@pytest.mark.parametrize(
    ("answer", "method"),
    [
        ({"client_id": "c", "client_secret": "s", "client_secret_expires_at": 0}, "client_secret_basic"),
        (
            {"client_id": "c", "client_secret": "s", "token_endpoint_auth_method": "client_secret_post"},
            "client_secret_post",
        ),
        ({"client_id": "c", "token_endpoint_auth_method": "none"}, "none"),
    ],
)
def test_dynamic_registration_uses_what_the_server_returned(answer: dict[str, Any], method: str) -> None:
    """R3: the server's answer decides the client secret and auth method."""
    reg, _ = run(discovery(), json_response(201, answer))
    assert reg.token_endpoint_auth_method == method
    assert reg.client_secret_expires_at is None


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            json_response(201, {"client_id": "c", "token_endpoint_auth_method": "private_key_jwt"}),
            RegistrationError,
        ),
        (
            json_response(201, {"client_id": "c", "token_endpoint_auth_method": "client_secret_basic"}),
            PeerError,
        ),
        (json_response(201, {"client_secret": "no id"}), PeerError),
        (json_response(201, b"<html>"), PeerError),
        (TransportFailure("timed out"), TransientError),
        (json_response(503, {}), TransientError),
    ],
)
def test_dynamic_registration_unusable_answers(answer: Answer, error: type[Exception]) -> None:
    """R3: unusable, unsupported or transient registration answers raise the matching error."""
    with pytest.raises(error):
        run(discovery(), answer)


def test_failed_registration_is_meaningful() -> None:
    """R3: a refusal names the server's error and description and hints at the fix."""
    refusal = json_response(
        400, {"error": "invalid_client_metadata", "error_description": "scope 'admin' is not allowed\x1b[2J"}
    )
    with pytest.raises(RegistrationError) as info:
        run(discovery(), refusal, scopes=["admin"])
    exc = info.value
    assert exc.error == "invalid_client_metadata"
    assert "invalid_client_metadata" in exc.message
    assert "scope 'admin' is not allowed" in exc.message
    assert "\x1b" not in exc.message
    assert exc.hint is not None
    assert "auth.oauth21.clientId" in exc.hint


def test_no_registration_possible_tells_user_to_configure_client_id() -> None:
    """R4: no clientId, no metadata document, no registration endpoint: the hint names clientId."""
    with pytest.raises(RegistrationError) as info:
        run(discovery(registration_endpoint=None), client_metadata_url=CIMD_URL)
    assert info.value.hint is not None
    assert "auth.oauth21.clientId" in info.value.hint


@pytest.mark.parametrize("status", [404, 405])
def test_missing_registration_endpoint_is_r4(status: int) -> None:
    """R4, D6: a legacy /register that does not exist gives the configure-clientId error."""
    with pytest.raises(RegistrationError) as info:
        run(discovery(source="legacy_defaults"), json_response(status, b"Not Found"))
    assert info.value.hint is not None
    assert "auth.oauth21.clientId" in info.value.hint


def test_registration_endpoint_passes_the_url_policy() -> None:
    """S1: the registration endpoint is checked again before it is used."""
    with pytest.raises(PolicyError):
        run(
            discovery(registration_endpoint="http://auth.example.com/register"),
            json_response(201, {"client_id": "c"}),
        )


def test_redirect_uris_must_be_loopback() -> None:
    """A6: registration refuses redirect URIs that are not on loopback."""
    d = discovery()
    with pytest.raises(PolicyError):
        run_sync(register(d, policy=POLICY, redirect_uris=["https://evil.example/cb"], now=NOW), FakeDriver())


def test_registration_round_trips_and_hides_secrets() -> None:
    """R1-R3: a Registration survives msgspec with Secret hooks; repr shows no secret; old records load."""
    reg, _ = run(
        discovery(),
        json_response(
            201,
            {"client_id": "c", "client_secret": "top-secret-value", "registration_access_token": "rat-value"},
        ),
    )
    data = msgspec.json.encode(reg, enc_hook=enc_hook)
    assert msgspec.json.decode(data, type=Registration, dec_hook=dec_hook) == reg
    assert "top-secret-value" not in repr(reg)
    assert "rat-value" not in repr(reg)
    old = msgspec.json.decode(
        b'{"issuer": "https://a", "client_id": "c"}', type=Registration, dec_hook=dec_hook
    )
    assert old.token_endpoint_auth_method == "none"


def test_registration_by_hand_yields_one_fetch() -> None:
    """R3: driven by hand, dynamic registration is exactly one Fetch, then the result."""
    flow = register(discovery(), policy=POLICY, redirect_uris=[REDIRECT], now=NOW)
    effect = next(flow)
    assert isinstance(effect, Fetch)
    with pytest.raises(StopIteration) as stop:
        flow.send(json_response(201, {"client_id": "abc"}))
    assert stop.value.value.client_id == "abc"


@pytest.mark.parametrize(
    ("method", "client_id", "secret", "headers", "form"),
    [
        ("none", "pub", None, (), (("client_id", "pub"),)),
        ("client_secret_post", "conf", "s3", (), (("client_id", "conf"), ("client_secret", "s3"))),
        (
            "client_secret_basic",
            "conf",
            "s3",
            (("authorization", "Basic " + base64.b64encode(b"conf:s3").decode()),),
            (),
        ),
        (
            "client_secret_basic",
            "a b:c",
            "p@ss w+rd%",
            (("authorization", "Basic " + base64.b64encode(b"a+b%3Ac:p%40ss+w%2Brd%25").decode()),),
            (),
        ),
    ],
)
def test_client_auth(
    method: str,
    client_id: str,
    secret: str | None,
    headers: tuple[tuple[str, str], ...],
    form: tuple[tuple[str, str], ...],
) -> None:
    """R1, T3: Basic form-urlencodes id and secret before base64 (RFC 6749 §2.3.1); post/none use the form."""
    reg = Registration(
        issuer=AS,
        client_id=client_id,
        client_secret=Secret(secret) if secret else None,
        token_endpoint_auth_method=method,  # type: ignore[arg-type]
    )
    assert client_auth(reg) == (headers, form)


def test_client_auth_without_secret_is_refused() -> None:
    """R1: a secret-based method without a secret is a policy error, not a silent public request."""
    reg = Registration(issuer=AS, client_id="c", token_endpoint_auth_method="client_secret_basic")
    with pytest.raises(PolicyError, match="no client secret"):
        client_auth(reg)

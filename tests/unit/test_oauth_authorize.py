"""Authorization (A1-A9): PKCE, scopes, resource, the authorization URL, callback checks, pasted input."""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from brokerd.oauth import (
    AuthorizationDeniedError,
    AwaitRedirect,
    CallbackError,
    Discovery,
    Fetch,
    HttpResponse,
    PolicyError,
    Registration,
    TokenSet,
    TransientError,
    UrlPolicy,
    authorization_code_flow,
    loopback_redirect_uri,
    make_pkce,
    parse_callback_query,
    parse_pasted_response,
    select_scopes,
    step_up_scopes,
)
from brokerd.oauth.testing import counter_entropy, json_response

AS = "https://auth.example.com"
MCP = "https://mcp.example.com/mcp"
REDIRECT = loopback_redirect_uri(9876)
POLICY = UrlPolicy()
TOKEN_OK = json_response(
    200, {"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-1"}
)


def discovery(**changes: Any) -> Discovery:
    base: dict[str, Any] = {
        "server_url": MCP,
        "resource": MCP,
        "issuer": AS,
        "authorization_endpoint": f"{AS}/authorize",
        "token_endpoint": f"{AS}/token",
        "code_challenge_methods_supported": ("S256",),
    }
    base.update(changes)
    return Discovery(**base)


REGISTRATION = Registration(issuer=AS, client_id="client-1", redirect_uris=(REDIRECT,))


def start(
    d: Discovery | None = None, scopes: tuple[str, ...] | None = ("read",), seed: bytes = b"s"
) -> tuple[Any, AwaitRedirect]:
    flow = authorization_code_flow(
        d or discovery(),
        REGISTRATION,
        policy=POLICY,
        redirect_uri=REDIRECT,
        scopes=scopes,
        entropy=counter_entropy(seed),
    )
    effect = next(flow)
    assert isinstance(effect, AwaitRedirect)
    return flow, effect


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# ---- A1 PKCE ----------------------------------------------------------------------------------------


def test_pkce_rfc7636_appendix_b_vector() -> None:
    """A1: 32 entropy bytes give the RFC 7636 Appendix B verifier and S256 challenge."""
    octets = bytes(
        [
            116,
            24,
            223,
            180,
            151,
            153,
            224,
            37,
            79,
            250,
            96,
            125,
            216,
            173,
            187,
            186,
            22,
            212,
            37,
            77,
            105,
            214,
            191,
            240,
            91,
            88,
            5,
            88,
            83,
            132,
            141,
            121,
        ]
    )
    pkce = make_pkce(lambda n: octets[:n])
    assert pkce.verifier.reveal() == "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce.challenge == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert pkce.method == "S256"
    assert "dBjft" not in repr(pkce)


def test_pkce_takes_exactly_32_bytes() -> None:
    """A1: the verifier is built from exactly 32 bytes; a short entropy source is refused."""
    asked: list[int] = []

    def entropy(n: int) -> bytes:
        asked.append(n)
        return b"\x00" * n

    assert len(make_pkce(entropy).verifier.reveal()) == 43
    assert asked == [32]
    with pytest.raises(ValueError, match="exactly 32"):
        make_pkce(lambda n: b"short")


@pytest.mark.parametrize("methods", [None, (), ("plain",), ("s256",)])
def test_refuses_without_s256(methods: tuple[str, ...] | None) -> None:
    """A1: no authorization request when code_challenge_methods_supported is absent or lacks S256."""
    flow = authorization_code_flow(
        discovery(code_challenge_methods_supported=methods),
        REGISTRATION,
        policy=POLICY,
        redirect_uri=REDIRECT,
        scopes=None,
        entropy=counter_entropy(),
    )
    with pytest.raises(PolicyError, match="PKCE"):
        next(flow)


def test_legacy_default_endpoints_assume_s256() -> None:
    """A1, D6: a 2025-03-26 server without metadata is still sent S256 (that revision required it)."""
    _, effect = start(discovery(code_challenge_methods_supported=None, source="legacy_defaults"))
    assert query(effect.authorization_url)["code_challenge_method"] == ["S256"]


# ---- A2 scopes, A3 resource ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "challenge", "prm", "as_scopes", "expected"),
    [
        (None, ("a",), ("a", "b"), None, ("a",)),
        (None, None, ("a", "b"), None, ("a", "b")),
        (None, None, None, None, None),
        (None, (), ("x",), None, ("x",)),
        (("c",), ("a",), ("a", "b"), None, ("c",)),
        ((), ("a",), None, None, None),
        (None, ("a", "a", "b"), None, None, ("a", "b")),
        (None, ("a",), None, ("a", "offline_access"), ("a", "offline_access")),
        (None, None, ("a", "b"), ("a", "b", "offline_access"), ("a", "b", "offline_access")),
        (None, None, None, ("offline_access",), None),
        (None, ("offline_access", "a"), None, ("offline_access",), ("offline_access", "a")),
        (("c",), None, None, ("c", "offline_access"), ("c", "offline_access")),
        (None, ("a",), None, ("a",), ("a",)),
    ],
)
def test_scope_selection(
    configured: tuple[str, ...] | None,
    challenge: tuple[str, ...] | None,
    prm: tuple[str, ...] | None,
    as_scopes: tuple[str, ...] | None,
    expected: tuple[str, ...] | None,
) -> None:
    """A2: configured, else 401 scope, else PRM scopes, else omit; offline_access only if the AS lists it."""
    d = discovery(challenge_scope=challenge, resource_scopes_supported=prm, scopes_supported=as_scopes)
    assert select_scopes(d, configured) == expected


def test_authorization_url_shape() -> None:
    """A1, A3, A4: response_type, client_id, redirect_uri, S256 challenge, state, scope and resource."""
    _, effect = start(scopes=("read", "write"))
    parts = urlsplit(effect.authorization_url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{AS}/authorize"
    params = query(effect.authorization_url)
    assert {k: v[0] for k, v in params.items() if k not in ("code_challenge", "state")} == {
        "response_type": "code",
        "client_id": "client-1",
        "redirect_uri": REDIRECT,
        "code_challenge_method": "S256",
        "scope": "read write",
        "resource": MCP,
    }
    assert len(params["code_challenge"][0]) == 43
    assert params["state"] == [effect.state]
    assert effect.redirect_uri == REDIRECT


def test_scope_omitted_when_none() -> None:
    """A2: with no scopes the authorization URL has no scope parameter."""
    _, effect = start(scopes=None)
    assert "scope" not in query(effect.authorization_url)


def test_resource_is_prm_resource_verbatim() -> None:
    """A3: resource in authorization and token requests is the PRM resource exactly as published."""
    flow, effect = start(discovery(resource="https://mcp.example.com"))
    assert query(effect.authorization_url)["resource"] == ["https://mcp.example.com"]
    fetch = flow.send({"code": "c", "state": effect.state})
    assert isinstance(fetch, Fetch)
    assert fetch.request.form()["resource"] == "https://mcp.example.com"


def test_existing_query_of_authorization_endpoint_is_kept() -> None:
    """A7: an authorization endpoint with its own query keeps it; our parameters are added."""
    _, effect = start(discovery(authorization_endpoint=f"{AS}/authorize?tenant=t1&state=evil"))
    params = query(effect.authorization_url)
    assert params["tenant"] == ["t1"]
    assert params["state"] == [effect.state]


# ---- A4 state, A5 iss ---------------------------------------------------------------------------------


def test_full_login_by_hand() -> None:
    """A1, A4, T1: the callback's code is exchanged with the verifier of the challenge; no token in URLs."""
    flow, effect = start()
    fetch = flow.send({"code": "the-code", "state": effect.state})
    assert isinstance(fetch, Fetch)
    request = fetch.request
    assert (request.method, request.url) == ("POST", f"{AS}/token")
    form = request.form()
    assert form["grant_type"] == "authorization_code"
    assert form["code"] == "the-code"
    assert form["redirect_uri"] == REDIRECT
    assert form["client_id"] == "client-1"
    digest = hashlib.sha256(form["code_verifier"].encode()).digest()
    assert (
        base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        == query(effect.authorization_url)["code_challenge"][0]
    )
    with pytest.raises(StopIteration) as stop:
        flow.send(HttpResponse(200, (), TOKEN_OK.body, received_at=100.0))
    tokens = stop.value.value
    assert isinstance(tokens, TokenSet)
    assert tokens.access_token.reveal() == "at-1"
    assert tokens.expires_at == 3700.0
    assert tokens.scopes == ("read",)
    assert "at-1" not in request.url


def test_state_is_random_per_login() -> None:
    """A4: each login has its own state and verifier, both from entropy."""
    _, first = start(seed=b"one")
    _, second = start(seed=b"two")
    assert first.state != second.state
    assert len(first.state) == 43


@pytest.mark.parametrize(
    "callback",
    [
        {"code": "c"},
        {"code": "c", "state": ""},
        {"code": "c", "state": "wrong"},
        {"error": "access_denied", "error_description": "EVIL-TEXT", "state": "wrong"},
    ],
)
def test_missing_or_wrong_state_is_discarded(callback: dict[str, str]) -> None:
    """A4: a callback with missing or wrong state is discarded with a specific error; nothing else happens."""
    flow, _ = start()
    with pytest.raises(CallbackError, match="state") as info:
        flow.send(callback)
    assert "EVIL-TEXT" not in str(info.value)


def test_replayed_callback_is_discarded() -> None:
    """A4: a callback of an earlier login does not complete a later one (state is single use)."""
    first_flow, first = start(seed=b"first")
    assert isinstance(first_flow.send({"code": "c", "state": first.state}), Fetch)
    with pytest.raises(StopIteration):
        first_flow.send(TOKEN_OK)
    second_flow, _ = start(seed=b"second")
    with pytest.raises(CallbackError, match="state"):
        second_flow.send({"code": "c", "state": first.state})


@pytest.mark.parametrize(
    ("advertised", "iss", "accepted"),
    [
        (True, AS, True),
        (True, None, False),
        (True, AS + "/", False),
        (True, "https://AUTH.example.com", False),
        (True, "https://evil.example.com", False),
        (False, None, True),
        (False, AS, True),
        (False, "https://evil.example.com", False),
        (False, "", False),
    ],
)
def test_iss_parameter_rules(advertised: bool, iss: str | None, accepted: bool) -> None:
    """A5: advertised means required and identical; present but not advertised must still be identical."""
    flow, effect = start(discovery(authorization_response_iss_parameter_supported=advertised))
    callback = {"code": "c", "state": effect.state}
    if iss is not None:
        callback["iss"] = iss
    if accepted:
        assert isinstance(flow.send(callback), Fetch)
    else:
        with pytest.raises(CallbackError, match=r"iss|issuer"):
            flow.send(callback)


def test_iss_mismatch_does_not_surface_error_parameters() -> None:
    """A5: with a wrong iss the callback's error and description are neither acted on nor shown."""
    flow, effect = start(discovery(authorization_response_iss_parameter_supported=True))
    with pytest.raises(CallbackError) as info:
        flow.send(
            {
                "state": effect.state,
                "iss": "https://evil.example",
                "error": "access_denied",
                "error_description": "call +1-555-SCAM to fix",
            }
        )
    assert "SCAM" not in str(info.value)
    assert "access_denied" not in str(info.value)


@pytest.mark.parametrize(
    ("params", "error", "code"),
    [
        (
            {"error": "access_denied", "error_description": "User said no"},
            AuthorizationDeniedError,
            "access_denied",
        ),
        ({"error": "invalid_scope"}, AuthorizationDeniedError, "invalid_scope"),
        ({"error": 'bad"code\x00'}, AuthorizationDeniedError, "invalid_error"),
        ({"error": "temporarily_unavailable"}, TransientError, None),
        ({"error": "server_error"}, TransientError, None),
    ],
)
def test_callback_errors_are_surfaced(
    params: dict[str, str], error: type[Exception], code: str | None
) -> None:
    """A5: once state and iss pass, error=access_denied etc. ends the login with that error, plainly."""
    flow, effect = start()
    with pytest.raises(error) as info:
        flow.send({"state": effect.state, **params})
    if code is not None:
        assert isinstance(info.value, AuthorizationDeniedError)
        assert info.value.error == code
        assert code in str(info.value)
    if "error_description" in params:
        assert params["error_description"] in str(info.value)


def test_error_description_is_cut_and_cleaned() -> None:
    """A5: untrusted error_description is stripped of control characters and truncated."""
    flow, effect = start()
    with pytest.raises(AuthorizationDeniedError) as info:
        flow.send(
            {
                "state": effect.state,
                "error": "access_denied",
                "error_description": "\x1b]0;pwn\x07" + "x" * 5000,
            }
        )
    message = str(info.value)
    assert "\x1b" not in message
    assert "\x07" not in message
    assert len(message) < 400


def test_callback_without_code_or_error() -> None:
    """A4: a callback with the right state but no code and no error is discarded."""
    flow, effect = start()
    with pytest.raises(CallbackError, match="neither a code"):
        flow.send({"state": effect.state})


# ---- A6, A7, D7 ---------------------------------------------------------------------------------------


def test_redirect_uri_must_be_loopback() -> None:
    """A6: a login with a non-loopback redirect URI is refused before anything is shown."""
    flow = authorization_code_flow(
        discovery(),
        REGISTRATION,
        policy=POLICY,
        redirect_uri="https://evil.example/cb",
        scopes=None,
        entropy=counter_entropy(),
    )
    with pytest.raises(PolicyError):
        next(flow)


@pytest.mark.parametrize(
    "endpoint",
    [
        "javascript:alert(document.cookie)",
        "data:text/html,hi",
        "file:///etc/passwd",
        "http://auth.example.com/authorize",
        "https://192.168.1.1/authorize",
    ],
)
def test_authorization_url_passes_the_policy(endpoint: str) -> None:
    """A7, S1, S2: the authorization URL is https (loopback http only when allowed); other schemes refused."""
    flow = authorization_code_flow(
        discovery(authorization_endpoint=endpoint),
        REGISTRATION,
        policy=POLICY,
        redirect_uri=REDIRECT,
        scopes=None,
        entropy=counter_entropy(),
    )
    with pytest.raises(PolicyError):
        next(flow)


def test_loopback_http_authorization_url_in_dev_mode() -> None:
    """A7: http to loopback is accepted when the policy allows it."""
    d = discovery(
        authorization_endpoint="http://127.0.0.1:9000/authorize", token_endpoint="http://127.0.0.1:9000/token"
    )
    flow = authorization_code_flow(
        d,
        REGISTRATION,
        policy=UrlPolicy(allow_insecure_loopback=True),
        redirect_uri=REDIRECT,
        scopes=None,
        entropy=counter_entropy(),
    )
    assert isinstance(next(flow), AwaitRedirect)


def test_registration_of_another_issuer_is_refused() -> None:
    """D7: a client id registered at one issuer is never sent to another."""
    other = Registration(issuer="https://old-as.example.com", client_id="old-client")
    flow = authorization_code_flow(
        discovery(), other, policy=POLICY, redirect_uri=REDIRECT, scopes=None, entropy=counter_entropy()
    )
    with pytest.raises(PolicyError, match="belongs to"):
        next(flow)


# ---- A8 pasted responses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{REDIRECT}?code=abc&state=S", {"code": "abc", "state": "S"}),
        (
            f"  {REDIRECT}?code=abc&state=S&iss=https%3A%2F%2Fauth.example.com \n",
            {"code": "abc", "state": "S", "iss": AS},
        ),
        ("HTTP://127.0.0.1:9876/callback?code=abc&state=S", {"code": "abc", "state": "S"}),
        ("?code=abc&state=S", {"code": "abc", "state": "S"}),
        ("code=abc&state=S", {"code": "abc", "state": "S"}),
        ("abc123-_.~", {"code": "abc123-_.~", "state": "mine"}),
        ("abc==", {"code": "abc==", "state": "mine"}),
        (f"{REDIRECT}?error=access_denied&state=S", {"error": "access_denied", "state": "S"}),
    ],
)
def test_parse_pasted_response(text: str, expected: dict[str, str]) -> None:
    """A8: a whole redirect URL, its query, or a bare code are all accepted."""
    assert dict(parse_pasted_response(text, REDIRECT, "mine")) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "https://evil.example/callback?code=abc&state=S",
        "http://127.0.0.1:9999/callback?code=abc&state=S",
        "http://127.0.0.1:9876/other?code=abc&state=S",
        "two words",
        "code=a&code=b&state=S",
        "x" * 9000,
    ],
)
def test_parse_pasted_response_refuses(text: str) -> None:
    """A8: empty text, another URL, spaces in a code and repeated parameters are refused."""
    with pytest.raises(CallbackError):
        parse_pasted_response(text, REDIRECT, "mine")


def test_pasted_url_state_is_still_checked() -> None:
    """A8, A4: a pasted redirect URL goes through the same state check."""
    flow, effect = start()
    with pytest.raises(CallbackError, match="state"):
        flow.send(parse_pasted_response(f"{REDIRECT}?code=abc&state=other", REDIRECT, effect.state))


def test_bare_code_with_iss_advertised_asks_for_whole_url() -> None:
    """A8, A5: a bare code cannot carry iss; an AS that promises iss makes the flow ask for the whole URL."""
    flow, effect = start(discovery(authorization_response_iss_parameter_supported=True))
    with pytest.raises(CallbackError) as info:
        flow.send(parse_pasted_response("abc", REDIRECT, effect.state))
    assert info.value.hint is not None
    assert "whole address" in info.value.hint


def test_bare_code_completes_a_login() -> None:
    """A8: a pasted bare code completes a login when the AS does not promise iss."""
    flow, effect = start()
    fetch = flow.send(parse_pasted_response("pasted-code", REDIRECT, effect.state))
    assert isinstance(fetch, Fetch)
    assert fetch.request.form()["code"] == "pasted-code"


def test_parse_callback_query() -> None:
    """A4: the loopback listener's query parses into single-valued parameters; repeats are refused."""
    assert dict(parse_callback_query("code=a%20b&state=s")) == {"code": "a b", "state": "s"}
    with pytest.raises(CallbackError):
        parse_callback_query("state=a&state=b")


# ---- A9 step-up ---------------------------------------------------------------------------------------


def forbidden(header: str | None, body: object = b"") -> HttpResponse:
    headers = (("www-authenticate", header),) if header is not None else ()
    return HttpResponse(403, headers, body if isinstance(body, bytes) else json_response(403, body).body)


@pytest.mark.parametrize(
    ("response", "held", "expected"),
    [
        (forbidden('Bearer error="insufficient_scope", scope="read write"'), ("read",), ("read", "write")),
        (
            forbidden('Bearer error="insufficient_scope", scope="admin"'),
            ("read", "offline_access"),
            ("read", "offline_access", "admin"),
        ),
        (
            forbidden('Bearer scope="read write"', {"error": "insufficient_scope"}),
            ("read",),
            ("read", "write"),
        ),
        (forbidden('Bearer error="invalid_token", scope="x"'), ("read",), None),
        (forbidden('Bearer scope="x"'), ("read",), None),
        (forbidden('Bearer error="insufficient_scope"'), ("read",), None),
        (forbidden(None, {"error": "insufficient_scope"}), ("read",), None),
        (
            HttpResponse(401, (("www-authenticate", 'Bearer error="insufficient_scope", scope="x"'),)),
            ("read",),
            None,
        ),
    ],
)
def test_step_up_scopes(
    response: HttpResponse, held: tuple[str, ...], expected: tuple[str, ...] | None
) -> None:
    """A9: 403 insufficient_scope gives the union of held and challenged scopes; other 403s are surfaced."""
    assert step_up_scopes(held, response) == expected

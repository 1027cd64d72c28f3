"""DPoP (E3, RFC 9449): proofs, nonces, when to use it, DPoP tokens at the token endpoint and in refreshes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from brokerd.oauth import (
    Challenge,
    Discovery,
    GrantEndedError,
    HttpResponse,
    PeerError,
    PolicyError,
    Registration,
    RequestRejectedError,
    Sender,
    TokenSet,
    TransportFailure,
    UrlPolicy,
    access_token_hash,
    authorization_code_flow,
    authorization_header,
    b64url_decode,
    dpop_proof,
    htu,
    nonce_challenge,
    parse_www_authenticate,
    refresh,
    resource_headers,
    response_nonce,
    run_sync,
    wants_dpop,
)
from brokerd.oauth.testing import (
    EXAMPLE_EC_JKT,
    EXAMPLE_EC_JWK,
    Answer,
    FakeDriver,
    counter_entropy,
    fake_signer,
    json_response,
)
from brokerd.secret import Secret

AS = "https://auth.example.com"
TOKEN_URL = f"{AS}/token"
RESOURCE = "https://mcp.example.com/mcp"
POLICY = UrlPolicy()
NOW = 1_000_000.0
KEY = fake_signer()
PUBLIC = Registration(issuer=AS, client_id="pub")
OTHER_JWK = {"kty": "EC", "crv": "P-256", "x": "b3RoZXIteA", "y": "b3RoZXIteQ"}


def parts(jwt: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = jwt.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload))


def sender(**changes: Any) -> Sender:
    fields: dict[str, Any] = {"entropy": counter_entropy(), "dpop_key": KEY}
    fields.update(changes)
    return Sender(**fields)


def discovery(**changes: Any) -> Discovery:
    fields: dict[str, Any] = {
        "server_url": RESOURCE,
        "resource": RESOURCE,
        "issuer": AS,
        "authorization_endpoint": f"{AS}/authorize",
        "token_endpoint": TOKEN_URL,
        "code_challenge_methods_supported": ("S256",),
    }
    fields.update(changes)
    return Discovery(**fields)


def bound_tokens(**changes: Any) -> TokenSet:
    fields: dict[str, Any] = {
        "access_token": Secret("old-access"),
        "refresh_token": Secret("old-refresh"),
        "issuer": AS,
        "client_id": "pub",
        "token_endpoint": TOKEN_URL,
        "resource": RESOURCE,
        "token_type": "DPoP",
        "dpop_jkt": EXAMPLE_EC_JKT,
    }
    fields.update(changes)
    return TokenSet(**fields)


def nonce_demand(nonce: str = "n-1") -> HttpResponse:
    return json_response(400, {"error": "use_dpop_nonce"}, [("dpop-nonce", nonce)])


DPOP_TOKEN = json_response(200, {"access_token": "bound", "token_type": "DPoP", "expires_in": 60})


# ---- proofs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "nonce", "token", "claims"),
    [
        ("POST", TOKEN_URL, None, None, {"htm": "POST", "htu": TOKEN_URL}),
        ("post", f"{TOKEN_URL}?x=1#f", None, None, {"htm": "POST", "htu": TOKEN_URL}),
        ("GET", RESOURCE, "srv-nonce", None, {"htm": "GET", "htu": RESOURCE, "nonce": "srv-nonce"}),
        (
            "POST",
            RESOURCE,
            None,
            "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU",
            {"htm": "POST", "htu": RESOURCE, "ath": "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"},
        ),
    ],
    ids=["token-request", "query-and-fragment-dropped", "nonce", "resource-request-ath"],
)
def test_proof_header_and_claims(
    method: str, url: str, nonce: str | None, token: str | None, claims: dict[str, Any]
) -> None:
    """E3, RFC 9449 §4.2: typ dpop+jwt, alg, the public jwk; jti, htm, htu, iat; nonce and ath when asked."""
    proof = dpop_proof(
        KEY,
        method=method,
        url=url,
        now=NOW + 0.7,
        entropy=counter_entropy(),
        nonce=nonce,
        access_token=Secret(token) if token else None,
    )
    header, payload = parts(proof)
    assert header == {"typ": "dpop+jwt", "jwk": EXAMPLE_EC_JWK, "alg": "ES256"}
    jti = payload.pop("jti")
    assert len(b64url_decode(jti)) == 16
    assert payload == {**claims, "iat": int(NOW)}


def test_each_proof_has_its_own_jti() -> None:
    """E3: a proof is never reused; two proofs for the same request differ in jti."""
    entropy = counter_entropy()
    first = dpop_proof(KEY, method="POST", url=RESOURCE, now=NOW, entropy=entropy)
    second = dpop_proof(KEY, method="POST", url=RESOURCE, now=NOW, entropy=entropy)
    assert parts(first)[1]["jti"] != parts(second)[1]["jti"]


def test_proof_needs_a_public_key() -> None:
    """A signer without a public JWK cannot make a proof (the server needs the key to check it)."""
    with pytest.raises(ValueError, match="public JWK"):
        dpop_proof(
            fake_signer(public_jwk={}), method="POST", url=RESOURCE, now=NOW, entropy=counter_entropy()
        )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://a.example/mcp?key=1", "https://a.example/mcp"),
        ("https://a.example:8443/p#frag", "https://a.example:8443/p"),
        ("https://a.example", "https://a.example"),
    ],
)
def test_htu_has_no_query_or_fragment(url: str, expected: str) -> None:
    """RFC 9449 §4.2: htu is the target URI without query and fragment."""
    assert htu(url) == expected


# ---- nonces ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "nonce"),
    [
        (json_response(200, {}, [("dpop-nonce", "eyJ7S_zG.eyJH0-Z.HX4w-7v")]), "eyJ7S_zG.eyJH0-Z.HX4w-7v"),
        (json_response(200, {}), None),
        (json_response(200, {}, [("dpop-nonce", 'has"quote')]), None),
        (json_response(200, {}, [("dpop-nonce", "has space")]), None),
        (json_response(200, {}, [("dpop-nonce", "x" * 2000)]), None),
        (TransportFailure("refused"), None),
    ],
    ids=["valid", "absent", "quote", "space", "too-long", "no-answer"],
)
def test_response_nonce_takes_only_well_formed_nonces(answer: Answer, nonce: str | None) -> None:
    """RFC 9449 §8.1: a nonce is 1*NQCHAR; anything else in DPoP-Nonce is ignored."""
    assert response_nonce(answer) == nonce


@pytest.mark.parametrize(
    ("answer", "nonce"),
    [
        (nonce_demand("as-n"), "as-n"),
        (json_response(400, {"error": "invalid_dpop_proof"}, [("dpop-nonce", "n")]), None),
        (json_response(400, {"error": "use_dpop_nonce"}), None),
        (
            HttpResponse(
                401,
                (("www-authenticate", 'DPoP error="use_dpop_nonce", algs="ES256"'), ("dpop-nonce", "rs-n")),
            ),
            "rs-n",
        ),
        (
            HttpResponse(
                401, (("www-authenticate", 'Bearer error="use_dpop_nonce"'), ("dpop-nonce", "rs-n"))
            ),
            None,
        ),
        (HttpResponse(401, (("www-authenticate", 'DPoP error="invalid_token"'), ("dpop-nonce", "x"))), None),
        (json_response(200, {}, [("dpop-nonce", "fresh")]), None),
    ],
    ids=[
        "as-400",
        "as-other-error",
        "as-no-header",
        "rs-401-dpop",
        "rs-401-bearer-scheme",
        "rs-other-error",
        "success-is-no-demand",
    ],
)
def test_nonce_challenge(answer: Answer, nonce: str | None) -> None:
    """RFC 9449 §8, §9: retry on 400 use_dpop_nonce (AS) or 401 DPoP use_dpop_nonce (RS) with a nonce."""
    assert nonce_challenge(answer) == nonce


# ---- when to use DPoP -----------------------------------------------------------------------------------

DPOP_401 = parse_www_authenticate('DPoP resource_metadata="https://mcp.example.com/prm", algs="ES256"')
BEARER_401 = parse_www_authenticate('Bearer resource_metadata="https://mcp.example.com/prm"')


@pytest.mark.parametrize(
    ("mode", "changes", "challenges", "expected"),
    [
        ("off", {"dpop_signing_alg_values_supported": ("ES256",)}, DPOP_401, False),
        ("auto", {}, DPOP_401, False),
        ("auto", {"dpop_signing_alg_values_supported": ("ES256",)}, DPOP_401, True),
        ("auto", {"dpop_signing_alg_values_supported": ("ES256",)}, BEARER_401, False),
        ("auto", {"dpop_signing_alg_values_supported": ("EdDSA",)}, DPOP_401, False),
        (
            "auto",
            {
                "dpop_signing_alg_values_supported": ("ES256",),
                "resource_dpop_signing_alg_values_supported": ("ES256",),
            },
            (),
            True,
        ),
        (
            "auto",
            {
                "dpop_signing_alg_values_supported": ("ES256",),
                "resource_dpop_bound_access_tokens_required": True,
            },
            BEARER_401,
            True,
        ),
        ("required", {"dpop_signing_alg_values_supported": ("RS256", "ES256")}, (), True),
    ],
    ids=[
        "off",
        "auto-as-silent",
        "auto-both",
        "auto-resource-takes-bearer-only",
        "auto-no-es256",
        "auto-prm-algs",
        "auto-prm-required",
        "required-as-offers",
    ],
)
def test_wants_dpop(mode: Any, changes: dict[str, Any], challenges: Any, expected: bool) -> None:
    """E3: auto binds only when the AS offers ES256 and the MCP server shows it checks proofs."""
    assert wants_dpop(mode, discovery(**changes), challenges) is expected


@pytest.mark.parametrize("listed", [None, ("EdDSA",)])
def test_required_dpop_refuses_an_as_without_it(listed: tuple[str, ...] | None) -> None:
    """E3: dpop "required" and an AS without ES256 DPoP: refused, with the setting to change."""
    with pytest.raises(PolicyError) as err:
        wants_dpop("required", discovery(dpop_signing_alg_values_supported=listed), DPOP_401)
    assert "requires DPoP" in err.value.message
    assert err.value.hint is not None
    assert "auth.oauth21.dpop" in err.value.hint


# ---- at the token endpoint ------------------------------------------------------------------------------


def run_refresh(answers: list[Answer], held: TokenSet | None = None, **sender_changes: Any) -> Any:
    driver = FakeDriver({f"POST {TOKEN_URL}": answers}, now=NOW)
    flow = refresh(held or bound_tokens(), PUBLIC, policy=POLICY, sender=sender(**sender_changes))
    return run_sync(flow, driver), driver


def test_refresh_of_a_bound_grant_carries_a_proof_and_stays_bound() -> None:
    """E3: a DPoP grant's refresh has a proof for POST <token endpoint>; the answer is a DPoP token."""
    tokens, driver = run_refresh([DPOP_TOKEN])
    (request,) = driver.requests
    header, claims = parts(request.header("dpop") or "")
    assert (header["typ"], claims["htm"], claims["htu"]) == ("dpop+jwt", "POST", TOKEN_URL)
    assert "nonce" not in claims
    assert (tokens.token_type, tokens.dpop_jkt) == ("DPoP", EXAMPLE_EC_JKT)
    assert authorization_header(tokens) == ("authorization", "DPoP bound")


def test_nonce_demand_is_answered_once_with_a_fresh_proof() -> None:
    """E3, RFC 9449 §8: 400 use_dpop_nonce → one more request with the nonce, a new jti; last nonce kept."""
    done = json_response(200, {"access_token": "b", "token_type": "DPoP"}, [("dpop-nonce", "n-2")])
    tokens, driver = run_refresh([nonce_demand("n-1"), done])
    first, second = (parts(r.header("dpop") or "")[1] for r in driver.requests)
    assert "nonce" not in first
    assert second["nonce"] == "n-1"
    assert first["jti"] != second["jti"]
    assert tokens.dpop_nonce == "n-2"


def test_a_second_nonce_demand_is_not_chased() -> None:
    """E3: the nonce retry happens once; a second demand is a refusal (the grant stands)."""
    with pytest.raises(RequestRejectedError) as err:
        run_refresh([nonce_demand("n-1"), nonce_demand("n-2")])
    assert err.value.error == "use_dpop_nonce"


def test_a_demand_for_the_nonce_already_sent_is_not_retried() -> None:
    """E3: a server that demands the very nonce it got is not asked again (no loop)."""
    driver = FakeDriver({f"POST {TOKEN_URL}": [nonce_demand("same")]}, now=NOW)
    flow = refresh(bound_tokens(dpop_nonce="same"), PUBLIC, policy=POLICY, sender=sender())
    with pytest.raises(RequestRejectedError):
        run_sync(flow, driver)
    assert len(driver.requests) == 1
    assert parts(driver.requests[0].header("dpop") or "")[1]["nonce"] == "same"


def test_the_stored_nonce_is_used_first() -> None:
    """E3: the nonce the AS gave last time goes into the next refresh's first proof."""
    _, driver = run_refresh([DPOP_TOKEN], held=bound_tokens(dpop_nonce="remembered"))
    assert parts(driver.requests[0].header("dpop") or "")[1]["nonce"] == "remembered"


@pytest.mark.parametrize(
    "changes",
    [{"dpop_key": None}, {"dpop_key": fake_signer(public_jwk=OTHER_JWK)}],
    ids=["no-key", "another-key"],
)
def test_a_bound_grant_without_its_key_is_over(changes: dict[str, Any]) -> None:
    """E3: without the key the grant is bound to there is nothing to refresh with; nothing is sent."""
    driver = FakeDriver({}, now=NOW)
    flow = refresh(bound_tokens(), PUBLIC, policy=POLICY, sender=sender(**changes))
    with pytest.raises(GrantEndedError, match="DPoP key"):
        run_sync(flow, driver)
    assert driver.requests == []


@pytest.mark.parametrize(
    ("token_type", "with_key", "outcome"),
    [
        ("DPoP", True, "DPoP"),
        ("dpop", True, "DPoP"),
        ("Bearer", True, "Bearer"),
        ("DPoP", False, PeerError),
        ("mac", True, PeerError),
        ("N_A", False, PeerError),
    ],
    ids=["dpop", "dpop-lowercase", "unbound-bearer", "dpop-without-proof", "mac", "n_a"],
)
def test_token_types(token_type: str, with_key: bool, outcome: Any) -> None:
    """E3, T1: DPoP only when a proof was sent; a Bearer answer to a proof is unbound; other types refused."""
    answer = json_response(200, {"access_token": "t", "token_type": token_type})
    held = bound_tokens() if with_key else bound_tokens(token_type="Bearer", dpop_jkt=None)
    changes = {} if with_key else {"dpop_key": None}
    if isinstance(outcome, str):
        tokens, _ = run_refresh([answer], held=held, **changes)
        assert tokens.token_type == outcome
        assert tokens.dpop_jkt == (EXAMPLE_EC_JKT if outcome == "DPoP" else None)
    else:
        with pytest.raises(outcome, match=r"DPoP|supported"):
            run_refresh([answer], held=held, **changes)


def test_bearer_grants_are_sent_as_before() -> None:
    """T1: without a sender nothing changes: no DPoP header, a Bearer token, Authorization: Bearer."""
    driver = FakeDriver({f"POST {TOKEN_URL}": json_response(200, {"access_token": "t"})}, now=NOW)
    held = bound_tokens(token_type="Bearer", dpop_jkt=None)
    tokens = run_sync(refresh(held, PUBLIC, policy=POLICY), driver)
    assert driver.requests[0].header("dpop") is None
    assert authorization_header(tokens) == ("authorization", "Bearer t")


def test_code_exchange_carries_a_proof() -> None:
    """E3 (conformance auth/dpop): the authorization-code exchange sends a proof and gets a bound token."""
    driver = FakeDriver(
        {f"POST {TOKEN_URL}": [nonce_demand("conformance-as-dpop-nonce"), DPOP_TOKEN]},
        now=NOW,
        redirect=lambda effect: {"code": "c", "state": effect.state},
    )
    flow = authorization_code_flow(
        discovery(),
        PUBLIC,
        policy=POLICY,
        redirect_uri="http://127.0.0.1:9876/callback",
        scopes=None,
        entropy=counter_entropy(),
        sender=sender(),
    )
    tokens = run_sync(flow, driver)
    assert [r.form()["grant_type"] for r in driver.requests] == ["authorization_code"] * 2
    assert parts(driver.requests[1].header("dpop") or "")[1]["nonce"] == "conformance-as-dpop-nonce"
    assert (tokens.token_type, tokens.grant_type) == ("DPoP", "authorization_code")


def test_resource_proof_binds_the_token() -> None:
    """E3, RFC 9449 §7: a resource request's proof carries ath of exactly the token sent with it."""
    tokens = bound_tokens(access_token=Secret("the-access-token"))
    proof = dpop_proof(
        KEY, method="POST", url=RESOURCE, now=NOW, entropy=counter_entropy(), access_token=tokens.access_token
    )
    assert parts(proof)[1]["ath"] == access_token_hash("the-access-token")


def test_challenge_scheme_is_kept_for_the_decision() -> None:
    """E3: the 401's DPoP challenge (scheme, algs) reaches wants_dpop as parsed."""
    (challenge,) = DPOP_401
    assert isinstance(challenge, Challenge)
    assert (challenge.scheme, challenge.param("algs")) == ("DPoP", "ES256")


@pytest.mark.parametrize(
    ("tokens", "key", "names"),
    [
        (bound_tokens(token_type="Bearer", dpop_jkt=None), None, ["authorization"]),
        (bound_tokens(token_type="Bearer", dpop_jkt=None), KEY, ["authorization"]),
        (bound_tokens(), KEY, ["authorization", "dpop"]),
    ],
    ids=["bearer", "bearer-key-unused", "dpop"],
)
def test_resource_headers(tokens: TokenSet, key: Any, names: list[str]) -> None:
    """T1, E3: a Bearer token goes alone; a DPoP token with a fresh proof for this request, ath and nonce."""
    headers = resource_headers(
        tokens,
        method="POST",
        url=f"{RESOURCE}?x=1",
        now=NOW,
        entropy=counter_entropy(),
        dpop_key=key,
        nonce="rs-n",
    )
    assert [name for name, _ in headers] == names
    if "dpop" in names:
        assert headers[0] == ("authorization", "DPoP old-access")
        claims = parts(headers[1][1])[1]
        assert (claims["htu"], claims["nonce"], claims["ath"]) == (
            RESOURCE,
            "rs-n",
            access_token_hash("old-access"),
        )


@pytest.mark.parametrize("key", [None, fake_signer(public_jwk=OTHER_JWK)], ids=["no-key", "another-key"])
def test_resource_headers_need_the_bound_key(key: Any) -> None:
    """E3: a DPoP-bound token is never presented without its own key (it would only be refused)."""
    with pytest.raises(PolicyError, match="bound to a DPoP key"):
        resource_headers(
            bound_tokens(), method="GET", url=RESOURCE, now=NOW, entropy=counter_entropy(), dpop_key=key
        )


def test_proof_time_is_taken_when_the_code_is_exchanged() -> None:
    """E3: the proof's iat is the time of the exchange (asked of the driver), not of the flow's start: a
    login that takes ten minutes still sends a proof the server accepts."""
    driver = FakeDriver({f"POST {TOKEN_URL}": DPOP_TOKEN}, now=NOW)

    def slow_user(effect: Any) -> dict[str, str]:
        driver.now += 600
        return {"code": "c", "state": effect.state}

    driver.redirect = slow_user
    flow = authorization_code_flow(
        discovery(),
        PUBLIC,
        policy=POLICY,
        redirect_uri="http://127.0.0.1:9876/callback",
        scopes=None,
        entropy=counter_entropy(),
        sender=sender(),
    )
    run_sync(flow, driver)
    assert parts(driver.requests[0].header("dpop") or "")[1]["iat"] == int(NOW) + 600

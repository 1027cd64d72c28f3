"""Grants without a browser: client credentials (E1), jwt-bearer (E4), token exchange (E2), renew."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from brokerd.oauth import (
    CLIENT_CREDENTIALS,
    JWT_BEARER,
    Discovery,
    GrantEndedError,
    IdJag,
    PeerError,
    PolicyError,
    Registration,
    RequestRejectedError,
    Sender,
    TokenSet,
    TransientError,
    UrlPolicy,
    b64url_decode,
    client_assertion,
    client_credentials_flow,
    enterprise_flow,
    exchange_for_id_jag,
    jwt_bearer_flow,
    register,
    renew,
    revoke,
    run_sync,
)
from brokerd.oauth.testing import Answer, FakeDriver, counter_entropy, fake_signer, json_response
from brokerd.secret import Secret

AS = "https://auth.example.com"
TOKEN_URL = f"{AS}/token"
RESOURCE = "https://mcp.example.com/mcp"
IDP = "https://idp.example.com"
IDP_TOKEN = f"{IDP}/oauth2/token"
POLICY = UrlPolicy()
NOW = 1_000_000.0
CLIENT_KEY = fake_signer()
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
BASIC = Registration(
    issuer=AS,
    client_id="ci-bot",
    client_secret=Secret("s3cret"),
    token_endpoint_auth_method="client_secret_basic",
    source="preregistered",
)
POST = Registration(
    issuer=AS,
    client_id="ci-bot",
    client_secret=Secret("s3cret"),
    token_endpoint_auth_method="client_secret_post",
    source="preregistered",
)
KEYED = Registration(
    issuer=AS, client_id="ci-bot", token_endpoint_auth_method="private_key_jwt", source="preregistered"
)
ANONYMOUS = Registration(issuer=AS, client_id="", source="preregistered")
TOKEN = json_response(200, {"access_token": "at-1", "token_type": "Bearer", "expires_in": 300})


def discovery(**changes: Any) -> Discovery:
    fields: dict[str, Any] = {
        "server_url": RESOURCE,
        "resource": RESOURCE,
        "issuer": AS,
        "authorization_endpoint": None,
        "token_endpoint": TOKEN_URL,
        "grant_types_supported": ("client_credentials",),
    }
    fields.update(changes)
    return Discovery(**fields)


def sender(**changes: Any) -> Sender:
    fields: dict[str, Any] = {"entropy": counter_entropy(), "client_key": CLIENT_KEY}
    fields.update(changes)
    return Sender(**fields)


def claims(jwt: str) -> dict[str, Any]:
    header, payload, _ = jwt.split(".")
    return {"header": json.loads(b64url_decode(header)), **json.loads(b64url_decode(payload))}


def run_cc(
    registration: Registration, answers: list[Answer] | Answer = TOKEN, **kwargs: Any
) -> tuple[TokenSet, FakeDriver]:
    driver = FakeDriver({f"POST {TOKEN_URL}": answers}, now=NOW)
    kwargs.setdefault("scopes", ["mcp:read"])
    flow = client_credentials_flow(
        kwargs.pop("discovery", discovery()), registration, policy=POLICY, **kwargs
    )
    return run_sync(flow, driver), driver


# ---- client credentials (E1) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registration", "auth_header", "form_auth"),
    [
        (BASIC, "Basic " + base64.b64encode(b"ci-bot:s3cret").decode(), {}),
        (POST, None, {"client_id": "ci-bot", "client_secret": "s3cret"}),
    ],
    ids=["client_secret_basic", "client_secret_post"],
)
def test_client_credentials_with_a_secret(
    registration: Registration, auth_header: str | None, form_auth: dict[str, str]
) -> None:
    """E1 (conformance auth/client-credentials-basic): grant_type, scope, resource, the client's secret."""
    tokens, driver = run_cc(registration)
    (request,) = driver.requests
    assert request.header("authorization") == auth_header
    assert request.form() == {
        "grant_type": "client_credentials",
        "scope": "mcp:read",
        "resource": RESOURCE,
        **form_auth,
    }
    assert (tokens.grant_type, tokens.refresh_token, tokens.expires_at) == (
        CLIENT_CREDENTIALS,
        None,
        NOW + 300,
    )
    assert (tokens.client_id, tokens.scopes, tokens.resource) == ("ci-bot", ("mcp:read",), RESOURCE)


def test_client_credentials_with_private_key_jwt() -> None:
    """E1 (auth/client-credentials-jwt): client_assertion per RFC 7523 §2.2 and no client_id or secret."""
    _, driver = run_cc(KEYED, sender=sender())
    form = driver.requests[0].form()
    assertion = form.pop("client_assertion")
    assert form == {
        "grant_type": "client_credentials",
        "scope": "mcp:read",
        "resource": RESOURCE,
        "client_assertion_type": ASSERTION_TYPE,
    }
    got = claims(assertion)
    jti = got.pop("jti")
    assert len(b64url_decode(jti)) == 16
    assert got == {
        "header": {"typ": "JWT", "alg": "ES256"},
        "iss": "ci-bot",
        "sub": "ci-bot",
        "aud": AS,  # draft-ietf-oauth-rfc7523bis: the issuer identifier, not the token endpoint
        "iat": int(NOW),
        "exp": int(NOW) + 60,
    }
    assert driver.requests[0].header("authorization") is None


def test_every_assertion_has_its_own_jti() -> None:
    """E1: a nonce retry sends a new assertion too (servers refuse a jti they have seen)."""
    demand = json_response(400, {"error": "use_dpop_nonce"}, [("dpop-nonce", "n")])
    _, driver = run_cc(KEYED, [demand, TOKEN], sender=sender(dpop_key=fake_signer()))
    jtis = [claims(r.form()["client_assertion"])["jti"] for r in driver.requests]
    assert len(jtis) == 2
    assert jtis[0] != jtis[1]


@pytest.mark.parametrize(
    ("registration", "kwargs", "match"),
    [
        (Registration(issuer=AS, client_id="pub"), {}, "confidential client"),
        (KEYED, {}, "no signing key"),
        (KEYED, {"sender": sender(client_key=None)}, "no signing key"),
        (
            KEYED,
            {
                "sender": sender(),
                "discovery": discovery(token_endpoint_auth_signing_alg_values_supported=("RS256",)),
            },
            "does not accept ES256",
        ),
        (
            Registration(
                issuer="https://other.example",
                client_id="x",
                client_secret=Secret("s"),
                token_endpoint_auth_method="client_secret_basic",
            ),
            {},
            "belongs to",
        ),
    ],
    ids=["public-client", "no-sender", "sender-without-key", "alg-not-listed", "other-issuer"],
)
def test_client_credentials_refusals(registration: Registration, kwargs: dict[str, Any], match: str) -> None:
    """E1: nothing is sent for a public client, a missing key, an unlisted alg or another issuer's client."""
    driver = FakeDriver({}, now=NOW)
    disc = kwargs.pop("discovery", discovery())
    with pytest.raises(PolicyError, match=match):
        run_sync(client_credentials_flow(disc, registration, policy=POLICY, scopes=None, **kwargs), driver)
    assert driver.requests == []


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (json_response(401, {"error": "invalid_client", "error_description": "bad s3cret"}), GrantEndedError),
        (json_response(400, {"error": "unsupported_grant_type"}), RequestRejectedError),
        (json_response(400, {"error": "invalid_scope"}), RequestRejectedError),
        (json_response(503, {}), TransientError),
    ],
)
def test_client_credentials_failures_are_classified(answer: Answer, error: type[Exception]) -> None:
    """E1, T5: the answer decides: invalid_client ends the grant, a 4xx is a refusal, a 5xx is transient."""
    with pytest.raises(error) as err:
        run_cc(BASIC, answer)
    assert "s3cret" not in str(err.value)


def test_no_authorization_endpoint_is_needed() -> None:
    """E1: a machine-to-machine AS (only client credentials) needs no authorization endpoint."""
    tokens, _ = run_cc(BASIC, discovery=discovery(authorization_endpoint=None))
    assert tokens.access_token == Secret("at-1")


# ---- jwt-bearer (E4) ------------------------------------------------------------------------------------

WORKLOAD_JWT = Secret("eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcCJ9.sig")


@pytest.mark.parametrize(
    ("registration", "form_auth"),
    [
        (ANONYMOUS, {}),
        (
            Registration(issuer=AS, client_id="conformance-wif-workload"),
            {"client_id": "conformance-wif-workload"},
        ),
    ],
    ids=["no-client-id", "public-client-id"],
)
def test_jwt_bearer_presents_the_workload_token(
    registration: Registration, form_auth: dict[str, str]
) -> None:
    """E4 (auth/wif-jwt-bearer): grant_type jwt-bearer, assertion = the workload JWT, resource, scope."""
    driver = FakeDriver({f"POST {TOKEN_URL}": TOKEN}, now=NOW)
    flow = jwt_bearer_flow(discovery(), registration, assertion=WORKLOAD_JWT, policy=POLICY, scopes=["read"])
    tokens = run_sync(flow, driver)
    assert driver.requests[0].form() == {
        "grant_type": JWT_BEARER,
        "assertion": WORKLOAD_JWT.reveal(),
        "scope": "read",
        "resource": RESOURCE,
        **form_auth,
    }
    assert tokens.grant_type == JWT_BEARER


@pytest.mark.parametrize("code", ["invalid_grant", "unauthorized_client"])
def test_jwt_bearer_refusal_ends_the_grant_after_one_request(code: str) -> None:
    """E4: a refused assertion ends the grant; it is not sent again and not echoed in the message."""
    answer = json_response(400, {"error": code, "error_description": f"bad {WORKLOAD_JWT.reveal()}"})
    driver = FakeDriver({f"POST {TOKEN_URL}": answer}, now=NOW)
    flow = jwt_bearer_flow(discovery(), ANONYMOUS, assertion=WORKLOAD_JWT, policy=POLICY, scopes=None)
    with pytest.raises(GrantEndedError) as err:
        run_sync(flow, driver)
    assert len(driver.requests) == 1
    assert WORKLOAD_JWT.reveal() not in str(err.value)


def test_jwt_bearer_refuses_an_empty_assertion() -> None:
    """E4: an empty workload token (an empty file) is not sent."""
    with pytest.raises(PolicyError, match="empty"):
        run_sync(
            jwt_bearer_flow(discovery(), ANONYMOUS, assertion=Secret(""), policy=POLICY, scopes=None),
            FakeDriver(),
        )


# ---- enterprise-managed authorization (E2) --------------------------------------------------------------

ID_TOKEN = Secret("id.token.jwt")
ID_JAG = "id.jag.jwt"
IDP_CLIENT = Registration(issuer=IDP, client_id="conformance-test-idp-client")
EXCHANGED = json_response(
    200,
    {
        "access_token": ID_JAG,
        "issued_token_type": "urn:ietf:params:oauth:token-type:id-jag",
        "token_type": "N_A",
        "expires_in": 300,
    },
)


def test_token_exchange_request_and_answer() -> None:
    """E2 (auth/enterprise-managed-authorization): the RFC 8693 request SEP-990 §4 names; the ID-JAG out."""
    driver = FakeDriver({f"POST {IDP_TOKEN}": EXCHANGED}, now=NOW)
    flow = exchange_for_id_jag(
        IDP_CLIENT,
        token_endpoint=IDP_TOKEN,
        subject_token=ID_TOKEN,
        audience=AS,
        resource=RESOURCE,
        policy=POLICY,
        scopes=["chat.read"],
    )
    jag = run_sync(flow, driver)
    assert driver.requests[0].form() == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag",
        "audience": AS,
        "resource": RESOURCE,
        "subject_token": ID_TOKEN.reveal(),
        "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "scope": "chat.read",
        "client_id": "conformance-test-idp-client",
    }
    assert jag == IdJag(Secret(ID_JAG), NOW + 300, None)


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (
            json_response(400, {"error": "invalid_grant", "error_description": "Invalid ID token"}),
            GrantEndedError,
            "ended",
        ),
        (json_response(400, {"error": "invalid_target"}), RequestRejectedError, "invalid_target"),
        (
            json_response(
                200,
                {"access_token": "x", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"},
            ),
            PeerError,
            "not an ID-JAG",
        ),
        (json_response(200, {"access_token": ""}), PeerError, "without an ID-JAG"),
        (json_response(200, b"<html>"), PeerError, "unusable"),
    ],
    ids=["invalid-grant", "refused-target", "wrong-type", "empty", "not-json"],
)
def test_token_exchange_failures(answer: Answer, error: type[Exception], match: str) -> None:
    """E2: an expired ID token ends the IdP grant; a policy refusal is a refusal; a non-ID-JAG is unusable."""
    driver = FakeDriver({f"POST {IDP_TOKEN}": answer}, now=NOW)
    flow = exchange_for_id_jag(
        IDP_CLIENT,
        token_endpoint=IDP_TOKEN,
        subject_token=ID_TOKEN,
        audience=AS,
        resource=RESOURCE,
        policy=POLICY,
    )
    with pytest.raises(error, match=match):
        run_sync(flow, driver)


def test_enterprise_flow_exchanges_then_presents_the_id_jag() -> None:
    """E2: IdP token exchange (audience = the MCP AS issuer), then jwt-bearer with the ID-JAG, client auth."""
    driver = FakeDriver({f"POST {IDP_TOKEN}": EXCHANGED, f"POST {TOKEN_URL}": TOKEN}, now=NOW)
    flow = enterprise_flow(
        discovery(grant_types_supported=(JWT_BEARER,)),
        BASIC,
        idp=IDP_CLIENT,
        idp_token_endpoint=IDP_TOKEN,
        id_token=ID_TOKEN,
        policy=POLICY,
        scopes=None,
    )
    tokens = run_sync(flow, driver)
    assert driver.urls == [f"POST {IDP_TOKEN}", f"POST {TOKEN_URL}"]
    exchange, grant = driver.requests
    assert exchange.form()["audience"] == AS
    assert exchange.header("authorization") is None
    assert grant.form() == {"grant_type": JWT_BEARER, "assertion": ID_JAG, "resource": RESOURCE}
    assert grant.header("authorization") == "Basic " + base64.b64encode(b"ci-bot:s3cret").decode()
    assert (tokens.grant_type, tokens.client_id) == (JWT_BEARER, "ci-bot")


# ---- renew ----------------------------------------------------------------------------------------------


def held(**changes: Any) -> TokenSet:
    fields: dict[str, Any] = {
        "access_token": Secret("old"),
        "issuer": AS,
        "client_id": "ci-bot",
        "token_endpoint": TOKEN_URL,
        "resource": RESOURCE,
        "scopes": ("mcp:read",),
        "grant_type": CLIENT_CREDENTIALS,
    }
    fields.update(changes)
    return TokenSet(**fields)


@pytest.mark.parametrize(
    ("tokens", "assertion", "grant_type"),
    [
        (held(), None, "client_credentials"),
        (held(refresh_token=Secret("rt")), None, "refresh_token"),
        (held(grant_type=JWT_BEARER), WORKLOAD_JWT, JWT_BEARER),
        (held(grant_type=JWT_BEARER, refresh_token=Secret("rt")), WORKLOAD_JWT, "refresh_token"),
    ],
    ids=[
        "client-credentials-asks-again",
        "refresh-token-first",
        "jwt-bearer-new-assertion",
        "jwt-bearer-refresh",
    ],
)
def test_renew_picks_the_request(tokens: TokenSet, assertion: Secret | None, grant_type: str) -> None:
    """E1, E4, T3: a refresh token when there is one; else the grant asks again, from persisted state."""
    driver = FakeDriver({f"POST {TOKEN_URL}": TOKEN}, now=NOW)
    renewed = run_sync(renew(tokens, BASIC, policy=POLICY, assertion=assertion), driver)
    form = driver.requests[0].form()
    assert form["grant_type"] == grant_type
    assert form["resource"] == RESOURCE
    assert renewed.grant_type == tokens.grant_type
    if grant_type == "client_credentials":
        assert form["scope"] == "mcp:read"


@pytest.mark.parametrize(
    ("tokens", "match"),
    [
        (held(grant_type=JWT_BEARER), "new assertion"),
        (held(grant_type="authorization_code"), "no refresh token"),
    ],
)
def test_renew_without_means(tokens: TokenSet, match: str) -> None:
    """T3: a jwt-bearer grant without a new assertion, or a login without refresh token: the grant is over."""
    driver = FakeDriver({}, now=NOW)
    with pytest.raises(GrantEndedError, match=match):
        run_sync(renew(tokens, BASIC, policy=POLICY), driver)
    assert driver.requests == []


def test_renew_refuses_another_client() -> None:
    """D7, T2: tokens of another client are never sent with this registration."""
    with pytest.raises(PolicyError):
        run_sync(renew(held(client_id="other"), BASIC, policy=POLICY), FakeDriver())


# ---- registration and revocation with a key --------------------------------------------------------------


@pytest.mark.parametrize(
    ("listed", "kwargs", "method"),
    [
        (("private_key_jwt",), {"private_key": True}, "private_key_jwt"),
        (None, {"private_key": True}, "private_key_jwt"),
        (
            ("client_secret_basic", "client_secret_post"),
            {"client_secret": Secret("s"), "auth_method": "client_secret_post"},
            "client_secret_post",
        ),
        (("client_secret_basic",), {"client_secret": Secret("s")}, "client_secret_basic"),
        (("none",), {}, "none"),
    ],
    ids=["key", "key-unlisted-methods", "configured-post", "secret-default", "public"],
)
def test_preregistered_method(listed: tuple[str, ...] | None, kwargs: dict[str, Any], method: str) -> None:
    """R1, E1: a configured method wins, a key means private_key_jwt, a secret the first secret method."""
    disc = discovery(token_endpoint_auth_methods_supported=listed)
    flow = register(disc, policy=POLICY, redirect_uris=(), now=NOW, client_id="ci-bot", **kwargs)
    registration = run_sync(flow, FakeDriver())
    assert registration.token_endpoint_auth_method == method
    assert (registration.client_secret is not None) == method.startswith("client_secret")


@pytest.mark.parametrize(
    ("listed", "kwargs", "match"),
    [
        (("client_secret_basic",), {"private_key": True}, "does not accept private_key_jwt"),
        (None, {"auth_method": "private_key_jwt"}, "needs a private key"),
        (None, {"auth_method": "client_secret_basic"}, "needs a client secret"),
    ],
)
def test_preregistered_method_refusals(
    listed: tuple[str, ...] | None, kwargs: dict[str, Any], match: str
) -> None:
    """R1, E1: a key the server does not take, or a configured method without its secret or key: refused."""
    disc = discovery(token_endpoint_auth_methods_supported=listed)
    with pytest.raises(PolicyError, match=match):
        run_sync(
            register(disc, policy=POLICY, redirect_uris=(), now=NOW, client_id="ci-bot", **kwargs),
            FakeDriver(),
        )


def test_revocation_with_private_key_jwt_sends_one_assertion_per_request() -> None:
    """T6, E1: each revocation request of a private_key_jwt client carries its own client assertion."""
    revocation = f"{AS}/revoke"
    driver = FakeDriver({f"POST {revocation}": json_response(200, {})}, now=NOW)
    tokens = held(refresh_token=Secret("rt"), revocation_endpoint=revocation)
    outcomes = run_sync(revoke(tokens, KEYED, policy=POLICY, sender=sender()), driver)
    assert [o.outcome for o in outcomes] == ["revoked", "revoked"]
    jtis = {claims(r.form()["client_assertion"])["jti"] for r in driver.requests}
    assert len(jtis) == 2


def test_revocation_without_the_key_is_refused_not_sent() -> None:
    """T6: a private_key_jwt client without its key cannot authenticate: outcome refused, nothing sent."""
    revocation = f"{AS}/revoke"
    driver = FakeDriver({}, now=NOW)
    outcomes = run_sync(revoke(held(revocation_endpoint=revocation), KEYED, policy=POLICY), driver)
    assert [o.outcome for o in outcomes] == ["refused"]
    assert driver.requests == []


def test_client_assertion_can_be_built_alone() -> None:
    """E1: client_assertion is usable on its own (e.g. for the device or revocation endpoints)."""
    jwt = client_assertion(KEYED, CLIENT_KEY, now=NOW, entropy=counter_entropy(), lifetime=30)
    got = claims(jwt.reveal())
    assert (got["exp"] - got["iat"], got["aud"]) == (30, AS)
    assert repr(jwt) == "Secret('<redacted>')"

"""The core's grants without a browser (E1, E2, E4) and DPoP (E3) against the real oidc-provider.

No daemon here: each test drives the pure flows with the daemon's own driver (``brokerd.oauth_driver.drive``
with ``make_http_client``), with real keys from ``brokerd.keys``, against oidc-provider 9 on loopback
(``tests/servers/oidc_server.mjs`` with its extension switches) and, where a token is Bearer, uses it at the
real MCP SDK server. The daemon's wiring of these grants is tested once it exists.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
import trio

from brokerd import keys, oauth
from brokerd.oauth_driver import drive, make_http_client
from brokerd.secret import Secret
from tests.servers.helpers import CallbackCatcher, McpSession

if TYPE_CHECKING:
    from tests.servers.fixtures import BrowserEnvFactory, McpServerFactory, OidcServerFactory

pytestmark = pytest.mark.integration

POLICY = oauth.UrlPolicy(allow_insecure_loopback=True)
WORKLOAD_ISSUER = "https://workload.ncp-test.invalid"
CALLBACK_WAIT = 30.0


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as client:
        yield client


async def no_browser(effect: oauth.AwaitRedirect) -> Mapping[str, str]:
    raise AssertionError(f"no browser expected, got {effect.authorization_url}")


async def no_device(effect: oauth.ShowDeviceCode) -> None:
    raise AssertionError("no device code expected")


async def run(flow: oauth.Flow[Any], http: httpx.AsyncClient) -> Any:
    return await drive(flow, http=http, on_redirect=no_browser, on_device_code=no_device)


def sender(**changes: Any) -> oauth.Sender:
    return oauth.Sender(entropy=os.urandom, **changes)


def claims_of(token: oauth.TokenSet) -> dict[str, Any]:
    # The test reads its own fresh token: no verification needed to look at what the AS put in it.
    return dict(jwt.decode(token.access_token.reveal(), options={"verify_signature": False}))


def whoami(mcp_url: str, token: oauth.TokenSet) -> dict[str, Any]:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        session = McpSession(client, mcp_url, token.access_token.reveal())
        session.initialize()
        result = session.call_tool("whoami")
    structured: dict[str, Any] = result["structuredContent"]
    return structured


def cc_client(client_id: str, **metadata: Any) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        **metadata,
    }


async def test_client_credentials_with_a_secret(
    oidc_server: OidcServerFactory, mcp_server: McpServerFactory, http: httpx.AsyncClient
) -> None:
    """E1: discovery → client credentials (client_secret_basic) → a token the MCP server takes; renewal."""
    client = cc_client("ci-bot", client_secret="ci-s3cret", token_endpoint_auth_method="client_secret_basic")
    oidc = oidc_server(clients=[client], extra={"client_credentials": True})
    mcp = mcp_server(oidc)
    discovery = await run(oauth.discover(mcp.url, policy=POLICY), http)
    registration = await run(
        oauth.register(
            discovery,
            policy=POLICY,
            redirect_uris=(),
            now=time.time(),
            client_id="ci-bot",
            client_secret=Secret("ci-s3cret"),
        ),
        http,
    )
    assert registration.token_endpoint_auth_method == "client_secret_basic"
    flow = oauth.client_credentials_flow(discovery, registration, policy=POLICY, scopes=["mcp:read"])
    tokens = await run(flow, http)
    assert (tokens.grant_type, tokens.token_type, tokens.refresh_token) == (
        "client_credentials",
        "Bearer",
        None,
    )
    assert whoami(mcp.url, tokens)["sub"] == "ci-bot"
    renewed = await run(oauth.renew(tokens, registration, policy=POLICY), http)
    assert renewed.access_token != tokens.access_token
    assert oidc.stats()["token_success"]["client_credentials"] == 2


async def test_client_credentials_with_private_key_jwt(
    tmp_path: Path, oidc_server: OidcServerFactory, mcp_server: McpServerFactory, http: httpx.AsyncClient
) -> None:
    """E1: private_key_jwt with a 0600 key file; oidc-provider verifies each assertion and refuses replays."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "ci-bot.pem"
    raw = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        raw.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    key = keys.load_key_file(path)
    client = cc_client(
        "ci-bot",
        token_endpoint_auth_method="private_key_jwt",
        token_endpoint_auth_signing_alg="ES256",
        jwks={"keys": [key.public_jwk]},
    )
    oidc = oidc_server(clients=[client], extra={"client_credentials": True})
    mcp = mcp_server(oidc)
    discovery = await run(oauth.discover(mcp.url, policy=POLICY), http)
    registration = await run(
        oauth.register(
            discovery, policy=POLICY, redirect_uris=(), now=time.time(), client_id="ci-bot", private_key=True
        ),
        http,
    )
    assert registration.token_endpoint_auth_method == "private_key_jwt"
    signer = key.signer()
    tokens = await run(
        oauth.client_credentials_flow(
            discovery, registration, policy=POLICY, scopes=["mcp:read"], sender=sender(client_key=signer)
        ),
        http,
    )
    assert whoami(mcp.url, tokens)["sub"] == "ci-bot"
    # A second request signs a second assertion (oidc-provider refuses a jti it has seen).
    await run(oauth.renew(tokens, registration, policy=POLICY, sender=sender(client_key=signer)), http)
    assert oidc.stats()["token_success"]["client_credentials"] == 2
    # Without the key there is nothing to authenticate with: refused before anything is sent.
    before = oidc.stats()["requests"]["token"]
    with pytest.raises(oauth.PolicyError, match="no signing key"):
        await run(oauth.client_credentials_flow(discovery, registration, policy=POLICY, scopes=None), http)
    assert oidc.stats()["requests"]["token"] == before


async def test_dpop_bound_token_with_a_nonce(
    oidc_server: OidcServerFactory, mcp_server: McpServerFactory, http: httpx.AsyncClient
) -> None:
    """E3: the AS demands a nonce (400 use_dpop_nonce); one retry, a DPoP token bound to our key (cnf.jkt)."""
    client = cc_client("ci-bot", client_secret="ci-s3cret", token_endpoint_auth_method="client_secret_basic")
    oidc = oidc_server(clients=[client], extra={"client_credentials": True, "dpop": "nonce"})
    mcp = mcp_server(oidc)
    discovery = await run(oauth.discover(mcp.url, policy=POLICY), http)
    assert "ES256" in (discovery.dpop_signing_alg_values_supported or ())
    registration = oauth.Registration(
        issuer=discovery.issuer,
        client_id="ci-bot",
        client_secret=Secret("ci-s3cret"),
        token_endpoint_auth_method="client_secret_basic",
    )
    key = keys.new_dpop_key()
    tokens = await run(
        oauth.client_credentials_flow(
            discovery, registration, policy=POLICY, scopes=None, sender=sender(dpop_key=key.signer())
        ),
        http,
    )
    assert (tokens.token_type, tokens.dpop_jkt) == ("DPoP", key.thumbprint)
    assert claims_of(tokens)["cnf"] == {"jkt": key.thumbprint}
    assert tokens.dpop_nonce
    assert oidc.stats()["token_errors"] == {"use_dpop_nonce": 1}
    assert oauth.authorization_header(tokens)[1].startswith("DPoP ")
    # The next request starts with the nonce it was given: no second demand.
    renewed = await run(
        oauth.renew(tokens, registration, policy=POLICY, sender=sender(dpop_key=key.signer())), http
    )
    assert renewed.dpop_jkt == key.thumbprint
    assert oidc.stats()["token_errors"] == {"use_dpop_nonce": 1}


async def test_authorization_code_with_dpop_and_a_bound_refresh(
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
    http: httpx.AsyncClient,
) -> None:
    """E3 (conformance auth/dpop): a login whose code exchange carries a proof; the public client's refresh
    token is bound to the key: a refresh with the key works, one with another key is refused by the AS."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    browser = browser_env()
    discovery = await run(oauth.discover(mcp.url, policy=POLICY), http)
    key = keys.new_dpop_key()
    with CallbackCatcher() as catcher:
        registration = await run(
            oauth.register(discovery, policy=POLICY, redirect_uris=[catcher.redirect_uri], now=time.time()),
            http,
        )

        open_browser = browser_opener(browser, catcher)

        flow = oauth.authorization_code_flow(
            discovery,
            registration,
            policy=POLICY,
            redirect_uri=catcher.redirect_uri,
            scopes=["mcp:read"],
            entropy=os.urandom,
            sender=sender(dpop_key=key.signer()),
        )
        tokens = await drive(flow, http=http, on_redirect=open_browser, on_device_code=no_device)
    assert (tokens.token_type, tokens.dpop_jkt) == ("DPoP", key.thumbprint)
    assert claims_of(tokens)["cnf"] == {"jkt": key.thumbprint}
    refreshed = await run(
        oauth.refresh(tokens, registration, policy=POLICY, sender=sender(dpop_key=key.signer())), http
    )
    assert (refreshed.token_type, refreshed.dpop_jkt) == ("DPoP", key.thumbprint)
    # Pretend the grant were bound to another key (the core would refuse to send it): the AS refuses.
    other = keys.new_dpop_key()
    forged = oauth.TokenSet(**{**_fields(refreshed), "dpop_jkt": other.thumbprint})
    with pytest.raises(oauth.GrantEndedError):
        await run(
            oauth.refresh(forged, registration, policy=POLICY, sender=sender(dpop_key=other.signer())), http
        )


def browser_opener(
    browser: dict[str, str], catcher: CallbackCatcher
) -> Callable[[oauth.AwaitRedirect], Awaitable[Mapping[str, str]]]:
    """An on_redirect handler: the test browser logs in at the URL; the loopback catcher gets the redirect."""

    async def open_browser(effect: oauth.AwaitRedirect) -> Mapping[str, str]:
        await trio.run_process([browser["BROWSER"], effect.authorization_url], env={**os.environ, **browser})
        return await trio.to_thread.run_sync(catcher.wait, CALLBACK_WAIT)

    return open_browser


def _fields(tokens: oauth.TokenSet) -> dict[str, Any]:
    return {name: getattr(tokens, name) for name in tokens.__struct_fields__}


def workload_jwt(
    key: keys.PrivateKey, audience: str, *, sub: str = "system:serviceaccount:ci:runner"
) -> Secret:
    now = int(time.time())
    claims = {
        "iss": WORKLOAD_ISSUER,
        "sub": sub,
        "aud": audience,
        "iat": now,
        "exp": now + 300,
        "jti": os.urandom(8).hex(),
    }
    return Secret(oauth.compact_jws({"typ": "JWT"}, claims, key.signer(kid="workload-1")))


async def test_jwt_bearer_with_a_workload_token(
    oidc_server: OidcServerFactory, mcp_server: McpServerFactory, http: httpx.AsyncClient
) -> None:
    """E4: a workload's JWT from a trusted issuer → jwt-bearer → a token for the MCP server, sub = the
    workload; a JWT for another audience ends the grant after one request."""
    workload_key = keys.new_dpop_key()  # any EC P-256 key: here it stands for the platform's signing key
    trusted = {
        "issuer": WORKLOAD_ISSUER,
        "jwks": {"keys": [{**workload_key.public_jwk, "kid": "workload-1"}]},
    }
    client = {
        "client_id": "ci-workload",
        "grant_types": [oauth.JWT_BEARER],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": "none",
    }
    oidc = oidc_server(clients=[client], extra={"jwt_bearer": {"issuers": [trusted]}})
    mcp = mcp_server(oidc)
    discovery = await run(oauth.discover(mcp.url, policy=POLICY), http)
    registration = oauth.Registration(
        issuer=discovery.issuer, client_id="ci-workload", source="preregistered"
    )
    tokens = await run(
        oauth.jwt_bearer_flow(
            discovery,
            registration,
            assertion=workload_jwt(workload_key, oidc.issuer),
            policy=POLICY,
            scopes=["mcp:read"],
        ),
        http,
    )
    assert tokens.grant_type == oauth.JWT_BEARER
    assert whoami(mcp.url, tokens)["sub"] == "system:serviceaccount:ci:runner"
    renewed = await run(
        oauth.renew(tokens, registration, policy=POLICY, assertion=workload_jwt(workload_key, oidc.issuer)),
        http,
    )
    assert whoami(mcp.url, renewed)["sub"] == "system:serviceaccount:ci:runner"
    before = oidc.stats()["token_requests"]["jwt_bearer"]
    with pytest.raises(oauth.GrantEndedError):
        await run(
            oauth.jwt_bearer_flow(
                discovery,
                registration,
                assertion=workload_jwt(workload_key, "https://elsewhere.example"),
                policy=POLICY,
                scopes=None,
            ),
            http,
        )
    assert oidc.stats()["token_requests"]["jwt_bearer"] == before + 1


async def test_enterprise_managed_authorization(
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
    http: httpx.AsyncClient,
) -> None:
    """E2: log in at the IdP (openid) → its ID token → token exchange there for an ID-JAG → jwt-bearer at the
    MCP server's AS with the client's secret → a token for the MCP server whose sub is the IdP's user."""
    idp_client = {
        "client_id": "ncp-at-idp",
        "grant_types": ["authorization_code", oauth.TOKEN_EXCHANGE],
        "redirect_uris": ["http://127.0.0.1/callback"],
        "response_types": ["code"],
        "application_type": "native",
        "token_endpoint_auth_method": "none",
    }
    idp = oidc_server(clients=[idp_client], extra={"token_exchange": {"client_id": "ncp-at-chat"}})
    idp_jwks = (await http.get(idp.metadata()["jwks_uri"])).json()
    mcp_client = {
        "client_id": "ncp-at-chat",
        "client_secret": "chat-s3cret",
        "grant_types": [oauth.JWT_BEARER],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    trusted = {"issuer": idp.issuer, "jwks": idp_jwks}
    chat_as = oidc_server(clients=[mcp_client], extra={"jwt_bearer": {"issuers": [trusted]}})
    mcp = mcp_server(chat_as)
    browser = browser_env(user="alice")

    idp_discovery = await run(oauth.discover_issuer(idp.issuer, policy=POLICY), http)
    idp_registration = oauth.Registration(issuer=idp.issuer, client_id="ncp-at-idp", source="preregistered")
    with CallbackCatcher() as catcher:
        open_browser = browser_opener(browser, catcher)

        login = oauth.authorization_code_flow(
            idp_discovery,
            idp_registration,
            policy=POLICY,
            redirect_uri=catcher.redirect_uri,
            scopes=["openid"],
            entropy=os.urandom,
        )
        idp_tokens = await drive(login, http=http, on_redirect=open_browser, on_device_code=no_device)
    assert idp_tokens.id_token is not None
    assert idp_tokens.resource is None  # an IdP login asks for no resource

    discovery = await run(oauth.discover(mcp.url, policy=POLICY), http)
    registration = oauth.Registration(
        issuer=discovery.issuer,
        client_id="ncp-at-chat",
        client_secret=Secret("chat-s3cret"),
        token_endpoint_auth_method="client_secret_basic",
        source="preregistered",
    )
    tokens = await run(
        oauth.enterprise_flow(
            discovery,
            registration,
            idp=idp_registration,
            idp_token_endpoint=idp_discovery.token_endpoint,
            id_token=idp_tokens.id_token,
            policy=POLICY,
            scopes=["mcp:read"],
        ),
        http,
    )
    assert whoami(mcp.url, tokens)["sub"] == "alice"
    assert idp.stats()["token_success"]["token_exchange"] == 1
    assert chat_as.stats()["token_success"]["jwt_bearer"] == 1

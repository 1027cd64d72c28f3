"""The OAuth core on the daemon's I/O edges, against the real test servers.

The pure core + the httpx/trio driver + the loopback callback listener + ``open_browser`` with the HTTP
browser driver as ``$BROWSER``, against node's oidc-provider and the mcp SDK's protected server: discovery
from the MCP server's 401, dynamic registration, the authorization-code login, the MCP call with the token,
refresh with rotation, revocation, a denied consent and the device grant.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from brokerd.browser import open_browser
from brokerd.callback import CallbackListener, open_callback_listener
from brokerd.oauth import (
    AuthorizationDeniedError,
    AwaitRedirect,
    Discovery,
    GrantEndedError,
    HttpRequest,
    HttpResponse,
    Registration,
    ShowDeviceCode,
    TokenSet,
    UrlPolicy,
    authorization_code_flow,
    bearer_challenge,
    device_flow,
    discover,
    loopback_redirect_uri,
    refresh,
    register,
    revoke,
    select_scopes,
)
from brokerd.oauth_driver import drive, make_http_client, send
from tests.fakes import no_device_code, no_redirect
from tests.harness import tool_names

if TYPE_CHECKING:
    # Only for annotations: importing the plugin module before pytest registers it would stop pytest
    # from rewriting its asserts (see docs/testing-servers.md).
    from tests.servers.fixtures import BrowserEnv, BrowserEnvFactory, McpServerFactory, OidcServerFactory

pytest_plugins = ["tests.servers.fixtures"]

pytestmark = pytest.mark.integration

POLICY = UrlPolicy(allow_insecure_loopback=True)
WAIT = 60.0


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client() as client:
        yield client


def _use_browser(monkeypatch: pytest.MonkeyPatch, browser: BrowserEnv) -> None:
    for name, value in browser.items():
        monkeypatch.setenv(name, value)


async def _discover(http: httpx.AsyncClient, mcp_url: str) -> Discovery:
    """An unauthenticated MCP request, its 401 challenge, then the core's discovery."""
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    answer = await send(
        http,
        HttpRequest(
            "POST",
            mcp_url,
            (("content-type", "application/json"), ("accept", "application/json, text/event-stream")),
            json.dumps(initialize).encode(),
        ),
    )
    assert isinstance(answer, HttpResponse), answer
    assert answer.status == 401
    challenge = bearer_challenge(answer.header_values("www-authenticate"))
    assert challenge is not None
    return await drive(
        discover(mcp_url, policy=POLICY, challenge=challenge),
        http=http,
        on_redirect=no_redirect,
        on_device_code=no_device_code,
    )


async def _register(http: httpx.AsyncClient, discovery: Discovery, redirect_uri: str) -> Registration:
    return await drive(
        register(
            discovery,
            policy=POLICY,
            redirect_uris=[redirect_uri],
            now=time.time(),
            scopes=select_scopes(discovery),
        ),
        http=http,
        on_redirect=no_redirect,
        on_device_code=no_device_code,
    )


async def _login(
    http: httpx.AsyncClient, discovery: Discovery, registration: Registration, listener: CallbackListener
) -> TokenSet:
    async def on_redirect(effect: AwaitRedirect) -> Mapping[str, str]:
        assert effect.redirect_uri == listener.redirect_uri
        assert await open_browser(effect.authorization_url, policy=POLICY)
        return await listener.expect(effect.state, timeout=WAIT, issuer=discovery.issuer)

    return await drive(
        authorization_code_flow(
            discovery,
            registration,
            policy=POLICY,
            redirect_uri=listener.redirect_uri,
            scopes=select_scopes(discovery),
            entropy=os.urandom,
        ),
        http=http,
        on_redirect=on_redirect,
        on_device_code=no_device_code,
    )


async def _refresh(http: httpx.AsyncClient, tokens: TokenSet, registration: Registration) -> TokenSet:
    return await drive(
        refresh(tokens, registration, policy=POLICY),
        http=http,
        on_redirect=no_redirect,
        on_device_code=no_device_code,
    )


async def _tool_names(url: str, tokens: TokenSet) -> list[str]:
    return await trio.to_thread.run_sync(tool_names, url, tokens.access_token.reveal())


async def test_login_refresh_rotation_and_revoke(
    http: httpx.AsyncClient,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """401 → PRM → AS metadata → RFC 7591 → code+PKCE via the listener → tools/list → 2 rotations → revoke."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    browser = browser_env()
    _use_browser(monkeypatch, browser)

    discovery = await _discover(http, mcp.url)
    assert discovery.source == "protected_resource"
    assert discovery.resource_metadata_url == mcp.prm_url
    assert discovery.resource == mcp.url
    assert discovery.issuer == oidc.issuer
    assert discovery.revocation_endpoint is not None

    async with open_callback_listener() as listener:
        redirect_uri = listener.redirect_uri
        registration = await _register(http, discovery, redirect_uri)
        assert registration.source == "dynamic"
        assert registration.redirect_uris == (redirect_uri,)
        assert "refresh_token" in registration.grant_types
        before = time.time()
        tokens = await _login(http, discovery, registration, listener)
        assert listener.pending == 0
    with pytest.raises(httpx.ConnectError):
        await http.get(redirect_uri)  # the listener is gone with the login

    assert tokens.issuer == oidc.issuer
    assert tokens.client_id == registration.client_id
    assert tokens.resource == mcp.url
    assert tokens.refresh_token is not None
    assert "mcp:read" in tokens.scopes
    assert tokens.expires_at is not None
    assert before + 3590 < tokens.expires_at < time.time() + 3601
    assert "echo" in await _tool_names(mcp.url, tokens)
    log = browser.log_text()
    assert "end ok=True callback delivered" in log
    assert tokens.access_token.reveal() not in log

    second = await _refresh(http, tokens, registration)
    third = await _refresh(http, second, registration)
    refresh_tokens = {t.refresh_token for t in (tokens, second, third)}
    assert len(refresh_tokens) == 3, "every refresh rotates the refresh token"
    assert "whoami" in await _tool_names(mcp.url, third)

    outcomes = await drive(
        revoke(third, registration, policy=POLICY),
        http=http,
        on_redirect=no_redirect,
        on_device_code=no_device_code,
    )
    by_hint = {o.token_type_hint: o for o in outcomes}
    assert by_hint["refresh_token"].outcome == "revoked"
    # oidc-provider cannot revoke its structured (JWT) access tokens: unsupported_token_type, by design.
    assert by_hint["access_token"].outcome == "unsupported", by_hint["access_token"].detail
    assert "unsupported_token_type" in by_hint["access_token"].detail
    with pytest.raises(GrantEndedError) as ended:
        await _refresh(http, third, registration)
    assert ended.value.error == "invalid_grant"

    stats: dict[str, Any] = await trio.to_thread.run_sync(oidc.stats)
    assert stats["registrations"] == 1
    assert stats["token_success"] == {"authorization_code": 1, "refresh_token": 2}
    assert stats["replay_detected"] == 0
    # The revocation revoked the whole grant. (oidc-provider 9 emits no revocation.success event, so the
    # fixture's "revocations" counter stays 0; grant.revoked is what it does emit.)
    assert stats["grants_revoked"] == 1
    events: list[dict[str, Any]] = await trio.to_thread.run_sync(oidc.events)
    refused = [e for e in events if e["event"] == "grant.error"]
    assert [e["error_detail"] for e in refused] == ["refresh token not found"]


async def test_denied_consent(
    http: httpx.AsyncClient,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The user aborts the consent: the flow ends in AuthorizationDeniedError(access_denied), no token."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    _use_browser(monkeypatch, browser_env(action="deny"))
    discovery = await _discover(http, mcp.url)
    async with open_callback_listener() as listener:
        registration = await _register(http, discovery, listener.redirect_uri)
        with pytest.raises(AuthorizationDeniedError) as denied:
            await _login(http, discovery, registration, listener)
    assert denied.value.error == "access_denied"
    stats: dict[str, Any] = await trio.to_thread.run_sync(oidc.stats)
    assert stats["token_requests"] == {}


async def test_device_flow(
    http: httpx.AsyncClient,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 8628 end to end: the code is shown (the browser opens the complete URI), polling gets a token."""
    oidc = oidc_server(device_poll_interval=1)
    mcp = mcp_server(oidc)
    browser = browser_env()
    _use_browser(monkeypatch, browser)
    discovery = await _discover(http, mcp.url)
    assert discovery.device_authorization_endpoint is not None  # the test server always offers it
    registration = await _register(http, discovery, loopback_redirect_uri(9876))
    assert "urn:ietf:params:oauth:grant-type:device_code" in registration.grant_types
    shown: list[ShowDeviceCode] = []

    async def on_device_code(effect: ShowDeviceCode) -> None:
        shown.append(effect)
        assert effect.verification_uri_complete is not None
        assert await open_browser(effect.verification_uri_complete, policy=POLICY)

    with trio.fail_after(WAIT):
        tokens = await drive(
            device_flow(discovery, registration, policy=POLICY, scopes=select_scopes(discovery)),
            http=http,
            on_redirect=no_redirect,
            on_device_code=on_device_code,
        )
    assert len(shown) == 1
    assert tokens.refresh_token is not None
    assert tokens.resource == mcp.url
    assert "echo" in await _tool_names(mcp.url, tokens)
    assert "end ok=True device flow finished" in browser.log_text()

"""The test servers work end to end, without the broker: an interop check of the fixtures themselves.

A hand-written OAuth client (httpx, a loopback listener, the HTTP browser driver) walks the whole MCP
authorization dance against the real oidc-provider and the real mcp SDK server.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest

from tests.harness import tool_names, wait_until
from tests.servers.helpers import CallbackCatcher, McpError, McpSession, parse_www_authenticate, pkce_pair

if TYPE_CHECKING:
    # Only for annotations: importing the plugin module before pytest registers it (conftest.py does)
    # would stop pytest from rewriting its asserts, which pytest turns into an error here.
    from tests.servers.fixtures import (
        BrowserEnv,
        BrowserEnvFactory,
        McpServer,
        McpServerFactory,
        OidcServer,
        OidcServerFactory,
    )

pytestmark = pytest.mark.integration

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
WAIT = 30.0


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        yield client


def _register(http: httpx.Client, oidc: OidcServer, **extra: Any) -> dict[str, Any]:
    response = http.post(
        oidc.metadata()["registration_endpoint"],
        json={
            "client_name": "ncp smoke test",
            "application_type": "native",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "refresh_token", DEVICE_GRANT],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            **extra,
        },
    )
    assert response.status_code == 201, response.text
    client: dict[str, Any] = response.json()
    return client


def _open_browser(browser: BrowserEnv, url: str) -> None:
    """Run the driver as webbrowser would (`$BROWSER URL`, waiting for it): it must return at once."""
    started = time.monotonic()
    done = subprocess.run(
        [browser["BROWSER"], url], env={**os.environ, **browser}, timeout=10, check=False, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 8  # returns at once (detached), well before its own 10 s timeout


def _authorize(
    oidc: OidcServer, mcp: McpServer, browser: BrowserEnv, client_id: str, scope: str
) -> dict[str, str]:
    """Authorization code + PKCE with `resource`; returns the callback's query parameters."""
    verifier, challenge = pkce_pair()
    with CallbackCatcher() as catcher:
        url = (
            oidc.metadata()["authorization_endpoint"]
            + "?"
            + urlencode(
                {
                    "response_type": "code",
                    "client_id": client_id,
                    "redirect_uri": catcher.redirect_uri,
                    "scope": scope,
                    "state": "state-1",
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                    "resource": mcp.url,
                }
            )
        )
        _open_browser(browser, url)
        params = catcher.wait(WAIT)
    assert params.get("state") == "state-1"
    assert params.get("iss") == oidc.issuer  # RFC 9207: oidc-provider always sends it
    if "code" in params:
        params["code_verifier"] = verifier
        params["redirect_uri"] = catcher.redirect_uri
    return params


def _login(
    http: httpx.Client,
    oidc: OidcServer,
    mcp: McpServer,
    browser: BrowserEnv,
    *,
    client_id: str,
    scope: str = "mcp:read",
    secret: str | None = None,
    method: str = "none",
) -> dict[str, Any]:
    """Authorize and exchange the code, authenticating as `method` (none, client_secret_basic/_post)."""
    params = _authorize(oidc, mcp, browser, client_id, scope)
    data = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": params["redirect_uri"],
        "code_verifier": params["code_verifier"],
        "resource": mcp.url,
    }
    if method == "client_secret_basic":
        assert secret is not None
        response = http.post(
            oidc.metadata()["token_endpoint"], data=data, auth=httpx.BasicAuth(client_id, secret)
        )
    else:
        if method == "client_secret_post":
            assert secret is not None
            data |= {"client_id": client_id, "client_secret": secret}
        else:
            data["client_id"] = client_id
        response = http.post(oidc.metadata()["token_endpoint"], data=data)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def _refresh(
    http: httpx.Client,
    oidc: OidcServer,
    mcp: McpServer,
    client_id: str,
    refresh_token: str,
    *,
    timeout: float = 10.0,
) -> httpx.Response:
    return http.post(
        oidc.metadata()["token_endpoint"],
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
            "resource": mcp.url,
        },
        timeout=timeout,
    )


def test_discovery_chain(
    http: httpx.Client, oidc_server: OidcServerFactory, mcp_server: McpServerFactory
) -> None:
    """401 names the PRM, the PRM names the issuer, the AS metadata has the MCP-relevant fields."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)

    response = http.post(mcp.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401
    challenge = parse_www_authenticate(response.headers["www-authenticate"])
    assert challenge["resource_metadata"] == mcp.prm_url

    prm = http.get(challenge["resource_metadata"]).json()
    assert prm["resource"] == mcp.url
    assert prm["authorization_servers"] == [oidc.issuer]
    assert prm["scopes_supported"] == ["mcp:read"]

    metadata = http.get(f"{oidc.issuer}/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"] == oidc.issuer
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert "mcp:admin" in metadata["scopes_supported"]
    for key in ("registration_endpoint", "revocation_endpoint", "device_authorization_endpoint"):
        assert metadata[key].startswith(oidc.issuer + "/")


def test_login_refresh_rotation_and_replay(
    http: httpx.Client,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> None:
    """Code flow → JWT for the MCP server → two rotations → a replayed refresh token revokes the grant."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    browser = browser_env()
    client_id = _register(http, oidc)["client_id"]

    tokens = _login(http, oidc, mcp, browser, client_id=client_id)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["aud"] == mcp.url
    assert claims["iss"] == oidc.issuer
    assert claims["sub"] == "alice"
    assert claims["scope"] == "mcp:read"
    assert "refresh_token" in tokens
    assert "admin_action" in tool_names(mcp.url, tokens["access_token"])
    log = browser.log_text()
    assert "code=%3Ccode%3E" in log or "code=<code>" in log
    assert tokens["access_token"] not in log

    first = tokens["refresh_token"]
    second_response = _refresh(http, oidc, mcp, client_id, first)
    assert second_response.status_code == 200, second_response.text
    second = second_response.json()
    third_response = _refresh(http, oidc, mcp, client_id, second["refresh_token"])
    assert third_response.status_code == 200, third_response.text
    third = third_response.json()
    assert len({first, second["refresh_token"], third["refresh_token"]}) == 3
    session = McpSession(http, mcp.url, third["access_token"])
    session.initialize()
    whoami = session.call_tool("whoami")
    assert whoami["structuredContent"]["sub"] == "alice"

    replay = _refresh(http, oidc, mcp, client_id, first)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    newest = _refresh(http, oidc, mcp, client_id, third["refresh_token"])
    assert newest.json()["error"] == "invalid_grant"  # the whole grant went with the replay

    stats = oidc.stats()
    assert stats["token_requests"] == {"authorization_code": 1, "refresh_token": 4}
    assert stats["token_success"] == {"authorization_code": 1, "refresh_token": 2}
    assert stats["replay_detected"] == 1
    assert stats["grants_revoked"] == 1
    assert stats["refresh_tokens_consumed"] == 2
    assert mcp.stats()["distinct_tokens"] >= 2


def test_deny_gives_access_denied(
    http: httpx.Client,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> None:
    """The deny driver aborts the interaction; the client's redirect carries access_denied and iss."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    client_id = _register(http, oidc)["client_id"]
    params = _authorize(oidc, mcp, browser_env(action="deny"), client_id, "mcp:read")
    assert params["error"] == "access_denied"
    assert "code" not in params


def test_step_up_scope(
    http: httpx.Client,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> None:
    """admin_action needs mcp:admin: 403 insufficient_scope naming it, then success with a wider token."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    browser = browser_env()
    client_id = _register(http, oidc)["client_id"]
    narrow = _login(http, oidc, mcp, browser, client_id=client_id)
    session = McpSession(http, mcp.url, narrow["access_token"])
    session.initialize()
    with pytest.raises(McpError) as refused:
        session.call_tool("admin_action")
    assert refused.value.status == 403
    challenge = parse_www_authenticate(refused.value.www_authenticate or "")
    assert challenge["error"] == "insufficient_scope"
    assert challenge["scope"].split() == ["mcp:read", "mcp:admin"]
    assert challenge["resource_metadata"] == mcp.prm_url

    wide = _login(http, oidc, mcp, browser, client_id=client_id, scope=challenge["scope"])
    session = McpSession(http, mcp.url, wide["access_token"])
    session.initialize()
    assert session.call_tool("admin_action")["content"][0]["text"] == "admin action done"
    assert mcp.stats()["step_up_refusals"] == 1


def test_audience_is_exact(
    http: httpx.Client,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> None:
    """A token for one MCP server is refused by another; a trailing slash on `resource` is invalid_target."""
    oidc = oidc_server()
    first = mcp_server(oidc)
    second = mcp_server(oidc)
    client_id = _register(http, oidc)["client_id"]
    tokens = _login(http, oidc, first, browser_env(), client_id=client_id)
    with pytest.raises(McpError) as refused:
        McpSession(http, second.url, tokens["access_token"]).initialize()
    assert refused.value.status == 401

    response = http.post(
        oidc.metadata()["token_endpoint"],
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
            "resource": first.url + "/",
        },
    )
    assert response.json()["error"] == "invalid_target"


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "none"])
def test_static_client(
    method: str,
    http: httpx.Client,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> None:
    """Pre-registered clients from the config authenticate with each token endpoint method."""
    client: dict[str, Any] = {
        "client_id": f"static-{method}",
        "application_type": "native",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": method,
    }
    if method != "none":
        client["client_secret"] = "static-secret-0123456789"
    oidc = oidc_server(clients=[client])
    mcp = mcp_server(oidc)
    tokens = _login(
        http,
        oidc,
        mcp,
        browser_env(),
        client_id=client["client_id"],
        secret=client.get("client_secret"),
        method=method,
    )
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == client["client_id"]
    assert "refresh_token" in tokens


def test_short_access_token_ttl(
    http: httpx.Client,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> None:
    """A 2 s access token is refused by the MCP server once expired; set_ttl changes the next token."""
    oidc = oidc_server(access_token_ttl=2)
    mcp = mcp_server(oidc)
    client_id = _register(http, oidc)["client_id"]
    tokens = _login(http, oidc, mcp, browser_env(), client_id=client_id)
    assert tokens["expires_in"] == 2
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 2
    time.sleep(max(0.0, claims["exp"] - time.time()) + 0.2)
    with pytest.raises(McpError) as expired:
        McpSession(http, mcp.url, tokens["access_token"]).initialize()
    assert expired.value.status == 401

    oidc.set_ttl(access_token=30)
    refreshed = _refresh(http, oidc, mcp, client_id, tokens["refresh_token"]).json()
    assert refreshed["expires_in"] == 30
    assert "echo" in tool_names(mcp.url, refreshed["access_token"])


def _device_login(
    http: httpx.Client, oidc: OidcServer, mcp: McpServer, browser: BrowserEnv, client_id: str
) -> httpx.Response:
    """RFC 8628 with `resource`: start, let the driver confirm the user code, poll; the last poll answer."""
    metadata = oidc.metadata()
    started = http.post(
        metadata["device_authorization_endpoint"],
        data={"client_id": client_id, "scope": "mcp:read", "resource": mcp.url},
    )
    assert started.status_code == 200, started.text
    device = started.json()
    poll = {"grant_type": DEVICE_GRANT, "device_code": device["device_code"], "client_id": client_id}
    assert http.post(metadata["token_endpoint"], data=poll).json()["error"] == "authorization_pending"

    _open_browser(browser, device["verification_uri_complete"])
    browser.wait_for_log("end ok=", timeout=WAIT)

    def answered() -> httpx.Response | None:
        polled = http.post(metadata["token_endpoint"], data=poll)
        pending = polled.status_code != 200 and polled.json()["error"] == "authorization_pending"
        return None if pending else polled

    return wait_until(
        answered, WAIT, interval=device.get("interval", 1), message="the device grant to end (still pending)"
    )


def test_device_flow(
    http: httpx.Client,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> None:
    """RFC 8628: the HTTP driver confirms the user code, the polling client gets a JWT for the MCP server."""
    oidc = oidc_server(device_poll_interval=1)
    mcp = mcp_server(oidc)
    client_id = _register(http, oidc)["client_id"]
    browser = browser_env()
    polled = _device_login(http, oidc, mcp, browser, client_id)
    assert "end ok=True device flow finished" in browser.log_text()
    assert polled.status_code == 200, polled.text
    tokens = polled.json()
    assert jwt.decode(tokens["access_token"], options={"verify_signature": False})["aud"] == mcp.url
    assert "refresh_token" in tokens
    assert "echo" in tool_names(mcp.url, tokens["access_token"])
    assert oidc.stats()["token_success"] == {"device_code": 1}


def test_device_flow_deny(
    http: httpx.Client,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> None:
    """Denying the device confirmation makes the next poll answer access_denied."""
    oidc = oidc_server(device_poll_interval=1)
    mcp = mcp_server(oidc)
    client_id = _register(http, oidc)["client_id"]
    browser = browser_env(action="deny")
    polled = _device_login(http, oidc, mcp, browser, client_id)
    assert "end ok=True device flow denied" in browser.log_text()
    assert polled.json()["error"] == "access_denied"


def test_token_endpoint_switch_and_restart(
    http: httpx.Client,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> None:
    """503, injected errors and stalls leave the refresh token unspent; a restart keeps grant and issuer."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    client_id = _register(http, oidc)["client_id"]
    refresh_token = _login(http, oidc, mcp, browser_env(), client_id=client_id)["refresh_token"]

    oidc.set_token_endpoint("503", grant_types=["refresh_token"], count=1)
    assert _refresh(http, oidc, mcp, client_id, refresh_token).status_code == 503
    oidc.set_token_endpoint("error", error="slow_down", status=400)
    assert _refresh(http, oidc, mcp, client_id, refresh_token).json()["error"] == "slow_down"
    oidc.set_token_endpoint("stall", seconds=0.5)
    with pytest.raises(httpx.RemoteProtocolError):
        _refresh(http, oidc, mcp, client_id, refresh_token)
    oidc.set_token_endpoint("stall", seconds=30)
    with pytest.raises(httpx.ReadTimeout):
        http.post(
            oidc.metadata()["token_endpoint"],
            data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id},
            timeout=0.5,
        )
    oidc.set_token_endpoint("ok")

    issuer = oidc.issuer
    oidc.stop()
    with pytest.raises(httpx.ConnectError):
        http.get(f"{issuer}/.well-known/oauth-authorization-server")
    oidc.start()
    assert oidc.issuer == issuer
    refreshed = _refresh(http, oidc, mcp, client_id, refresh_token)
    assert refreshed.status_code == 200, refreshed.text
    assert "echo" in tool_names(mcp.url, refreshed.json()["access_token"])
    stats = oidc.stats()  # counters restart with the process
    assert stats["token_requests"] == {"refresh_token": 1}

    assert oidc.revoke_all() == 1
    assert (
        _refresh(http, oidc, mcp, client_id, refreshed.json()["refresh_token"]).json()["error"]
        == "invalid_grant"
    )


# ---- the token endpoint switch, mode by mode: each checked against the server's own counters ----------


@dataclass
class Grant:
    """A logged-in client of a fresh authorization server, its counters zeroed after the login."""

    http: httpx.Client
    oidc: OidcServer
    mcp: McpServer
    client_id: str
    refresh_token: str = field(repr=False)

    def refresh(self, refresh_token: str | None = None, *, timeout: float = 10.0) -> httpx.Response:
        """POST a refresh of ``refresh_token`` (default: the login's) and return the answer."""
        token = refresh_token or self.refresh_token
        return _refresh(self.http, self.oidc, self.mcp, self.client_id, token, timeout=timeout)

    def still_unspent(self) -> None:
        """The login's refresh token still works: the switch left the grant as it was."""
        again = self.refresh()
        assert again.status_code == 200, again.text
        stats = self.oidc.stats()
        assert stats["refresh_tokens_consumed"] == 1  # by this refresh, not before
        assert stats["replay_detected"] == 0


@dataclass
class Answer:
    """What a refresh sent in a thread got, and when (monotonic)."""

    sent_at: float
    response: httpx.Response | None = None
    error: Exception | None = None
    answered_at: float | None = None


def _refresh_in_thread(grant: Grant, *, timeout: float = 30.0) -> tuple[threading.Thread, Answer]:
    answer = Answer(sent_at=time.monotonic())

    def run() -> None:
        try:
            answer.response = grant.refresh(timeout=timeout)
        except httpx.HTTPError as exc:
            answer.error = exc
        answer.answered_at = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answer


def _events(oidc: OidcServer, name: str) -> list[dict[str, Any]]:
    return [e for e in oidc.events() if e["event"] == name]


@pytest.fixture
def grant(
    http: httpx.Client,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> Grant:
    """A client logged in at a fresh authorization server (code + PKCE), the server's counters zeroed."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    client_id = _register(http, oidc)["client_id"]
    tokens = _login(http, oidc, mcp, browser_env(), client_id=client_id)
    oidc.reset_stats()
    return Grant(http, oidc, mcp, client_id, tokens["refresh_token"])


def test_switch_503_answers_503_with_retry_after_unprocessed(grant: Grant) -> None:
    """Mode 503: HTTP 503 with the configured Retry-After and temporarily_unavailable; nothing spent."""
    grant.oidc.set_token_endpoint("503", retry_after=7, grant_types=["refresh_token"], count=1)
    answer = grant.refresh()
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "7"
    assert answer.json()["error"] == "temporarily_unavailable"
    stats = grant.oidc.stats()
    assert stats["token_503"] == 1
    assert stats["token_requests"] == {"refresh_token": 1}
    assert stats["refresh_tokens_consumed"] == 0
    assert stats["token_success"] == {}
    grant.still_unspent()  # count=1: the next request is processed


def test_switch_error_answers_the_oauth_error_unprocessed(grant: Grant) -> None:
    """Mode error: the given status and OAuth error (even invalid_grant), and the grant is untouched."""
    grant.oidc.set_token_endpoint("error", error="invalid_grant", status=400, count=1)
    answer = grant.refresh()
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    stats = grant.oidc.stats()
    assert stats["token_injected_errors"] == 1
    assert stats["token_errors"] == {}  # not oidc-provider's own refusal
    assert stats["refresh_tokens_consumed"] == 0
    grant.still_unspent()


def test_switch_stall_holds_without_answering_then_drops_unprocessed(grant: Grant) -> None:
    """Mode stall: no answer while held (the client times out); after `seconds` the connection is closed
    without processing; setting a mode releases a held request the same way."""
    grant.oidc.set_token_endpoint("stall", seconds=1, count=1)
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):  # the server hung up without a response
        grant.refresh()
    assert time.monotonic() - started >= 1
    stats = grant.oidc.stats()
    assert (stats["token_stalled"], stats["token_dropped"]) == (1, 1)
    assert stats["refresh_tokens_consumed"] == 0

    grant.oidc.set_token_endpoint("stall", seconds=60, count=1)
    with pytest.raises(httpx.ReadTimeout):
        grant.refresh(timeout=0.5)
    assert grant.oidc.stats()["token_dropped"] == 1  # still held
    grant.oidc.set_token_endpoint("ok")  # releases it: dropped, unprocessed
    wait_until(lambda: grant.oidc.stats()["token_dropped"] == 2, WAIT, message="the released stall's drop")
    assert grant.oidc.stats()["refresh_tokens_consumed"] == 0
    grant.still_unspent()


def test_switch_stall_then_proceed_processes_after_the_hold(grant: Grant) -> None:
    """Mode stall with then=proceed: a held request is processed when released, also when the release is
    a new mode (it keeps the `then` it arrived under)."""
    grant.oidc.set_token_endpoint("stall", seconds=60, then="proceed", count=1)
    thread, answer = _refresh_in_thread(grant)
    wait_until(lambda: grant.oidc.stats()["token_stalled"] == 1, WAIT, message="the refresh to be held")
    assert answer.answered_at is None
    assert grant.oidc.stats()["refresh_tokens_consumed"] == 0  # held before processing
    grant.oidc.set_token_endpoint("ok")
    thread.join(WAIT)
    assert answer.response is not None, answer.error
    assert answer.response.status_code == 200, answer.response.text
    stats = grant.oidc.stats()
    assert stats["refresh_tokens_consumed"] == 1
    assert stats["token_dropped"] == 0


def test_switch_drop_closes_at_once_unprocessed(grant: Grant) -> None:
    """Mode drop: the connection is closed without an answer and without processing; nothing spent."""
    grant.oidc.set_token_endpoint("drop", grant_types=["refresh_token"], count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        grant.refresh()
    stats = grant.oidc.stats()
    assert stats["token_dropped"] == 1
    assert stats["token_stalled"] == 0
    assert stats["refresh_tokens_consumed"] == 0
    assert stats["token_success"] == {}
    grant.still_unspent()


def test_switch_late_rotates_at_once_and_answers_seconds_later(grant: Grant) -> None:
    """Mode late: the refresh is processed on arrival (the refresh token is consumed while the client still
    waits) and the answer, with the new tokens, arrives no sooner than `seconds` later."""
    late = 2.0
    grant.oidc.set_token_endpoint("late", seconds=late, grant_types=["refresh_token"], count=1)
    thread, answer = _refresh_in_thread(grant)
    thread.join(WAIT)
    assert answer.response is not None, answer.error
    assert answer.response.status_code == 200, answer.response.text
    assert answer.answered_at is not None
    assert answer.answered_at - answer.sent_at >= late
    stats = grant.oidc.stats()
    assert (stats["token_late"], stats["refresh_tokens_consumed"]) == (1, 1)
    assert stats["token_success"] == {"refresh_token": 1}
    # By the server's clock: rotated first, answer written `late` seconds after processing.
    (consumed,) = _events(grant.oidc, "refresh_token.consumed")
    (held,) = _events(grant.oidc, "token_endpoint.late")
    (written,) = _events(grant.oidc, "token_endpoint.answered")
    assert consumed["t"] <= held["t"] <= written["t"] - late + 0.01  # ms timestamps
    new = answer.response.json()["refresh_token"]
    assert new != grant.refresh_token
    assert grant.refresh(new).status_code == 200  # the late answer carried the live refresh token


def test_switch_lose_rotates_then_closes_without_the_answer(grant: Grant) -> None:
    """Mode lose: the refresh is processed (the token rotates) and the connection closed without the
    answer; the client can only present the spent token, which a strict-rotation server calls a replay."""
    grant.oidc.set_token_endpoint("lose", grant_types=["refresh_token"], count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        grant.refresh()
    stats = grant.oidc.stats()
    assert stats["token_lost"] == 1
    assert stats["refresh_tokens_consumed"] == 1
    assert stats["token_success"] == {"refresh_token": 1}
    replay = grant.refresh()
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    stats = grant.oidc.stats()
    assert stats["replay_detected"] == 1
    assert stats["grants_revoked"] == 1


def test_switch_refuses_an_unknown_mode(http: httpx.Client, oidc_server: OidcServerFactory) -> None:
    """An unknown mode is refused with 400 naming the modes, and the switch is left as it was."""
    oidc = oidc_server()
    oidc.set_token_endpoint("503")
    with pytest.raises(httpx.HTTPStatusError) as refused:
        oidc.set_token_endpoint("sometimes")
    assert refused.value.response.status_code == 400
    assert "late" in refused.value.response.json()["modes"]
    answer = http.post(oidc.metadata()["token_endpoint"], data={"grant_type": "refresh_token"})
    assert answer.status_code == 503


def test_chromium_driver(
    http: httpx.Client,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> None:
    """The Chromium driver logs in, consents and denies like the HTTP one, device flow included."""
    from tests.servers.fixtures import chromium_available

    if os.environ.get("NCP_TEST_CHROMIUM") != "1" or not chromium_available():
        pytest.skip("set NCP_TEST_CHROMIUM=1 with /usr/bin/chromium installed to test the Chromium driver")
    oidc = oidc_server(device_poll_interval=1)
    mcp = mcp_server(oidc)
    client_id = _register(http, oidc)["client_id"]
    tokens = _login(http, oidc, mcp, browser_env(driver="chromium"), client_id=client_id)
    assert "echo" in tool_names(mcp.url, tokens["access_token"])
    denied = _authorize(oidc, mcp, browser_env(driver="chromium", action="deny"), client_id, "mcp:read")
    assert denied["error"] == "access_denied"
    polled = _device_login(http, oidc, mcp, browser_env(driver="chromium"), client_id)
    assert polled.status_code == 200, polled.text
    polled = _device_login(http, oidc, mcp, browser_env(driver="chromium", action="deny"), client_id)
    assert polled.json()["error"] == "access_denied"


def test_http_driver_stays_on_loopback(tmp_path: Path) -> None:
    """The HTTP driver refuses a non-loopback URL before any request, and redacts codes in its log."""
    from tests.servers.browser_http import is_loopback_url, redact_url, run_login

    log = tmp_path / "browser.log"
    result = run_login("http://192.0.2.1/auth?x=1", log_path=str(log), timeout=5)
    assert not result.ok
    assert "refused non-loopback URL" in result.reason
    assert is_loopback_url("http://127.0.0.2:1/")
    assert is_loopback_url("http://[::1]:1/")
    assert not is_loopback_url("http://127.0.0.1.example.com/")
    assert not is_loopback_url("file:///etc")
    redacted = redact_url("http://127.0.0.1:9/callback?code=SECRET&state=s&iss=http://127.0.0.1:8")
    assert "SECRET" not in redacted
    assert "code=<code>" in redacted
    assert "state=s" in redacted

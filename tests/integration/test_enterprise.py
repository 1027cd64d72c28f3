"""Enterprise-managed authorization (E2, SEP-990) through the real daemon, against two real oidc-providers:
an enterprise IdP (login, refresh, token exchange for ID-JAGs) and the MCP servers' authorization server
(jwt-bearer with the ID-JAG). Two MCP servers of the same company share one IdP login.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

import ncp_client
from brokerd import oauth
from tests.conftest import Env, start_daemon
from tests.servers.helpers import McpSession

if TYPE_CHECKING:
    from tests.servers.fixtures import BrowserEnvFactory, McpServer, McpServerFactory, OidcServerFactory

pytestmark = pytest.mark.integration

CHAT_SECRET = "chat-s3cret-never-logged"
LOGIN_TIMEOUT = 120.0


def whoami(mcp: McpServer, access_token: str) -> dict[str, Any]:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        session = McpSession(client, mcp.url, access_token)
        session.initialize()
        result: dict[str, Any] = session.call_tool("whoami")["structuredContent"]
        return result


def status(env: Env, name: str) -> dict[str, Any]:
    server: dict[str, Any] = json.loads(env.run("ncp-broker", "status", "--json", name).stdout)["servers"][0]
    return server


def test_the_second_server_of_the_same_idp_needs_no_second_login(
    env: Env,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> None:
    """One browser login at the IdP; both MCP servers get tokens from it (ID token → ID-JAG → jwt-bearer);
    the IdP grant is refreshed like any grant and survives a restart: no second login, ever."""
    idp_client = {
        "client_id": "ncp-at-idp",
        "grant_types": ["authorization_code", "refresh_token", oauth.TOKEN_EXCHANGE],
        "redirect_uris": ["http://127.0.0.1/callback"],
        "response_types": ["code"],
        "application_type": "native",
        "token_endpoint_auth_method": "none",
    }
    idp = oidc_server(
        clients=[idp_client], access_token_ttl=4, extra={"token_exchange": {"client_id": "ncp-at-chat"}}
    )
    with httpx.Client(trust_env=False) as http:
        idp_jwks = http.get(idp.metadata()["jwks_uri"]).json()
    chat_client = {
        "client_id": "ncp-at-chat",
        "client_secret": CHAT_SECRET,
        "grant_types": [oauth.JWT_BEARER],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    chat_as = oidc_server(
        clients=[chat_client],
        access_token_ttl=6,
        extra={"jwt_bearer": {"issuers": [{"issuer": idp.issuer, "jwks": idp_jwks}]}},
    )
    one, two = mcp_server(chat_as), mcp_server(chat_as)
    enterprise = {"issuer": idp.issuer, "clientId": "ncp-at-idp"}
    oauth21 = {"clientId": "ncp-at-chat", "clientSecret": CHAT_SECRET, "scopes": ["mcp:read"]}
    env.write_config(
        {
            name: {
                "url": mcp.url,
                "auth": {
                    "type": "oauth",
                    "allowInsecureLoopback": True,
                    "oauth21": {**oauth21, "enterprise": enterprise},
                },
            }
            for name, mcp in (("one", one), ("two", two))
        }
    )
    env.vars["BROWSER"] = "false"  # only `ncp-broker login` below gets a browser
    daemon = start_daemon(env)
    try:
        with pytest.raises(ncp_client.NeedsLogin) as err:
            ncp_client.get_token("two", socket_path=env.socket)
        assert f"not logged in at the enterprise IdP {idp.issuer}" in err.value.message
        assert err.value.hint == "ncp-broker login two"

        browser = browser_env(user="alice")
        login = env.run("ncp-broker", "login", "one", extra_env=dict(browser), timeout=LOGIN_TIMEOUT)
        assert login.returncode == 0, login.stderr
        assert whoami(one, ncp_client.get_token("one", socket_path=env.socket))["sub"] == "alice"
        assert status(env, "two")["state"] == "ready"
        assert whoami(two, ncp_client.get_token("two", socket_path=env.socket))["sub"] == "alice"
        assert idp.stats()["authorizations"] == 1

        time.sleep(7)  # the IdP's 4 s token is refreshed by its timer; the servers' 6 s tokens expire
        assert whoami(two, ncp_client.get_token("two", socket_path=env.socket))["sub"] == "alice"
        idp_stats = idp.stats()
        assert idp_stats["token_success"].get("refresh_token", 0) >= 1
        assert idp_stats["token_success"]["token_exchange"] >= 3  # one, two, and two's renewal
        assert chat_as.stats()["token_errors"] == {}
        assert status(env, "one")["grant_type"] == "jwt_bearer"
    finally:
        daemon.stop()

    # A new daemon: the IdP grant comes from the store; a server whose token is gone gets one without a
    # login (the refreshed IdP grant is what was saved).
    daemon = start_daemon(env)
    try:
        # one's stored token is renewed on schedule (its IdP grant loaded with it), and after expiry too.
        deadline = time.monotonic() + 5
        while "next_refresh" not in status(env, "one"):
            assert time.monotonic() < deadline, status(env, "one")
            time.sleep(0.2)
        time.sleep(6.5)
        assert whoami(one, ncp_client.get_token("one", socket_path=env.socket))["sub"] == "alice"
        forgot = env.run("ncp-broker", "invalidate", "two", "--what", "tokens")
        assert forgot.returncode == 0, forgot.stderr
        assert whoami(two, ncp_client.get_token("two", socket_path=env.socket))["sub"] == "alice"
        assert idp.stats()["authorizations"] == 1
    finally:
        daemon.stop()

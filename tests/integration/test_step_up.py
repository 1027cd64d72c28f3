"""A host mid-session: step-up (A9), a server that moves to another authorization server (D7) and first
use without `ncp-broker login`, through the mcp SDK's client with `broker_auth_for_httpx2`, against
oidc-provider and the mcp SDK's server.

No `ncp-broker login` runs for these logins: the daemon opens `$BROWSER` itself (the fixtures' HTTP
driver, approving), as it would open the user's browser for a host such as an IDE.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

import ncp_client
from tests.conftest import Daemon, Env, start_daemon
from tests.integration.test_login import log_in, serve
from tests.servers.helpers import McpSession

if TYPE_CHECKING:
    from tests.servers.fixtures import (
        BrowserEnvFactory,
        McpServer,
        McpServerFactory,
        OidcServer,
        OidcServerFactory,
    )

pytestmark = pytest.mark.integration


@pytest.fixture
def browsing_daemon(env: Env, browser_env: BrowserEnvFactory) -> Iterator[Daemon]:
    """A daemon whose `$BROWSER` approves every consent page it is sent to."""
    env.vars.update(browser_env())
    daemon = start_daemon(env)
    yield daemon
    daemon.stop()


@pytest.fixture
def headless_daemon(env: Env) -> Iterator[Daemon]:
    """A daemon with no display and no `$BROWSER`: it cannot open a browser."""
    for name in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
        env.vars.pop(name, None)
    daemon = start_daemon(env)
    yield daemon
    daemon.stop()


@pytest.fixture
def servers(oidc_server: OidcServerFactory, mcp_server: McpServerFactory) -> tuple[OidcServer, McpServer]:
    oidc = oidc_server()
    return oidc, mcp_server(oidc)


def call_tool(env: Env, url: str, tool: str, *, login: bool = True) -> str:
    """`tools/call` through the mcp SDK, authenticated by the broker; the tool's text."""

    async def run() -> str:
        auth = ncp_client.broker_auth_for_httpx2("srv", socket_path=env.socket, login=login)
        async with (
            httpx2.AsyncClient(auth=auth, timeout=30) as http,
            Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
        ):
            result = await client.call_tool(tool, {"text": "hi"} if tool == "echo" else {})
            assert not result.is_error, result.content
            return str(result.content[0].text)  # type: ignore[union-attr]

    try:
        return anyio.run(run)
    except BaseExceptionGroup as group:  # the SDK's task groups wrap what the auth flow raised
        raise _leaves(group)[0] from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    return [
        leaf
        for exc in group.exceptions
        for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    ]


def scopes_of(token: str) -> set[str]:
    """The `scope` claim of a JWT access token (read, not verified: the MCP server verifies it)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return set(str(claims.get("scope", "")).split())


def test_step_up_reauthorizes_with_the_union_of_scopes(
    env: Env,
    servers: tuple[OidcServer, McpServer],
    browser_env: BrowserEnvFactory,
    browsing_daemon: Daemon,
) -> None:
    """A9: a 403 insufficient_scope makes the daemon re-authorize with held + challenged scopes, opening
    the browser itself; the request is resent once and succeeds."""
    oidc, mcp = servers
    serve(env, mcp)
    log_in(env, browser_env)
    first = ncp_client.get_token("srv", socket_path=env.socket)
    assert "mcp:admin" not in scopes_of(first)
    assert call_tool(env, mcp.url, "admin_action") == "admin action done"
    second = ncp_client.get_token("srv", socket_path=env.socket)
    assert scopes_of(second) >= scopes_of(first) | {"mcp:admin"}  # the union, not only the new scope
    assert oidc.stats()["authorizations"] == 2
    assert mcp.stats()["step_up_refusals"] >= 1
    assert call_tool(env, mcp.url, "echo") == "hi"  # the held scopes still work
    assert oidc.stats()["authorizations"] == 2


def test_step_up_through_the_sync_httpx_auth(
    env: Env,
    servers: tuple[OidcServer, McpServer],
    browser_env: BrowserEnvFactory,
    browsing_daemon: Daemon,
) -> None:
    """A9 with `BrokerAuth` on a synchronous `httpx.Client`: the same flow as the async one."""
    oidc, mcp = servers
    serve(env, mcp)
    log_in(env, browser_env)
    with httpx.Client(auth=ncp_client.BrokerAuth("srv", socket_path=env.socket), timeout=30) as http:
        session = McpSession(http, mcp.url, None)
        session.initialize()
        result = session.call_tool("admin_action")
    assert result["content"][0]["text"] == "admin action done"
    assert oidc.stats()["authorizations"] == 2


def test_step_up_gives_up_after_three_authorizations_per_scope_set(
    env: Env,
    servers: tuple[OidcServer, McpServer],
    browser_env: BrowserEnvFactory,
    browsing_daemon: Daemon,
) -> None:
    """A9: at most MAX_AUTHORIZATIONS (3) authorization requests per scope set, then `insufficient_scope`
    with what to do; a login a person asks for starts the count afresh."""
    oidc, mcp = servers
    serve(env, mcp)
    log_in(env, browser_env)

    def step_up() -> str:
        token = ncp_client.get_token("srv", socket_path=env.socket)
        return ncp_client.scope_insufficient("srv", token, scopes=["mcp:admin"], socket_path=env.socket)

    for _ in range(3):
        step_up()
    with pytest.raises(ncp_client.InsufficientScope) as refused:
        step_up()
    assert refused.value.code == "insufficient_scope"
    assert "after 3 authorizations" in refused.value.message
    assert refused.value.hint.endswith("ncp-broker login srv")
    assert oidc.stats()["authorizations"] == 4  # the login, then three for the same (larger) scope set
    log_in(env, browser_env)
    assert "mcp:admin" in scopes_of(step_up())
    assert oidc.stats()["authorizations"] == 6


def test_step_up_is_not_attempted_for_a_stale_token_or_a_plain_403(
    env: Env, servers: tuple[OidcServer, McpServer], browser_env: BrowserEnvFactory, daemon: Daemon
) -> None:
    """Compare and swap: a step-up for a token that is no longer current returns the current one at once.
    A 403 whose challenge is not insufficient_scope is not a step-up (bad_request, nothing authorized)."""
    oidc, mcp = servers
    serve(env, mcp)
    log_in(env, browser_env)
    token = ncp_client.get_token("srv", socket_path=env.socket)
    stale = ncp_client.scope_insufficient("srv", "an-older-token", scopes=["x"], socket_path=env.socket)
    assert stale == token
    with pytest.raises(ncp_client.ServerError) as refused:
        ncp_client.scope_insufficient(
            "srv", token, www_authenticate='Bearer error="invalid_token"', socket_path=env.socket
        )
    assert refused.value.code == "bad_request"
    assert oidc.stats()["authorizations"] == 1


def test_server_moving_to_another_authorization_server_registers_and_logs_in_there(
    env: Env,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
    browsing_daemon: Daemon,
) -> None:
    """D7 (SEP-2352): after the MCP server switches issuer, its 401 leads the daemon to rediscover; the old
    grant ends, the daemon registers at the new issuer (the old client id is never sent there), logs in
    there through the browser, and the host's request is resent and succeeds."""
    as1, as2 = oidc_server(), oidc_server()
    mcp = mcp_server(as1)
    serve(env, mcp)
    log_in(env, browser_env)
    assert call_tool(env, mcp.url, "echo") == "hi"
    old_client_ids = {r["client_id"] for r in _registrations(env)}

    mcp.stop()
    mcp.config["issuer"] = as2.issuer
    mcp.start()
    as2.add_resource(mcp.url)
    assert call_tool(env, mcp.url, "echo") == "hi"

    assert as2.stats()["registrations"] == 1
    assert as2.stats()["authorizations"] == 1
    assert as1.stats()["authorizations"] == 1  # nothing more at the old issuer
    registrations = _registrations(env)
    assert {r["issuer"] for r in registrations} == {as1.issuer, as2.issuer}
    new_client_id = next(r["client_id"] for r in registrations if r["issuer"] == as2.issuer)
    assert new_client_id not in old_client_ids
    assert f"moved from {as1.issuer} to {as2.issuer}" in browsing_daemon.log_text()


def _registrations(env: Env) -> list[dict[str, str]]:
    """The stored client registrations (issuer, client_id) of `srv`, read from the file store."""
    (path,) = [p for p in env.data.rglob("*.json") if "registrations" in p.read_text()]
    record = json.loads(path.read_text())
    return [{"issuer": i, "client_id": r["client_id"]} for i, r in record["registrations"].items()]


def test_first_use_from_a_host_logs_in_through_the_daemon(
    env: Env, servers: tuple[OidcServer, McpServer], browsing_daemon: Daemon
) -> None:
    """A host with no terminal and no grant: with `login=True` the daemon opens the browser and the
    request waits for the login; with `login=False` the host gets NeedsLogin and nothing is authorized."""
    oidc, mcp = servers
    serve(env, mcp)
    with pytest.raises(ncp_client.NeedsLogin) as needs:
        call_tool(env, mcp.url, "echo", login=False)
    assert needs.value.hint == "ncp-broker login srv"
    assert oidc.stats()["authorizations"] == 0
    assert call_tool(env, mcp.url, "echo") == "hi"
    assert oidc.stats()["authorizations"] == 1


def test_headless_daemon_says_so_at_once_and_the_login_stays_joinable(
    env: Env, servers: tuple[OidcServer, McpServer], browser_env: BrowserEnvFactory, headless_daemon: Daemon
) -> None:
    """A daemon without a display or $BROWSER cannot open a browser: the host gets NeedsLogin at once with
    the URL and the command; `ncp-broker login` joins that pending login and finishes it."""
    oidc, mcp = servers
    serve(env, mcp)
    started = time.monotonic()
    with pytest.raises(ncp_client.NeedsLogin) as needs:
        call_tool(env, mcp.url, "echo")
    assert time.monotonic() - started < 20  # no wait for a login nobody can see
    assert "could not open a browser" in needs.value.message
    assert needs.value.hint.endswith("ncp-broker login srv")
    status = json.loads(env.run("ncp-broker", "status", "--json").stdout)["servers"][0]
    assert status["state"] == "login_pending"
    log_in(env, browser_env)
    assert oidc.stats()["authorizations"] == 1  # the pending login was joined, not a second one
    assert call_tool(env, mcp.url, "echo") == "hi"

"""A host mid-session: step-up (A9), a server that moves to another authorization server (D7) and first
use without `ncp-broker login`, through the mcp SDK's client with `broker_auth_for_httpx2`, against
oidc-provider and the mcp SDK's server.

No `ncp-broker login` runs for these logins: the daemon opens `$BROWSER` itself (the fixtures' HTTP
driver, approving), as it would open the user's browser for a host such as an IDE.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

import ncp_client
from tests.harness import Env, Stack, StackFactory, jwt_claims
from tests.servers.helpers import McpSession

if TYPE_CHECKING:
    from tests.servers.fixtures import OidcServerFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def browsing(stack: StackFactory) -> Stack:
    """A daemon whose `$BROWSER` approves every consent page it is sent to, with `srv` logged in."""
    return stack(daemon_browser=True)


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
    return set(str(jwt_claims(token).get("scope", "")).split())


def test_step_up_reauthorizes_with_the_union_of_scopes(env: Env, browsing: Stack) -> None:
    """A9: a 403 insufficient_scope makes the daemon re-authorize with held + challenged scopes, opening
    the browser itself; the request is resent once and succeeds."""
    oidc, mcp = browsing.oidc, browsing.mcp
    first = ncp_client.get_token("srv", socket_path=env.socket)
    assert "mcp:admin" not in scopes_of(first)
    assert call_tool(env, mcp.url, "admin_action") == "admin action done"
    second = ncp_client.get_token("srv", socket_path=env.socket)
    assert scopes_of(second) >= scopes_of(first) | {"mcp:admin"}  # the union, not only the new scope
    assert oidc.stats()["authorizations"] == 2
    assert mcp.stats()["step_up_refusals"] >= 1
    assert call_tool(env, mcp.url, "echo") == "hi"  # the held scopes still work
    assert oidc.stats()["authorizations"] == 2


def test_step_up_through_the_sync_httpx_auth(env: Env, browsing: Stack) -> None:
    """A9 with `BrokerAuth` on a synchronous `httpx.Client`: the same flow as the async one."""
    oidc, mcp = browsing.oidc, browsing.mcp
    with httpx.Client(auth=ncp_client.BrokerAuth("srv", socket_path=env.socket), timeout=30) as http:
        session = McpSession(http, mcp.url, None)
        session.initialize()
        result = session.call_tool("admin_action")
    assert result["content"][0]["text"] == "admin action done"
    assert oidc.stats()["authorizations"] == 2


def test_step_up_gives_up_after_three_authorizations_per_scope_set(env: Env, browsing: Stack) -> None:
    """A9: at most MAX_AUTHORIZATIONS (3) authorization requests per scope set, then `insufficient_scope`
    with what to do; a login a person asks for starts the count afresh."""
    oidc = browsing.oidc

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
    browsing.log_in()
    assert "mcp:admin" in scopes_of(step_up())
    assert oidc.stats()["authorizations"] == 6


def test_step_up_is_not_attempted_for_a_stale_token_or_a_plain_403(env: Env, stack: StackFactory) -> None:
    """Compare and swap: a step-up for a token that is no longer current returns the current one at once.
    A 403 whose challenge is not insufficient_scope is not a step-up (bad_request, nothing authorized)."""
    oidc = stack().oidc
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
    env: Env, browsing: Stack, oidc_server: OidcServerFactory
) -> None:
    """D7 (SEP-2352): after the MCP server switches issuer, its 401 leads the daemon to rediscover; the old
    grant ends, the daemon registers at the new issuer (the old client id is never sent there), logs in
    there through the browser, and the host's request is resent and succeeds."""
    as1, as2, mcp = browsing.oidc, oidc_server(), browsing.mcp
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
    assert f"moved from {as1.issuer} to {as2.issuer}" in browsing.daemon.log_text()


def _registrations(env: Env) -> list[dict[str, str]]:
    """The stored client registrations (issuer, client_id) of `srv`, read from the file store."""
    (path,) = [p for p in env.data.rglob("*.json") if "registrations" in p.read_text()]
    record = json.loads(path.read_text())
    return [{"issuer": i, "client_id": r["client_id"]} for i, r in record["registrations"].items()]


def test_first_use_from_a_host_logs_in_through_the_daemon(env: Env, stack: StackFactory) -> None:
    """A host with no terminal and no grant: with `login=True` the daemon opens the browser and the
    request waits for the login; with `login=False` the host gets NeedsLogin and nothing is authorized."""
    s = stack(daemon_browser=True, login=False)
    oidc, mcp = s.oidc, s.mcp
    with pytest.raises(ncp_client.NeedsLogin) as needs:
        call_tool(env, mcp.url, "echo", login=False)
    assert needs.value.hint == "ncp-broker login srv"
    assert oidc.stats()["authorizations"] == 0
    assert call_tool(env, mcp.url, "echo") == "hi"
    assert oidc.stats()["authorizations"] == 1


def test_headless_daemon_says_so_at_once_and_the_login_stays_joinable(env: Env, stack: StackFactory) -> None:
    """A daemon without a display or $BROWSER cannot open a browser: the host gets NeedsLogin at once with
    the URL and the command; `ncp-broker login` joins that pending login and finishes it."""
    for name in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):  # the daemon cannot open a browser
        env.vars.pop(name, None)
    s = stack(login=False)
    oidc, mcp = s.oidc, s.mcp
    started = time.monotonic()
    with pytest.raises(ncp_client.NeedsLogin) as needs:
        call_tool(env, mcp.url, "echo")
    assert time.monotonic() - started < 20  # no wait for a login nobody can see
    assert "could not open a browser" in needs.value.message
    assert needs.value.hint.endswith("ncp-broker login srv")
    assert s.status()["state"] == "login_pending"
    s.log_in()
    assert oidc.stats()["authorizations"] == 1  # the pending login was joined, not a second one
    assert call_tool(env, mcp.url, "echo") == "hi"

"""``ncp-broker proxy``: hosts that speak stdio reach a protected MCP server with the broker's tokens.

Real parts only: the daemon, oidc-provider (strict rotation), the mcp SDK's streamable HTTP server in its
three wire behaviours (stateful with SSE answers, stateless, JSON answers), and the mcp SDK's stdio client
as the host. The login is `ncp-broker login`, approved by the fixtures' HTTP browser driver, except where a
test shows the proxy's own first-use login.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from tests.conftest import Daemon, Env, start_daemon
from tests.servers.proxy_hosts import RawHost, sdk_host

if TYPE_CHECKING:
    from tests.servers.fixtures import BrowserEnvFactory, McpServer, McpServerFactory, OidcServerFactory

pytestmark = pytest.mark.integration

NAME = "srv"
LOGIN_TIMEOUT = 120.0


def configure(env: Env, url: str, **auth: Any) -> None:
    block = {"type": "oauth", "oauth21": {}, "allowInsecureLoopback": True, **auth}
    env.write_config({NAME: {"url": url, "auth": block}})


def log_in(env: Env, browser_env: BrowserEnvFactory) -> None:
    done = env.run("ncp-broker", "login", NAME, extra_env=dict(browser_env()), timeout=LOGIN_TIMEOUT)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def broker(env: Env) -> Iterator[Daemon]:
    daemon = start_daemon(env)
    assert daemon.proc.poll() is None, daemon.log_text()
    yield daemon
    daemon.stop()


def text_of(result: Any) -> str:
    assert not result.is_error, result.content
    return str(result.content[0].text)


@pytest.mark.parametrize("mode", ["stateful", "stateless", "json"])
def test_sdk_host_lists_and_calls_tools_through_the_proxy(
    env: Env,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
    mode: str,
) -> None:
    """The mcp SDK's stdio client, through the proxy, in each of the SDK server's wire behaviours."""
    oidc = oidc_server()
    mcp: McpServer = mcp_server(oidc, stateless=mode == "stateless", json_response=mode == "json")
    configure(env, mcp.url)
    daemon = start_daemon(env)
    try:
        log_in(env, browser_env)
        mcp.reset_stats()  # the login's own discovery probe was a 401

        async def host() -> tuple[list[str], str, str]:
            async with sdk_host(env, NAME) as client:
                tools = [t.name for t in (await client.list_tools()).tools]
                echoed = text_of(await client.call_tool("echo", {"text": "héllo\nworld"}))
                who = json.loads(text_of(await client.call_tool("whoami", {})))
                return tools, echoed, who["sub"]

        tools, echoed, sub = anyio.run(host)
    finally:
        daemon.stop()
    assert {"echo", "whoami", "admin_action"} <= set(tools)
    assert echoed == "héllo\nworld"
    assert sub == "alice"
    assert mcp.stats()["unauthorized"] == 0  # every request carried the broker's token


def test_a_url_naming_a_configured_server_is_accepted(
    env: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory, browser_env: BrowserEnvFactory
) -> None:
    """SERVER may be the server's URL, spelled differently (trailing slash, upper-case host)."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    configure(env, mcp.url)
    daemon = start_daemon(env)
    try:
        log_in(env, browser_env)
        spelled = mcp.url.replace("127.0.0.1", "127.0.0.1").upper().replace("HTTP://", "http://") + "/"
        spelled = spelled.replace("/MCP/", "/mcp/")
        with RawHost(env, spelled) as host:
            assert host.initialize()["result"]["serverInfo"]["name"] == "ncp-test-mcp"
            listed = host.request(1, "tools/list")
            assert "echo" in {t["name"] for t in listed["result"]["tools"]}
    finally:
        daemon.stop()


def _authorizations(oidc: Any) -> int:
    return int(oidc.stats()["token_requests"].get("authorization_code", 0))


def test_restarting_a_host_does_not_log_in(
    env: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory, browser_env: BrowserEnvFactory
) -> None:
    """A host that quits and starts again (a new proxy) gets the broker's grant: no second login."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    configure(env, mcp.url)
    daemon = start_daemon(env)
    try:
        log_in(env, browser_env)

        async def one_session(text: str) -> str:
            async with sdk_host(env, NAME) as client:
                return text_of(await client.call_tool("echo", {"text": text}))

        first = anyio.run(one_session, "first")
        second = anyio.run(one_session, "second")
    finally:
        daemon.stop()
    assert (first, second) == ("first", "second")
    assert _authorizations(oidc) == 1


def test_first_use_logs_in_once_for_several_hosts(
    env: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory, browser_env: BrowserEnvFactory
) -> None:
    """No grant yet, three hosts at once: the daemon opens one browser tab, every host's request waits
    for that one login and then succeeds (the hosts see no error)."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    configure(env, mcp.url)
    browser = browser_env()
    env.vars.update(browser)  # the daemon's $BROWSER: it opens the tab itself
    daemon = start_daemon(env)
    try:

        async def host(i: int, results: list[str]) -> None:
            async with sdk_host(env, NAME) as client:
                results.append(text_of(await client.call_tool("echo", {"text": f"host {i}"})))

        async def hosts() -> list[str]:
            results: list[str] = []
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(host, i, results)
            return sorted(results)

        results = anyio.run(hosts)
    finally:
        daemon.stop()
    assert results == ["host 0", "host 1", "host 2"]
    assert _authorizations(oidc) == 1
    assert browser.log_text().count("start action=approve") == 1  # one tab


def test_a_401_mid_session_is_recovered_without_the_host_noticing(
    env: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory, browser_env: BrowserEnvFactory
) -> None:
    """The server refuses the current token once: the proxy reports it (token_rejected), the daemon
    refreshes, the request is sent again and the host gets its answer."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    configure(env, mcp.url)
    daemon = start_daemon(env)
    try:
        log_in(env, browser_env)

        async def session() -> tuple[str, str]:
            async with sdk_host(env, NAME) as client:
                before = text_of(await client.call_tool("echo", {"text": "before"}))
                mcp.refuse_tokens(1)
                after = text_of(await client.call_tool("echo", {"text": "after"}))
                return before, after

        refreshes_before = oidc.stats()["token_success"].get("refresh_token", 0)
        assert anyio.run(session) == ("before", "after")
        stats = oidc.stats()
    finally:
        daemon.stop()
    assert mcp.stats()["refused_tokens"] == 1
    assert stats["token_success"].get("refresh_token", 0) == refreshes_before + 1
    assert stats["replay_detected"] == 0
    assert _authorizations(oidc) == 1


def test_step_up_through_the_proxy(
    env: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory, browser_env: BrowserEnvFactory
) -> None:
    """A tool needing another scope: 403 insufficient_scope → scope_insufficient → the daemon re-authorizes
    (its $BROWSER approves) → the call is sent again and succeeds."""
    oidc = oidc_server()
    mcp = mcp_server(oidc, tool_scopes={"admin_action": ["mcp:admin"]})
    env.write_config(
        {
            NAME: {
                "url": mcp.url,
                "auth": {"type": "oauth", "oauth21": {"scopes": ["mcp:read"]}, "allowInsecureLoopback": True},
            }
        }
    )
    env.vars.update(browser_env())
    daemon = start_daemon(env)
    try:
        log_in(env, browser_env)

        async def session() -> str:
            async with sdk_host(env, NAME) as client:
                return text_of(await client.call_tool("admin_action", {}))

        assert anyio.run(session) == "admin action done"
    finally:
        daemon.stop()
    assert mcp.stats()["step_up_refusals"] == 1
    assert _authorizations(oidc) == 2  # the login, and the step-up's


def test_an_access_key_server_works_the_same_way(
    env: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory, browser_env: BrowserEnvFactory
) -> None:
    """A bearer entry: the proxy sends the broker's access key. (The key is a token from a login, so the
    SDK server's JWT check accepts it.)"""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    configure(env, mcp.url)
    daemon = start_daemon(env)
    try:
        log_in(env, browser_env)
        import ncp_client

        key = ncp_client.get_token(NAME, socket_path=env.socket)
        auth = {"type": "bearer", "token": key, "allowInsecureLoopback": True}
        env.write_config({NAME: {"url": mcp.url, "auth": auth}})
        assert env.run("ncp-broker", "reload").returncode == 0
        mcp.reset_stats()
        with RawHost(env, NAME) as host:
            host.initialize()
            answer = host.request(1, "tools/call", {"name": "whoami", "arguments": {}})
    finally:
        daemon.stop()
    assert json.loads(answer["result"]["content"][0]["text"])["sub"] == "alice"
    assert mcp.stats()["unauthorized"] == 0

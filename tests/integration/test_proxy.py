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

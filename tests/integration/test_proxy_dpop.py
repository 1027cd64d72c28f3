"""``ncp-broker proxy`` with a DPoP-bound grant (E3, RFC 9449): every request the proxy sends carries a proof
the daemon made for exactly that request (method and URL, ``ath``), the resource server's nonce challenges
are answered once each, and the proxy never sees the key.

Real parts: oidc-provider (client credentials, DPoP with nonces), the test MCP server checking a proof on
every request and demanding its own nonce, the daemon, and the mcp SDK's stdio client as the host.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest

from tests.conftest import Env, start_daemon
from tests.integration.test_dpop import NAME, cc_config, cc_servers
from tests.servers.proxy_hosts import sdk_host

if TYPE_CHECKING:
    from tests.servers.fixtures import McpServerFactory, OidcServerFactory

pytestmark = pytest.mark.integration


def text_of(result: Any) -> str:
    assert not result.is_error, result.content
    return str(result.content[0].text)


def test_a_host_through_the_proxy_sends_a_fresh_proof_with_every_request(
    env: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory
) -> None:
    """The SDK host lists and calls tools through the proxy at a server that accepts only DPoP tokens
    with a valid proof per request and demands nonces (rotated mid-session): every request is accepted
    once its nonce is in the proof, no proof is replayed, and the host never notices."""
    oidc, mcp = cc_servers(oidc_server, mcp_server, ttl=3600, mode="nonce")
    cc_config(env, mcp)
    env.vars["BROWSER"] = "false"
    daemon = start_daemon(env)
    try:

        async def host() -> tuple[list[str], str, str]:
            async with sdk_host(env, NAME) as client:
                tools = [t.name for t in (await client.list_tools()).tools]
                who = json.loads(text_of(await client.call_tool("whoami", {})))
                mcp.rotate_dpop_nonce()
                echoed = text_of(await client.call_tool("echo", {"text": "after a new nonce"}))
                return tools, who["sub"], echoed

        tools, sub, echoed = anyio.run(host)
    finally:
        daemon.stop()
    assert "echo" in tools
    assert sub == "ci-bot"
    assert echoed == "after a new nonce"
    checks = mcp.stats()["dpop"]
    assert checks["accepted"] >= 4  # initialize, initialized, tools/list, two calls (and the GET stream)
    assert checks.get("nonce_challenges", 0) >= 2  # the first request, and after the rotation
    assert checks.get("replays", 0) == 0
    assert not [k for k in checks if k.startswith("refused:") and "nonce" not in k], checks
    assert oidc.stats()["token_success"]["client_credentials"] >= 1


def test_ncp_token_prints_a_proof_for_the_request_it_names(
    env: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory
) -> None:
    """A header-helper host (or a script) asks ``ncp-token --headers-json --method M --url U``: a DPoP-bound
    token comes with a proof for exactly that request, and the server accepts it (after its nonce, given
    back with --dpop-nonce). Without --method/--url, ncp-token names the flags instead of printing a token
    nobody can use."""
    _, mcp = cc_servers(oidc_server, mcp_server, ttl=3600, mode="nonce")
    cc_config(env, mcp)
    env.vars["BROWSER"] = "false"
    daemon = start_daemon(env)
    try:
        plain = env.run("ncp-token", NAME)
        assert plain.returncode == 2
        assert "--method METHOD --url URL" in plain.stderr

        def headers(*extra: str) -> dict[str, str]:
            done = env.run("ncp-token", NAME, "--headers-json", "--method", "POST", "--url", mcp.url, *extra)
            assert done.returncode == 0, done.stderr
            parsed: dict[str, str] = json.loads(done.stdout)
            return parsed

        hello = {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        }
        body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}
        accept = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
        with httpx.Client(timeout=10.0, trust_env=False) as http:
            first = headers()
            assert first["Authorization"].startswith("DPoP ")
            answer = http.post(mcp.url, json=body, headers={**accept, **first})
            assert answer.status_code == 401  # the server demands its nonce first
            nonce = answer.headers["dpop-nonce"]
            again = headers("--dpop-nonce", nonce)
            assert again["DPoP"] != first["DPoP"]  # a fresh proof, never a replay
            answer = http.post(mcp.url, json=body, headers={**accept, **again})
            assert answer.status_code == 200, answer.text
    finally:
        daemon.stop()
    assert mcp.stats()["dpop"].get("replays", 0) == 0

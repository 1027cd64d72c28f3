"""Every host shares one grant (issue 13, item 5): N hosts through N proxies, 3-second tokens, strict
rotation, many expiries.

The authorization server's counters decide, as in test_refresh_real.py: no replay, no revoked grant, one
login, and no more refreshes than the schedule allows (one per refresh point, whatever the number of
proxies). The hosts (the mcp SDK's stdio client) must see every call answered.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.conftest import Env, start_daemon
from tests.integration.test_proxy import NAME, configure, log_in, text_of
from tests.integration.test_refresh_real import TTL, check_one_chain
from tests.servers.proxy_hosts import sdk_host

if TYPE_CHECKING:
    from tests.servers.fixtures import BrowserEnvFactory, McpServerFactory, OidcServerFactory

pytestmark = pytest.mark.integration

HOSTS = 3
SECONDS = 15.0  # about seven expiries of a 3-second token


@pytest.mark.parametrize("mode", ["stateful", "json"])
def test_n_hosts_through_n_proxies_share_one_refresh_chain(
    env: Env,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
    mode: str,
) -> None:
    """Three hosts call tools for 15 s across ~7 expiries: every call answered, one chain at the server."""
    oidc = oidc_server(access_token_ttl=TTL)
    mcp = mcp_server(oidc, json_response=mode == "json")
    configure(env, mcp.url)
    daemon = start_daemon(env)
    try:
        logged_in_at = time.time()
        log_in(env, browser_env)
        calls: list[str] = []

        async def host(i: int, deadline: float) -> None:
            async with sdk_host(env, NAME) as client:
                n = 0
                while time.monotonic() < deadline:
                    n += 1
                    calls.append(text_of(await client.call_tool("echo", {"text": f"{i}.{n}"})))
                    await anyio.sleep(0.1)

        async def hosts() -> None:
            deadline = time.monotonic() + SECONDS
            async with anyio.create_task_group() as tg:
                for i in range(HOSTS):
                    tg.start_soon(host, i, deadline)

        anyio.run(hosts)
        stats = oidc.stats()
        read_at = time.time()
    finally:
        daemon.stop()
    assert len(calls) > HOSTS * 20, len(calls)
    refreshes = check_one_chain(stats, logged_in_at=logged_in_at, read_at=read_at)
    assert refreshes >= int(SECONDS / TTL) - 1, refreshes  # the grant lived across the expiries
    assert mcp.stats()["distinct_tokens"] >= refreshes  # the proxies used each new token

"""`ncp-broker import-ncp`: a grant another program (here: "NCP") obtained from the real oidc-provider,
stored in NCP's file format, taken over by the running daemon, which refreshes it once at the issuer that
discovery finds (brokerd/ncp_import.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from brokerd.callback import open_callback_listener
from brokerd.ncp_import import ncp_key
from brokerd.oauth_driver import make_http_client
from tests.harness import Env, oauth_entry, start_daemon, tool_names
from tests.integration.test_oauth_edges import _discover, _login, _register, _use_browser

if TYPE_CHECKING:
    from tests.servers.fixtures import BrowserEnvFactory, McpServerFactory, OidcServerFactory

pytestmark = pytest.mark.integration


async def test_import_takes_over_ncps_grant_and_lists_what_it_cannot_match(
    env: Env,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`import-ncp` takes over NCP's grant with one proving refresh (no new registration, no replay) and
    names every file it skipped."""
    oidc = oidc_server()
    mcp = mcp_server(oidc)
    _use_browser(monkeypatch, browser_env())
    # "NCP" logs in with its own dynamically registered client, as the MCP TypeScript SDK would.
    async with make_http_client() as http, open_callback_listener() as listener:
        discovery = await _discover(http, mcp.url)
        registration = await _register(http, discovery, listener.redirect_uri)
        tokens = await _login(http, discovery, registration, listener)
    assert tokens.refresh_token is not None
    auth_dir = env.root / "ncp-auth"
    auth_dir.mkdir(mode=0o700)
    ncp_file = {
        "clientInfo": {
            "client_id": registration.client_id,
            "client_secret": registration.client_secret.reveal() if registration.client_secret else None,
            "token_endpoint_auth_method": registration.token_endpoint_auth_method,
            "redirect_uris": list(registration.redirect_uris),
            "grant_types": list(registration.grant_types),
        },
        "tokens": {
            "access_token": tokens.access_token.reveal(),
            "token_type": "Bearer",
            "expires_in": None if tokens.expires_at is None else tokens.expires_at - tokens.obtained_at,
            "refresh_token": tokens.refresh_token.reveal(),
            "scope": " ".join(tokens.scopes),
        },
    }
    _write(auth_dir / f"{ncp_key(mcp.url)}.json", json.dumps(ncp_file, indent=2))
    _write(auth_dir / f"{ncp_key('https://elsewhere.example/mcp')}.json", json.dumps(ncp_file))
    _write(auth_dir / "0123456789abcdef.json", '{"tokens": {"access_tok')  # truncated
    env.write_config({"srv": oauth_entry(mcp.url)})
    refreshes_before = oidc.stats()["token_requests"].get("refresh_token", 0)

    assert env.run("ncp-broker", "import-ncp", str(auth_dir)).returncode == 3  # needs the daemon
    daemon = start_daemon(env)
    try:
        done = env.run("ncp-broker", "import-ncp", str(auth_dir), timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr + daemon.log_text()
        assert f"srv: imported: refreshed at {oidc.issuer}" in done.stdout
        assert done.stdout.count("skipped ") == 2  # the unmatched file and the truncated one, by name
        assert "unmatched" in done.stdout
        assert "0123456789abcdef.json" in done.stdout, done.stdout
        assert "NCP must not use these grants" in done.stdout
        token = env.run("ncp-token", "srv").stdout.strip()
        assert token
        assert token != tokens.access_token.reveal()  # the proving refresh rotated the grant
        assert "echo" in tool_names(mcp.url, token)
        stats = oidc.stats()
        assert stats["token_requests"]["refresh_token"] == refreshes_before + 1
        assert stats["replay_detected"] == 0
        assert stats["registrations"] == 1  # NCP's client was taken over, not registered again
        again = env.run("ncp-broker", "import-ncp", str(auth_dir))
        assert "srv: kept: the broker holds a grant already" in again.stdout
        for secret in (tokens.access_token.reveal(), tokens.refresh_token.reveal(), token):
            assert secret not in done.stdout + done.stderr + again.stdout + daemon.log_text()
    finally:
        daemon.stop()


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)

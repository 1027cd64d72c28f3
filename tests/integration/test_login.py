"""OAuth through the real daemon: `ncp-broker login`, then `ncp-token`, against oidc-provider and the mcp SDK.

The browser is the fixtures' HTTP driver set as $BROWSER for the `ncp-broker login` process (A7: the
browser is opened with `webbrowser`, never a shell).
"""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from tests.conftest import Daemon, Env, start_daemon
from tests.servers.browser_http import run_login
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


def configure(env: Env, mcp: McpServer, name: str = "srv") -> None:
    env.write_config(
        {name: {"url": mcp.url, "auth": {"type": "oauth", "oauth21": {}, "allowInsecureLoopback": True}}}
    )


def serve(env: Env, mcp: McpServer) -> None:
    """Configure the MCP server and make the running daemon load it."""
    configure(env, mcp)
    reload = env.run("ncp-broker", "reload")
    assert reload.returncode == 0, reload.stderr


def log_in(env: Env, browser_env: BrowserEnvFactory) -> None:
    """`ncp-broker login srv` with the HTTP browser driver approving."""
    login = env.run("ncp-broker", "login", "srv", extra_env=dict(browser_env()), timeout=120)
    assert login.returncode == 0, login.stderr


def spawn(
    env: Env,
    module: str,
    *args: str,
    extra_env: dict[str, str] | None = None,
    stdin: int = subprocess.DEVNULL,
) -> subprocess.Popen[str]:
    """Start `python -m module args…` in the test's environment, capturing its output as text."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env={**env.vars, **(extra_env or {})},
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def tools_list(url: str, token: str) -> list[str]:
    with httpx.Client(timeout=10) as http:
        session = McpSession(http, url, token)
        session.initialize()
        return [tool["name"] for tool in session.request("tools/list")["tools"]]


@pytest.fixture
def servers(oidc_server: OidcServerFactory, mcp_server: McpServerFactory) -> tuple[OidcServer, McpServer]:
    oidc = oidc_server(access_token_ttl=3)
    return oidc, mcp_server(oidc)


def test_login_then_token_then_refresh_then_restart(
    env: Env, servers: tuple[OidcServer, McpServer], browser_env: BrowserEnvFactory
) -> None:
    """From nothing but the URL: discovery, DCR, PKCE login, a token the MCP server accepts (A1-A7, R3, T1);
    a 3-second token is refreshed on demand with rotation and no replay (T3, T4); a restarted daemon
    refreshes without a login (rule 5)."""
    oidc, mcp = servers
    configure(env, mcp)
    daemon = start_daemon(env)
    try:
        before = env.run("ncp-token", "srv")
        assert before.returncode == 5
        assert "ncp-broker login srv" in before.stderr
        login = env.run("ncp-broker", "login", "srv", extra_env=dict(browser_env()), timeout=120)
        assert login.returncode == 0, login.stderr + daemon.log_text()
        assert "Authorized srv" in login.stdout
        token = env.run("ncp-token", "srv").stdout.strip()
        assert "echo" in tools_list(mcp.url, token)
        time.sleep(2.5)  # past the point where min_ttl (capped at 1 s) + 1 s skew no longer fits
        second = env.run("ncp-token", "srv").stdout.strip()
        assert second != token
        assert "echo" in tools_list(mcp.url, second)
        daemon.stop()
        time.sleep(2.5)
        daemon = start_daemon(env)
        third = env.run("ncp-token", "srv")
        assert third.returncode == 0, third.stderr + daemon.log_text()
        assert third.stdout.strip() not in (token, second)
        assert "echo" in tools_list(mcp.url, third.stdout.strip())
        stats = oidc.stats()
        assert stats["replay_detected"] == 0
        assert stats["token_requests"]["authorization_code"] == 1
        assert (
            stats["token_requests"]["refresh_token"] >= 2
        )  # on demand and proactive; exact counts: test_refresh.py
        status = json.loads(env.run("ncp-broker", "status", "--json").stdout)
        assert status["servers"][0]["state"] == "valid"
        human = env.run("ncp-broker", "status").stdout
        for line in ("expires", "last refresh", "next refresh"):  # rule 7: what a person needs to see
            assert f"\n  {line} " in human, human
        text = daemon.log_text() + json.dumps(status)
        for secret in (token, second, third.stdout.strip()):
            assert secret not in text
    finally:
        daemon.stop()


def test_denied_consent_is_reported_plainly(
    env: Env, servers: tuple[OidcServer, McpServer], browser_env: BrowserEnvFactory, daemon: Daemon
) -> None:
    """A refused consent ends the login with access_denied in plain words and no token (A4/A5 path)."""
    _, mcp = servers
    serve(env, mcp)
    login = env.run("ncp-broker", "login", "srv", extra_env=dict(browser_env(action="deny")), timeout=120)
    assert login.returncode == 5
    assert "access_denied" in login.stderr or "denied" in login.stderr
    assert env.run("ncp-token", "srv").returncode == 5


def test_concurrent_logins_share_one_authorization(
    env: Env, servers: tuple[OidcServer, McpServer], browser_env: BrowserEnvFactory, daemon: Daemon
) -> None:
    """Two `login` commands at once produce one authorization at the server; both succeed."""
    oidc, mcp = servers
    serve(env, mcp)
    browser = dict(browser_env())
    procs = [spawn(env, "brokerd", "login", "srv", extra_env=browser) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert any("already in progress" in out for out, _ in outputs)
    assert oidc.stats()["token_requests"]["authorization_code"] == 1


def test_sigterm_during_login_stops_cleanly(
    env: Env, servers: tuple[OidcServer, McpServer], daemon: Daemon
) -> None:
    """A daemon stopped while a login waits for the browser exits 0 and frees the callback port."""
    _, mcp = servers
    serve(env, mcp)
    proc = spawn(env, "brokerd", "login", "srv", "--no-browser", stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while "login_pending" not in env.run("ncp-broker", "status", "--json").stdout:
            assert time.monotonic() < deadline, daemon.log_text()
            time.sleep(0.1)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(10) == 0, daemon.log_text()
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_logout_revokes_at_the_server_and_forgets_locally(
    env: Env, servers: tuple[OidcServer, McpServer], browser_env: BrowserEnvFactory, daemon: Daemon
) -> None:
    """`logout` revokes the refresh token (RFC 7009, T6): the server ends the grant; local tokens are gone."""
    oidc, mcp = servers
    serve(env, mcp)
    log_in(env, browser_env)
    stored = next(env.data.glob("*.json")).read_text()
    refresh_token = json.loads(stored)["tokens"]["refresh_token"]
    out = env.run("ncp-broker", "logout", "srv")
    assert out.returncode == 0, out.stderr
    assert "refresh_token: revoked" in out.stdout
    assert refresh_token not in out.stdout + daemon.log_text()
    assert env.run("ncp-token", "srv").returncode == 5
    assert json.loads(next(env.data.glob("*.json")).read_text()).get("tokens") is None
    # the server agrees: the old refresh token is dead
    answer = httpx.post(
        oidc.metadata()["token_endpoint"],
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": json.loads(stored)["tokens"]["client_id"],
        },
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    assert oidc.stats()["grants_revoked"] >= 1  # revoked by the logout, not refused for another reason


def test_logout_with_unreachable_server_still_forgets(
    env: Env, servers: tuple[OidcServer, McpServer], browser_env: BrowserEnvFactory, daemon: Daemon
) -> None:
    """With the revocation endpoint unreachable, logout says so and the local tokens are deleted anyway."""
    oidc, mcp = servers
    serve(env, mcp)
    log_in(env, browser_env)
    oidc.stop()
    out = env.run("ncp-broker", "logout", "srv")
    assert out.returncode == 0, out.stderr
    assert "unreachable" in out.stdout
    assert env.run("ncp-token", "srv").returncode == 5


def test_device_code_login(
    env: Env,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
    daemon: Daemon,
) -> None:
    """`login --device` (RFC 8628, A8): the code is shown, approved on another device, and polled."""
    oidc = oidc_server(device_poll_interval=1)
    mcp = mcp_server(oidc)
    serve(env, mcp)
    proc = spawn(env, "brokerd", "login", "srv", "--device")
    try:
        assert proc.stdout is not None
        url = ""
        deadline = time.monotonic() + 30
        while not url.startswith("http"):
            assert time.monotonic() < deadline
            url = proc.stdout.readline().strip()
        browser = browser_env()
        subprocess.run([browser.command, url], env={**env.vars, **browser}, check=True, timeout=30)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err + daemon.log_text()
    assert "Authorized srv" in out
    token = env.run("ncp-token", "srv").stdout.strip()
    assert "echo" in tools_list(mcp.url, token)
    assert oidc.stats()["token_requests"]["device_code"] >= 1


def test_first_use_from_terminals_logs_in_once(
    env: Env, servers: tuple[OidcServer, McpServer], browser_env: BrowserEnvFactory, daemon: Daemon
) -> None:
    """Two `ncp-token` at once on terminals with no grant: one login for both; without a terminal, exit 5."""
    oidc, mcp = servers
    serve(env, mcp)
    assert env.run("ncp-token", "srv").returncode == 5  # stdin is not a terminal: no login attempt
    browser = dict(browser_env())
    terminals = [pty.openpty() for _ in range(2)]
    procs = [spawn(env, "ncp_client._cli", "srv", extra_env=browser, stdin=slave) for _, slave in terminals]
    for _, slave in terminals:
        os.close(slave)
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for master, _ in terminals:
            os.close(master)
    assert [p.returncode for p in procs] == [0, 0], outputs
    tokens = {out.strip() for out, _ in outputs}
    assert len(tokens) == 1
    assert "echo" in tools_list(mcp.url, tokens.pop())
    assert oidc.stats()["token_requests"]["authorization_code"] == 1


def pending_login_url(env: Env) -> str:
    """The authorization URL of the pending login, from `status --json`."""
    deadline = time.monotonic() + 30
    while True:
        server = json.loads(env.run("ncp-broker", "status", "--json").stdout)["servers"][0]
        if server.get("login_url"):
            return str(server["login_url"])
        assert time.monotonic() < deadline, server
        time.sleep(0.1)


def paste_login(env: Env, edit: Callable[[str], str] = lambda url: url) -> subprocess.CompletedProcess[str]:
    """`ncp-broker login srv --no-browser`: a person approves in some browser and pastes the address the
    browser was sent to (changed by ``edit``), which is never delivered to the daemon's listener."""
    proc = spawn(env, "brokerd", "login", "srv", "--no-browser", stdin=subprocess.PIPE)
    try:
        result = run_login(pending_login_url(env), deliver=False)
        assert result.redirect_url is not None, result.reason
        out, err = proc.communicate(edit(result.redirect_url) + "\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_pasted_redirect_url_completes_the_login(
    env: Env, servers: tuple[OidcServer, McpServer], daemon: Daemon
) -> None:
    """Headless login: the whole redirect URL pasted back is validated (state, iss) and redeemed (A4, A5)."""
    oidc, mcp = servers
    serve(env, mcp)
    done = paste_login(env)
    assert done.returncode == 0, done.stderr + daemon.log_text()
    assert "Authorized srv" in done.stdout
    assert "echo" in tools_list(mcp.url, env.run("ncp-token", "srv").stdout.strip())
    assert oidc.stats()["token_requests"]["authorization_code"] == 1


def _with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != name] + [(name, value)]
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.mark.parametrize(
    "forgery",
    [
        ("state", "forged-state", "state"),  # A4: a response to another request (CSRF)
        ("iss", "http://127.0.0.1:1", "issuer"),  # A5, RFC 9207: a response from another server (mix-up)
    ],
)
def test_pasted_response_with_wrong_state_or_issuer_is_refused(
    env: Env, servers: tuple[OidcServer, McpServer], daemon: Daemon, forgery: tuple[str, str, str]
) -> None:
    """A pasted response with a forged `state` or `iss` is refused before its code is sent anywhere."""
    name, value, said = forgery
    oidc, mcp = servers
    serve(env, mcp)
    refused = paste_login(env, lambda url: _with_param(url, name, value))
    assert refused.returncode == 5, refused.stdout
    assert said in refused.stderr, refused.stderr
    assert "authorization_code" not in oidc.stats()["token_requests"]  # the code was never redeemed
    assert env.run("ncp-token", "srv").returncode == 5


def test_busy_callback_port_names_the_port_and_the_config_key(
    env: Env, servers: tuple[OidcServer, McpServer], browser_env: BrowserEnvFactory, daemon: Daemon
) -> None:
    """A configured callbackPort that another program holds: the login fails at once, naming the port and
    `auth.oauth21.callbackPort`; nothing is authorized; once the port is free the login works."""
    oidc, mcp = servers
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        auth = {"type": "oauth", "oauth21": {"callbackPort": port}, "allowInsecureLoopback": True}
        env.write_config({"srv": {"url": mcp.url, "auth": auth}})
        assert env.run("ncp-broker", "reload").returncode == 0
        busy = env.run("ncp-broker", "login", "srv", extra_env=dict(browser_env()), timeout=60)
        assert busy.returncode != 0
        assert str(port) in busy.stderr
        assert "auth.oauth21.callbackPort" in busy.stderr
    assert oidc.stats()["authorizations"] == 0
    log_in(env, browser_env)


def test_invalidate_forgets_without_revoking_and_client_makes_the_next_login_register(
    env: Env, servers: tuple[OidcServer, McpServer], browser_env: BrowserEnvFactory, daemon: Daemon
) -> None:
    """`invalidate --what tokens|client|all` (NCP's invalidateCredentials): local only, unlike logout."""
    oidc, mcp = servers
    serve(env, mcp)
    log_in(env, browser_env)
    done = env.run("ncp-broker", "invalidate", "srv", "--what", "tokens")
    assert done.returncode == 0, done.stderr
    assert "forgot tokens" in done.stdout
    assert env.run("ncp-token", "srv").returncode == 5
    assert oidc.stats()["revocations"] == 0  # nothing was revoked
    assert env.run("ncp-broker", "invalidate", "srv", "--what", "client").returncode == 0
    log_in(env, browser_env)
    assert oidc.stats()["registrations"] == 2  # the forgotten client was registered anew
    daemon.stop()
    offline = env.run("ncp-broker", "invalidate", "srv", "--what", "all")  # no daemon: on the store itself
    assert offline.returncode == 0, offline.stderr
    assert "forgot tokens and client" in offline.stdout
    stored = json.loads(next(env.data.glob("*.json")).read_text())
    assert stored["tokens"] is None
    assert stored["registrations"] == {}
    refused = env.run("ncp-broker", "invalidate", "srv")
    assert refused.returncode == 2
    assert "--what" in refused.stderr

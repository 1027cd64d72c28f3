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
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from ncp_client import ServerError
from ncp_client._protocol import call
from tests.harness import Env, Stack, StackFactory, oauth_entry, tool_names, wait_until
from tests.servers.browser_http import run_login

pytestmark = pytest.mark.integration

TTL = 3  # access-token lifetime, seconds: the first test sees a refresh on demand and one after a restart


def test_login_then_token_then_refresh_then_restart(env: Env, stack: StackFactory) -> None:
    """From nothing but the URL: discovery, DCR, PKCE login, a token the MCP server accepts (A1-A7, R3, T1);
    a 3-second token is refreshed on demand with rotation and no replay (T3, T4); a restarted daemon
    refreshes without a login (rule 5)."""
    s = stack(ttl=TTL, login=False)
    oidc, mcp = s.oidc, s.mcp
    before = env.run("ncp-token", "srv")
    assert before.returncode == 5
    assert "ncp-broker login srv" in before.stderr
    login = s.log_in()
    assert "Authorized srv" in login.stdout
    token = env.run("ncp-token", "srv").stdout.strip()
    assert "echo" in tool_names(mcp.url, token)
    time.sleep(2.5)  # past the point where min_ttl (capped at 1 s) + 1 s skew no longer fits
    second = env.run("ncp-token", "srv").stdout.strip()
    assert second != token
    assert "echo" in tool_names(mcp.url, second)
    s.stop()
    time.sleep(2.5)
    daemon = s.start()
    third = env.run("ncp-token", "srv")
    assert third.returncode == 0, third.stderr + daemon.log_text()
    assert third.stdout.strip() not in (token, second)
    assert "echo" in tool_names(mcp.url, third.stdout.strip())
    stats = oidc.stats()
    assert stats["replay_detected"] == 0
    assert stats["token_requests"]["authorization_code"] == 1
    # on demand and proactive; exact counts: test_refresh_real.py
    assert stats["token_requests"]["refresh_token"] >= 2
    status = env.status()
    assert status["servers"][0]["state"] == "valid"
    human = env.run("ncp-broker", "status").stdout
    for line in ("expires", "last refresh", "next refresh"):  # rule 7: what a person needs to see
        assert f"\n  {line} " in human, human
    text = daemon.log_text() + json.dumps(status)
    for secret in (token, second, third.stdout.strip()):
        assert secret not in text


def test_denied_consent_is_reported_plainly(env: Env, stack: StackFactory) -> None:
    """A refused consent ends the login with access_denied in plain words and no token (A4/A5 path)."""
    s = stack(ttl=TTL, login=False)
    login = env.run("ncp-broker", "login", "srv", extra_env=dict(s.browser_env(action="deny")), timeout=120)
    assert login.returncode == 5
    assert "access_denied" in login.stderr or "denied" in login.stderr
    assert env.run("ncp-token", "srv").returncode == 5


def test_concurrent_logins_share_one_authorization(env: Env, stack: StackFactory) -> None:
    """Two `login` commands at once produce one authorization at the server; both succeed."""
    s = stack(ttl=TTL, login=False)
    browser = dict(s.browser_env())
    procs = [env.spawn("ncp-broker", "login", "srv", extra_env=browser) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert any("already in progress" in out for out, _ in outputs)
    assert s.oidc.stats()["token_requests"]["authorization_code"] == 1


def test_sigterm_during_login_stops_cleanly(env: Env, stack: StackFactory) -> None:
    """A daemon stopped while a login waits for the browser exits 0 and frees the callback port."""
    daemon = stack(ttl=TTL, login=False).daemon
    proc = env.spawn("ncp-broker", "login", "srv", "--no-browser", stdin=subprocess.PIPE)
    try:
        wait_until(
            lambda: "login_pending" in env.run("ncp-broker", "status", "--json").stdout,
            30,
            interval=0.1,
            message=lambda: f"the login to be pending; daemon log:\n{daemon.log_text()}",
        )
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(10) == 0, daemon.log_text()
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_logout_revokes_at_the_server_and_forgets_locally(env: Env, stack: StackFactory) -> None:
    """`logout` revokes the refresh token (RFC 7009, T6): the server ends the grant; local tokens are gone."""
    s = stack(ttl=TTL)
    oidc, daemon = s.oidc, s.daemon
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


def test_logout_with_unreachable_server_still_forgets(env: Env, stack: StackFactory) -> None:
    """With the revocation endpoint unreachable, logout says so and the local tokens are deleted anyway."""
    stack(ttl=TTL).oidc.stop()
    out = env.run("ncp-broker", "logout", "srv")
    assert out.returncode == 0, out.stderr
    assert "unreachable" in out.stdout
    assert env.run("ncp-token", "srv").returncode == 5


def test_device_code_login(env: Env, stack: StackFactory) -> None:
    """`login --device` (RFC 8628, A8): the code is shown, approved on another device, and polled."""
    s = stack(login=False, oidc_options={"device_poll_interval": 1})
    # The command's output goes to a file, so that waiting for its URL line is bounded (a pipe's readline
    # would block for as long as the command prints nothing); unbuffered, as on a terminal.
    printed = env.root / "login-device.out"
    with printed.open("w") as out:
        unbuffered = {"PYTHONUNBUFFERED": "1"}
        proc = env.spawn("ncp-broker", "login", "srv", "--device", extra_env=unbuffered, stdout=out)

    def shown_url() -> str | None:
        lines = (line.strip() for line in printed.read_text().splitlines())
        return next((line for line in lines if line.startswith("http")), None)

    try:
        url = wait_until(
            shown_url,
            30,
            message=lambda: f"the verification URL in the output of login --device: {printed.read_text()!r}",
        )
        browser = s.browser_env()
        subprocess.run([browser.command, url], env={**env.vars, **browser}, check=True, timeout=30)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err + s.daemon.log_text()
    assert "Authorized srv" in printed.read_text()
    token = env.run("ncp-token", "srv").stdout.strip()
    assert "echo" in tool_names(s.mcp.url, token)
    assert s.oidc.stats()["token_requests"]["device_code"] >= 1


def test_first_use_from_terminals_logs_in_once(env: Env, stack: StackFactory) -> None:
    """Two `ncp-token` at once on terminals with no grant: one login for both; without a terminal, exit 5."""
    s = stack(ttl=TTL, login=False)
    oidc, mcp = s.oidc, s.mcp
    assert env.run("ncp-token", "srv").returncode == 5  # stdin is not a terminal: no login attempt
    browser = dict(s.browser_env())
    terminals = [pty.openpty() for _ in range(2)]
    procs = [env.spawn("ncp-token", "srv", extra_env=browser, stdin=slave) for _, slave in terminals]
    for _, slave in terminals:
        os.close(slave)
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
        for master, _ in terminals:
            os.close(master)
    assert [p.returncode for p in procs] == [0, 0], outputs
    tokens = {out.strip() for out, _ in outputs}
    assert len(tokens) == 1
    assert "echo" in tool_names(mcp.url, tokens.pop())
    assert oidc.stats()["token_requests"]["authorization_code"] == 1


def pending_login_url(s: Stack) -> str:
    """The authorization URL of the pending login, from the server's status."""
    entry = s.wait_for_status("a pending login's URL", lambda entry: bool(entry.get("login_url")), 30)
    return str(entry["login_url"])


def paste_login(s: Stack, edit: Callable[[str], str] = lambda url: url) -> subprocess.CompletedProcess[str]:
    """`ncp-broker login srv --no-browser`: a person approves in some browser and pastes the address the
    browser was sent to (changed by ``edit``), which is never delivered to the daemon's listener."""
    proc = s.env.spawn("ncp-broker", "login", "srv", "--no-browser", stdin=subprocess.PIPE)
    try:
        result = run_login(pending_login_url(s), deliver=False)
        assert result.redirect_url is not None, result.reason
        out, err = proc.communicate(edit(result.redirect_url) + "\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_pasted_redirect_url_completes_the_login(env: Env, stack: StackFactory) -> None:
    """Headless login: the whole redirect URL pasted back is validated (state, iss) and redeemed (A4, A5)."""
    s = stack(ttl=TTL, login=False)
    done = paste_login(s)
    assert done.returncode == 0, done.stderr + s.daemon.log_text()
    assert "Authorized srv" in done.stdout
    assert "echo" in tool_names(s.mcp.url, env.run("ncp-token", "srv").stdout.strip())
    assert s.oidc.stats()["token_requests"]["authorization_code"] == 1


def test_a_second_paste_while_the_first_is_redeemed_is_refused(env: Env, stack: StackFactory) -> None:
    """One answer per login: a code pasted again while the first paste's exchange is in flight is refused
    at once (the daemon never waits on it), the first completes the login, and the code is redeemed once."""
    s = stack(ttl=60, login=False)  # outlives the held answer
    proc = env.spawn("ncp-broker", "login", "srv", "--no-browser", stdin=subprocess.PIPE)
    try:
        result = run_login(pending_login_url(s), deliver=False)
        assert result.redirect_url is not None, result.reason
        s.oidc.set_token_endpoint("late", seconds=3, grant_types=["authorization_code"], count=1)
        request = {"op": "login_complete", "server": "srv", "response": result.redirect_url}
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(call, request, timeout=60, socket_path=env.socket)
            wait_until(lambda: s.oidc.stats()["token_late"] == 1, 30, message=lambda: "the exchange held")
            with pytest.raises(ServerError) as again:
                call(request, timeout=10, socket_path=env.socket)
            assert again.value.code == "bad_request"
            assert "pasted for this login already" in again.value.message
            assert first.result()["token"]
    finally:
        proc.kill()
        proc.communicate()
    assert s.oidc.stats()["token_requests"]["authorization_code"] == 1
    token = env.run("ncp-token", "srv")
    assert token.returncode == 0, token.stderr + s.daemon.log_text()
    assert "echo" in tool_names(s.mcp.url, token.stdout.strip())


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
    env: Env, stack: StackFactory, forgery: tuple[str, str, str]
) -> None:
    """A pasted response with a forged `state` or `iss` is refused before its code is sent anywhere."""
    name, value, said = forgery
    s = stack(ttl=TTL, login=False)
    oidc = s.oidc
    refused = paste_login(s, lambda url: _with_param(url, name, value))
    assert refused.returncode == 5, refused.stdout
    assert said in refused.stderr, refused.stderr
    assert "authorization_code" not in oidc.stats()["token_requests"]  # the code was never redeemed
    assert env.run("ncp-token", "srv").returncode == 5


def test_busy_callback_port_names_the_port_and_the_config_key(env: Env, stack: StackFactory) -> None:
    """A configured callbackPort that another program holds: the login fails at once, naming the port and
    `auth.oauth21.callbackPort`; nothing is authorized; once the port is free the login works."""
    s = stack(ttl=TTL, login=False)
    oidc, mcp = s.oidc, s.mcp
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env.write_config({"srv": oauth_entry(mcp.url, callbackPort=port)})
        s.reload()
        busy = env.run("ncp-broker", "login", "srv", extra_env=dict(s.browser_env()), timeout=60)
        assert busy.returncode != 0
        assert str(port) in busy.stderr
        assert "auth.oauth21.callbackPort" in busy.stderr
    assert oidc.stats()["authorizations"] == 0
    s.log_in()


def test_invalidate_forgets_without_revoking_and_client_makes_the_next_login_register(
    env: Env, stack: StackFactory
) -> None:
    """`invalidate --what tokens|client|all` (NCP's invalidateCredentials): local only, unlike logout."""
    s = stack(ttl=TTL)
    oidc = s.oidc
    done = env.run("ncp-broker", "invalidate", "srv", "--what", "tokens")
    assert done.returncode == 0, done.stderr
    assert "forgot tokens" in done.stdout
    assert env.run("ncp-token", "srv").returncode == 5
    assert oidc.stats()["revocations"] == 0  # nothing was revoked
    assert env.run("ncp-broker", "invalidate", "srv", "--what", "client").returncode == 0
    s.log_in()
    assert oidc.stats()["registrations"] == 2  # the forgotten client was registered anew
    s.stop()
    offline = env.run("ncp-broker", "invalidate", "srv", "--what", "all")  # no daemon: on the store itself
    assert offline.returncode == 0, offline.stderr
    assert "forgot tokens and client" in offline.stdout
    stored = json.loads(next(env.data.glob("*.json")).read_text())
    assert stored["tokens"] is None
    assert stored["registrations"] == {}
    refused = env.run("ncp-broker", "invalidate", "srv")
    assert refused.returncode == 2
    assert "--what" in refused.stderr

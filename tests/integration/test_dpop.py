"""DPoP (E3, RFC 9449) through the real daemon: oidc-provider binds the tokens to the daemon's key (and
demands nonces), the test MCP server checks a proof on every request (and demands its own nonces), and
``BrokerAuth`` gets each request's proof from the daemon. The key never leaves the daemon: it is in the
store (a 0600 document or the keyring) and in no log, answer, output or other file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest

import ncp_client
from brokerd.store import server_key
from tests import secret_scan
from tests.conftest import Daemon, Env, start_daemon
from tests.integration.test_keyring_daemon import REPO, isolate_keyring
from tests.keyring_backend import BACKEND, FILE_VARIABLE, read_entries
from tests.servers.dpop_check import thumbprint
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

NAME = "srv"
SECRET = "dpop-ci-s3cret-never-logged"
LOGIN_TIMEOUT = 120.0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cc_servers(
    oidc_server: OidcServerFactory, mcp_server: McpServerFactory, *, ttl: int, mode: str
) -> tuple[OidcServer, McpServer]:
    client = {
        "client_id": "ci-bot",
        "client_secret": SECRET,
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    oidc = oidc_server(
        clients=[client], access_token_ttl=ttl, extra={"client_credentials": True, "dpop": "nonce"}
    )
    return oidc, mcp_server(oidc, dpop=mode)


def cc_config(env: Env, mcp: McpServer, **top: Any) -> None:
    oauth21 = {"grant": "client_credentials", "clientId": "ci-bot", "clientSecret": SECRET}
    env.write_config(
        {
            NAME: {
                "url": mcp.url,
                "auth": {"type": "oauth", "allowInsecureLoopback": True, "oauth21": oauth21},
            }
        },
        **top,
    )


def started(env: Env) -> Daemon:
    daemon = start_daemon(env)
    assert daemon.proc.poll() is None, daemon.log_text()
    return daemon


def session(mcp: McpServer, client: httpx.Client) -> McpSession:
    """An MCP session whose every request carries the daemon's token and a fresh proof (BrokerAuth)."""
    s = McpSession(client, mcp.url, None)
    s.initialize()
    return s


def stored_dpop_key(env: Env, mcp: McpServer) -> str:
    """The grant's DPoP key (PEM) from the file store's document: where it belongs."""
    pem = json.loads((env.data / f"{server_key(mcp.url)}.json").read_text())["dpop_key"]
    assert isinstance(pem, str)
    assert "PRIVATE KEY" in pem
    return pem


def assert_key_only_in_store(env: Env, pem: str, answers: list[str], *stores: Path) -> None:
    """No trace of the private key (its PEM lines, its ``d``) in any answer or any file a client or the
    proxy can read: the logs, the config, the runtime and state directories — everything but the store
    (the data directory, and the ``stores`` given: a keyring's file)."""
    material = [value for _, value in secret_scan.private_key_secrets(pem) if len(value) >= 8]
    assert len(material) >= 3
    places = {f"answer {i}": text for i, text in enumerate(answers)}
    for path in env.root.rglob("*"):
        if path.is_file() and not any(store in path.parents for store in (env.data, *stores)):
            places[str(path)] = path.read_text(errors="replace")
    leaks = [where for where, text in places.items() if any(m in text for m in material)]
    assert leaks == []


def test_dpop_bound_client_credentials_with_nonces_through_brokerauth(
    env: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory
) -> None:
    """E3 end to end: oidc-provider demands a nonce and binds the token (cnf.jkt = the daemon's key); the MCP
    server demands its own nonce, checks a proof per request (ath, htm, htu, cnf.jkt, a fresh jti), and
    rotates the nonce mid-session; tokens are renewed across expiries, still bound to the same key."""
    oidc, mcp = cc_servers(oidc_server, mcp_server, ttl=4, mode="nonce")
    cc_config(env, mcp)
    env.vars["BROWSER"] = "false"
    daemon = started(env)
    answers: list[str] = []
    try:
        auth = ncp_client.BrokerAuth(NAME, socket_path=env.socket, login=False)
        with httpx.Client(timeout=10.0, trust_env=False, auth=auth) as client:
            s = session(mcp, client)
            assert s.call_tool("whoami")["structuredContent"]["sub"] == "ci-bot"
            mcp.rotate_dpop_nonce()
            assert s.call_tool("echo", {"text": "after a new nonce"})["structuredContent"]["result"]
            time.sleep(5)  # the 4 s token expires: renewed, with a proof, at the nonce-demanding AS
            assert s.call_tool("whoami")["structuredContent"]["sub"] == "ci-bot"
        checks = mcp.stats()["dpop"]
        assert checks["accepted"] >= 5
        assert checks.get("nonce_challenges", 0) >= 2  # the first request, and after the rotation
        assert checks.get("replays", 0) == 0
        assert not [k for k in checks if k.startswith("refused:") and "nonce" not in k]
        assert oidc.stats()["token_errors"].get("use_dpop_nonce", 0) >= 1
        assert oidc.stats()["token_success"]["client_credentials"] >= 2

        # What a client in another language sees: the token, and a proof bound to it and to the request.
        url = f"{mcp.url}?ignored=1"
        result = ncp_client.call(
            {"op": "get_token", "server": NAME, "method": "POST", "url": url}, socket_path=env.socket
        )
        answers.append(json.dumps(result))
        assert result["token_type"] == "DPoP"
        header = jwt.get_unverified_header(result["dpop"])
        claims = jwt.decode(result["dpop"], options={"verify_signature": False})
        assert header["typ"] == "dpop+jwt"
        assert "d" not in header["jwk"]
        assert (claims["htm"], claims["htu"]) == ("POST", mcp.url)
        assert claims["ath"] == b64url(hashlib.sha256(result["token"].encode()).digest())
        assert claims["nonce"].startswith("rs-nonce-")  # the latest nonce the MCP server demanded
        token_claims = jwt.decode(result["token"], options={"verify_signature": False})
        assert token_claims["cnf"]["jkt"] == thumbprint(header["jwk"])
        state = json.loads(env.run("ncp-broker", "status", "--json", NAME).stdout)["servers"][0]
        answers.append(json.dumps(state))
        assert state["dpop_bound"] is True

        with pytest.raises(ncp_client.ServerError, match="not at the server's origin"):
            ncp_client.call(
                {"op": "get_token", "server": NAME, "method": "GET", "url": "http://localhost:1/x"},
                socket_path=env.socket,
            )
    finally:
        daemon.stop()
    pem = stored_dpop_key(env, mcp)
    assert (env.data / f"{server_key(mcp.url)}.json").stat().st_mode & 0o077 == 0
    for kind, value in secret_scan.private_key_secrets(pem):
        secret_scan.record_secret(kind, value)  # and the session's scan searches every log for it
    assert_key_only_in_store(env, pem, answers)


def test_a_dpop_login_with_a_browser_survives_a_restart(
    env: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory, browser_env: BrowserEnvFactory
) -> None:
    """E3 with the authorization-code grant: the code exchange carries a proof, the (public client's)
    refresh token is bound to the key, and a restarted daemon loads the key from the store and refreshes."""
    oidc = oidc_server(access_token_ttl=3)
    mcp = mcp_server(oidc, dpop="required")
    env.write_config(
        {NAME: {"url": mcp.url, "auth": {"type": "oauth", "allowInsecureLoopback": True, "oauth21": {}}}}
    )
    daemon = started(env)
    try:
        login = env.run("ncp-broker", "login", NAME, extra_env=dict(browser_env()), timeout=LOGIN_TIMEOUT)
        assert login.returncode == 0, login.stderr
    finally:
        daemon.stop()
    env.vars["BROWSER"] = "false"
    daemon = started(env)
    try:
        time.sleep(3.5)  # expired: the first request refreshes with a proof made with the stored key
        auth = ncp_client.BrokerAuth(NAME, socket_path=env.socket, login=False)
        with httpx.Client(timeout=10.0, trust_env=False, auth=auth) as client:
            assert session(mcp, client).call_tool("whoami")["structuredContent"]["sub"] == "alice"
        assert oidc.stats()["token_success"]["refresh_token"] >= 1
        assert oidc.stats()["authorizations"] == 1
        assert mcp.stats()["dpop"]["accepted"] >= 3
    finally:
        daemon.stop()
    pem = stored_dpop_key(env, mcp)
    assert_key_only_in_store(env, pem, [])


def test_the_keyring_store_keeps_the_dpop_key_out_of_the_document(
    env: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory
) -> None:
    """With "store": "keyring" the DPoP key is a keyring entry like the refresh token: the document holds
    none of it, and a restarted daemon makes proofs with the key it reads back."""
    isolate_keyring(env)
    keyring_file = env.root / "keyring" / "keyring_pass.cfg"
    env.vars |= {
        "PYTHON_KEYRING_BACKEND": BACKEND,
        FILE_VARIABLE: str(keyring_file),
        "PYTHONPATH": ":".join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        "BROWSER": "false",
    }
    oidc, mcp = cc_servers(oidc_server, mcp_server, ttl=3600, mode="required")
    cc_config(env, mcp, store="keyring")
    for _ in range(2):  # the second daemon reads the key back from the keyring
        daemon = started(env)
        try:
            auth = ncp_client.BrokerAuth(NAME, socket_path=env.socket, login=False)
            with httpx.Client(timeout=10.0, trust_env=False, auth=auth) as client:
                assert session(mcp, client).call_tool("whoami")["structuredContent"]["sub"] == "ci-bot"
        finally:
            daemon.stop()
    assert oidc.stats()["token_success"]["client_credentials"] == 1  # the same grant, the same key
    document = json.loads((env.data / f"{server_key(mcp.url)}.json").read_text())
    assert document["dpop_key"] is None
    assert "dpop_key" in document["keyring_entries"]
    entries = read_entries(keyring_file)
    pem = next(v for (_, user), v in entries.items() if user.endswith(":dpop_key"))
    for kind, value in secret_scan.private_key_secrets(pem):
        secret_scan.record_secret(kind, value)
    assert_key_only_in_store(env, pem, [], keyring_file.parent)

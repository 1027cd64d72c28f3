"""Grants without a person through the real daemon and its socket, against the real oidc-provider (E1, E4).

Client credentials with a secret and with ``private_key_jwt`` renew across several expiries of 3-second
tokens with no browser anywhere (``BROWSER`` is ``false``); a workload token file is read again when it
changes, and a token the authorization server refused is never sent twice. Each kind of bad input — a key
file others can read, a missing or garbled key, a workload command that fails or prints nothing, an expired
workload JWT — gets a test and a message that names the fix, and sends nothing to the authorization server.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

import ncp_client
from brokerd import keys, oauth
from tests import secret_scan
from tests.conftest import Daemon, Env, start_daemon
from tests.integration.test_keyring_daemon import REPO, isolate_keyring
from tests.keyring_backend import BACKEND, FILE_VARIABLE, FileKeyring
from tests.servers.helpers import McpSession

if TYPE_CHECKING:
    from tests.servers.fixtures import McpServer, McpServerFactory, OidcServer, OidcServerFactory

pytestmark = pytest.mark.integration

NAME = "ci"
TTL = 3
SECRET = "ci-s3cret-never-logged"
WORKLOAD_ISSUER = "https://workload.ncp-test.invalid"


def entry(url: str, **oauth21: Any) -> dict[str, Any]:
    return {"url": url, "auth": {"type": "oauth", "allowInsecureLoopback": True, "oauth21": oauth21}}


def cc_client(client_id: str, **metadata: Any) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        **metadata,
    }


def key_client(key: keys.PrivateKey) -> dict[str, Any]:
    """The client ``ci-bot`` at the authorization server, authenticating with ``key`` (private_key_jwt)."""
    return cc_client(
        "ci-bot",
        token_endpoint_auth_method="private_key_jwt",
        token_endpoint_auth_signing_alg="ES256",
        jwks={"keys": [key.public_jwk]},
    )


def write_key(path: Path, key: keys.PrivateKey | None = None, mode: int = 0o600) -> keys.PrivateKey:
    """A client key in a PEM file of ``mode``; its material is a secret of the session's scan."""
    key = key or keys.new_dpop_key()  # any EC P-256 key
    pem = key.to_secret().reveal()
    path.write_text(pem)
    path.chmod(mode)
    for kind, value in secret_scan.private_key_secrets(pem):
        secret_scan.record_secret(kind, value)
    return key


@pytest.fixture
def broker(env: Env) -> Env:
    """The env, with no browser for any process: nothing here may need a person."""
    env.vars["BROWSER"] = "false"
    return env


def started(env: Env) -> Daemon:
    daemon = start_daemon(env)
    assert daemon.proc.poll() is None, daemon.log_text()
    return daemon


def token(env: Env, name: str = NAME) -> str:
    return ncp_client.get_token(name, socket_path=env.socket, timeout=10)


def whoami(mcp: McpServer, access_token: str | None, env: Env | None = None) -> dict[str, Any]:
    """The MCP server's ``whoami`` with ``access_token``, or (``env`` given) through BrokerAuth, which asks
    the daemon for each request's token as an MCP host would."""
    auth = ncp_client.BrokerAuth(NAME, socket_path=env.socket, login=False) if env is not None else None
    with httpx.Client(timeout=10.0, trust_env=False, auth=auth) as client:
        session = McpSession(client, mcp.url, access_token)
        session.initialize()
        result: dict[str, Any] = session.call_tool("whoami")["structuredContent"]
        return result


def refused_within(env: Env, seconds: float) -> ncp_client.NeedsLogin:
    """The first needs_login answer within ``seconds`` (asking every 0.25 s)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            token(env)
        except ncp_client.NeedsLogin as exc:
            return exc
        assert time.monotonic() < deadline, "never refused"
        time.sleep(0.25)


def status(env: Env, name: str = NAME) -> dict[str, Any]:
    done = env.run("ncp-broker", "status", "--json", name)
    server: dict[str, Any] = json.loads(done.stdout)["servers"][0]
    return server


def tokens_over(env: Env, seconds: float, mcp: McpServer) -> list[str]:
    """Ask for a token every 0.25 s for ``seconds``, and use the server through BrokerAuth meanwhile; the
    distinct tokens answered, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = token(env)
        if not seen or seen[-1] != value:
            seen.append(value)
            assert whoami(mcp, None, env)["sub"]
        time.sleep(0.25)
    return seen


# ---- client credentials (E1) -------------------------------------------------------------------------


def test_client_credentials_with_a_secret_renew_across_expiries_without_a_person(
    broker: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory
) -> None:
    """E1: the first request gets a token by itself, renewals come ahead of expiry (one request each), the
    MCP server takes every token, and no login, registration or browser is ever involved."""
    client = cc_client("ci-bot", client_secret=SECRET, token_endpoint_auth_method="client_secret_basic")
    oidc = oidc_server(clients=[client], access_token_ttl=TTL, extra={"client_credentials": True})
    mcp = mcp_server(oidc)
    broker.write_config(
        {NAME: entry(mcp.url, grant="client_credentials", clientId="ci-bot", clientSecret=SECRET)}
    )
    nothing_held(broker)
    daemon = started(broker)
    try:
        assert status(broker)["state"] == "ready"
        with pytest.raises(ncp_client.InsufficientScope) as err:  # a step-up: no browser, the config's fix
            ncp_client.scope_insufficient(NAME, None, scopes=["mcp:admin"], socket_path=broker.socket)
        assert "auth.oauth21.scopes" in err.value.hint
        seen = tokens_over(broker, 9.0, mcp)
        assert len(seen) >= 4  # four expiries of a 3-second token
        stats = oidc.stats()
        assert stats["token_success"] == {"client_credentials": stats["token_requests"]["client_credentials"]}
        assert stats["token_requests"]["client_credentials"] <= len(seen) + 2  # renewals, not per request
        assert (stats["authorizations"], stats["registrations"]) == (0, 0)
        state = status(broker)
        assert (state["state"], state["grant_type"]) == ("valid", "client_credentials")
        assert "dpop_bound" not in state
        assert whoami(mcp, None, broker)["client_id"] == "ci-bot"
        assert mcp.stats()["distinct_tokens"] >= len(seen) - 1
    finally:
        daemon.stop()


def nothing_held(env: Env) -> None:
    """Nothing is held before the daemon runs: the config alone is enough."""
    assert not env.data.exists() or not any(env.data.iterdir())


def test_client_credentials_with_private_key_jwt(
    broker: Env, tmp_path: Path, oidc_server: OidcServerFactory, mcp_server: McpServerFactory
) -> None:
    """E1, RFC 7523: the key from a 0600 file signs a fresh assertion per request (oidc-provider refuses a
    jti it has seen, so every renewal proves a new one); `ncp-broker login` gets a token without a browser."""
    path = tmp_path / "ci-bot.pem"
    key = write_key(path)
    client = key_client(key)
    oidc = oidc_server(clients=[client], access_token_ttl=TTL, extra={"client_credentials": True})
    mcp = mcp_server(oidc)
    broker.write_config(
        {NAME: entry(mcp.url, grant="client_credentials", clientId="ci-bot", privateKey={"file": str(path)})}
    )
    daemon = started(broker)
    try:
        login = broker.run("ncp-broker", "login", NAME)
        assert login.returncode == 0, login.stderr
        assert "without a browser" in login.stdout
        seen = tokens_over(broker, 7.0, mcp)
        assert len(seen) >= 3
        stats = oidc.stats()
        assert stats["token_errors"] == {}
        assert stats["token_success"]["client_credentials"] >= 3
    finally:
        daemon.stop()
    assert str(path) not in " ".join(daemon.proc.args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("damage", "message", "fix"),
    [
        ("mode", "readable or writable by other users", "chmod 600 {path}"),
        ("missing", "cannot open the private key file", "auth.oauth21.privateKey.file"),
        ("garbled", "is not a PEM private key", "BEGIN PRIVATE KEY"),
    ],
)
def test_a_bad_client_key_is_refused_with_the_fix(
    *,
    broker: Env,
    tmp_path: Path,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    damage: str,
    message: str,
    fix: str,
) -> None:
    """A key file others can read, a missing one, a garbled one: needs_login naming the file and the fix,
    nothing sent to the authorization server; once fixed, the next request works (no restart)."""
    path = tmp_path / "ci-bot.pem"
    key = write_key(path)
    client = key_client(key)
    oidc = oidc_server(clients=[client], extra={"client_credentials": True})
    mcp = mcp_server(oidc)
    if damage == "mode":
        path.chmod(0o644)
    elif damage == "missing":
        path.unlink()
    else:
        path.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    broker.write_config(
        {NAME: entry(mcp.url, grant="client_credentials", clientId="ci-bot", privateKey={"file": str(path)})}
    )
    daemon = started(broker)
    try:
        for _ in range(2):  # asked twice: the same answer, and still nothing sent
            with pytest.raises(ncp_client.NeedsLogin) as err:
                token(broker)
            assert message in err.value.message
            assert fix.format(path=path) in err.value.hint
        assert oidc.stats()["requests"].get("token", 0) == 0
        assert status(broker)["state"] == "needs_login"
        write_key(path, key)  # fixed: the same key, mode 0600
        assert whoami(mcp, token(broker))["sub"] == "ci-bot"
    finally:
        daemon.stop()


def test_a_reloaded_client_secret_is_used_by_the_next_renewal(
    broker: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory
) -> None:
    """A reload that changes clientSecret applies to the next renewal of the held token, with no login:
    here the new one is wrong, and the renewal is refused for it (the old one would still have worked)."""
    client = cc_client("ci-bot", client_secret=SECRET, token_endpoint_auth_method="client_secret_basic")
    oidc = oidc_server(clients=[client], access_token_ttl=TTL, extra={"client_credentials": True})
    mcp = mcp_server(oidc)
    config = entry(mcp.url, grant="client_credentials", clientId="ci-bot", clientSecret=SECRET)
    broker.write_config({NAME: config})
    daemon = started(broker)
    try:
        token(broker)
        config["auth"]["oauth21"]["clientSecret"] = "rotated-wrong-secret"
        broker.write_config({NAME: config})
        assert broker.run("ncp-broker", "reload").returncode == 0
        assert "invalid_client" in refused_within(broker, 3 * TTL).message
        assert oidc.stats()["token_errors"] == {"invalid_client": 1}
    finally:
        daemon.stop()


def test_a_refused_client_secret_is_not_sent_again(
    broker: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory
) -> None:
    """invalid_client ends the grant: needs_login says so, and no request presents that secret again until
    a person runs `ncp-broker login` (or the config changes)."""
    client = cc_client("ci-bot", client_secret=SECRET, token_endpoint_auth_method="client_secret_basic")
    oidc = oidc_server(clients=[client], extra={"client_credentials": True})
    mcp = mcp_server(oidc)
    broker.write_config(
        {NAME: entry(mcp.url, grant="client_credentials", clientId="ci-bot", clientSecret="wrong-secret-1")}
    )
    daemon = started(broker)
    try:
        for _ in range(3):
            with pytest.raises(ncp_client.NeedsLogin) as err:
                token(broker)
            assert "invalid_client" in err.value.message
        assert oidc.stats()["token_requests"]["client_credentials"] == 1
        broker.write_config(
            {NAME: entry(mcp.url, grant="client_credentials", clientId="ci-bot", clientSecret=SECRET)}
        )
        assert broker.run("ncp-broker", "reload").returncode == 0
        assert whoami(mcp, token(broker))["sub"] == "ci-bot"
    finally:
        daemon.stop()


def test_dpop_required_where_the_authorization_server_offers_no_es256(
    broker: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory
) -> None:
    """dpop "required" and an authorization server without DPoP: refused before any token request, with the
    setting to change in the hint."""
    client = cc_client("ci-bot", client_secret=SECRET, token_endpoint_auth_method="client_secret_basic")
    oidc = oidc_server(clients=[client], extra={"client_credentials": True, "dpop": "off"})
    mcp = mcp_server(oidc)
    broker.write_config(
        {
            NAME: entry(
                mcp.url, grant="client_credentials", clientId="ci-bot", clientSecret=SECRET, dpop="required"
            )
        }
    )
    daemon = started(broker)
    try:
        with pytest.raises(ncp_client.NeedsLogin) as err:
            token(broker)
        assert "does not offer DPoP" in err.value.message
        assert 'auth.oauth21.dpop to "auto"' in err.value.hint
        assert oidc.stats()["requests"].get("token", 0) == 0
    finally:
        daemon.stop()


def test_the_first_token_is_single_flight(
    broker: Env, oidc_server: OidcServerFactory, mcp_server: McpServerFactory
) -> None:
    """Twenty callers at once with nothing held: one token request, one token for all (T4)."""
    client = cc_client("ci-bot", client_secret=SECRET, token_endpoint_auth_method="client_secret_basic")
    oidc = oidc_server(clients=[client], extra={"client_credentials": True})
    mcp = mcp_server(oidc)
    broker.write_config(
        {NAME: entry(mcp.url, grant="client_credentials", clientId="ci-bot", clientSecret=SECRET)}
    )
    daemon = started(broker)
    try:
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: token(broker), range(20)))
        assert len(set(answers)) == 1
        assert oidc.stats()["token_requests"]["client_credentials"] == 1
    finally:
        daemon.stop()


def test_a_client_key_in_the_keyring(
    broker: Env,
    monkeypatch: pytest.MonkeyPatch,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
) -> None:
    """privateKey {"keyring": ENTRY}: the PEM from the keyring entry of service ncp-broker signs the
    assertions; the store stays the file store."""
    isolate_keyring(broker)
    keyring_file = broker.root / "keyring" / "keyring_pass.cfg"
    broker.vars |= {
        "PYTHON_KEYRING_BACKEND": BACKEND,
        FILE_VARIABLE: str(keyring_file),
        "PYTHONPATH": ":".join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    key = keys.new_dpop_key()
    pem = key.to_secret().reveal()
    for kind, value in secret_scan.private_key_secrets(pem):
        secret_scan.record_secret(kind, value)
    monkeypatch.setenv(FILE_VARIABLE, str(keyring_file))
    FileKeyring().set_password("ncp-broker", "ci-bot-key", pem)  # as `keyring set ncp-broker ci-bot-key`
    client = key_client(key)
    oidc = oidc_server(clients=[client], extra={"client_credentials": True})
    mcp = mcp_server(oidc)
    oauth21 = {"grant": "client_credentials", "clientId": "ci-bot", "privateKey": {"keyring": "ci-bot-key"}}
    broker.write_config({NAME: entry(mcp.url, **oauth21)}, store="file")
    daemon = started(broker)
    try:
        assert whoami(mcp, None, broker)["sub"] == "ci-bot"
        assert oidc.stats()["token_success"]["client_credentials"] == 1
    finally:
        daemon.stop()


# ---- workload identity (E4) ---------------------------------------------------------------------------


def workload_jwt(key: keys.PrivateKey, audience: str, *, sub: str, lifetime: int = 300) -> str:
    now = int(time.time())
    claims = {"iss": WORKLOAD_ISSUER, "sub": sub, "aud": audience, "iat": now, "exp": now + lifetime}
    value = oauth.compact_jws({"typ": "JWT"}, {**claims, "jti": os.urandom(8).hex()}, key.signer(kid="w1"))
    secret_scan.record_secret("workload_token", value)
    return value


@pytest.fixture
def workload(
    oidc_server: OidcServerFactory, mcp_server: McpServerFactory
) -> tuple[OidcServer, McpServer, Any]:
    """An authorization server that trusts the workload platform's key for jwt-bearer, and its MCP server."""
    platform = keys.new_dpop_key()  # stands for the platform's signing key
    trusted = {"issuer": WORKLOAD_ISSUER, "jwks": {"keys": [{**platform.public_jwk, "kid": "w1"}]}}
    client = {
        "client_id": "ci-workload",
        "grant_types": [oauth.JWT_BEARER],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": "none",
    }
    # 6 s tokens: a fresh one has 2 s left at least (rule 9), time enough for whoami's three requests.
    oidc = oidc_server(clients=[client], access_token_ttl=6, extra={"jwt_bearer": {"issuers": [trusted]}})
    return oidc, mcp_server(oidc), platform


def test_a_workload_token_file_is_read_again_when_it_changes(
    broker: Env, tmp_path: Path, workload: tuple[OidcServer, McpServer, Any]
) -> None:
    """E4: each renewal presents the file as it is then; a token the AS refused (wrong audience) ends the
    grant and is never sent again; a new token in the file brings the grant back without a restart."""
    oidc, mcp, platform = workload
    path = tmp_path / "token"
    path.write_text(workload_jwt(platform, oidc.issuer, sub="runner-1") + "\n")
    broker.write_config(
        {NAME: entry(mcp.url, clientId="ci-workload", scopes=["mcp:read"], workloadToken={"file": str(path)})}
    )
    daemon = started(broker)
    try:
        assert whoami(mcp, token(broker))["sub"] == "runner-1"
        assert status(broker)["grant_type"] == "jwt_bearer"
        path.write_text(workload_jwt(platform, oidc.issuer, sub="runner-2"))
        deadline = time.monotonic() + 15
        while whoami(mcp, token(broker))["sub"] != "runner-2":
            assert time.monotonic() < deadline, "the changed file was never presented"
            time.sleep(0.25)
        # A token for another audience: the next renewal is refused, once.
        path.write_text(workload_jwt(platform, "https://elsewhere.example", sub="runner-3"))
        assert "invalid_grant" in refused_within(broker, 15.0).message
        sent = oidc.stats()["token_requests"]["jwt_bearer"]
        for _ in range(4):
            with pytest.raises(ncp_client.NeedsLogin):
                token(broker)
            time.sleep(0.3)
        assert oidc.stats()["token_requests"]["jwt_bearer"] == sent  # not sent again
        path.write_text(workload_jwt(platform, oidc.issuer, sub="runner-4"))
        assert whoami(mcp, token(broker))["sub"] == "runner-4"
    finally:
        daemon.stop()


def test_a_workload_token_command(
    broker: Env, tmp_path: Path, workload: tuple[OidcServer, McpServer, Any]
) -> None:
    """E4: a command (no shell) prints the token; its output is never in an argument or a log."""
    oidc, mcp, platform = workload
    path = tmp_path / "token"
    path.write_text(workload_jwt(platform, oidc.issuer, sub="runner-cmd"))
    command = [sys.executable, "-c", f"print(open({str(path)!r}).read())"]
    broker.write_config(
        {
            NAME: entry(
                mcp.url, clientId="ci-workload", scopes=["mcp:read"], workloadToken={"command": command}
            )
        }
    )
    daemon = started(broker)
    try:
        assert whoami(mcp, token(broker))["sub"] == "runner-cmd"
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"command": [sys.executable, "-c", "import sys; sys.exit(3)"]}, "failed (exit status 3)"),
        ({"command": [sys.executable, "-c", "pass"]}, "printed nothing"),
        ({"command": ["/nonexistent/ncp-token-helper"]}, "was not found"),
        ({"file": "EXPIRED"}, "expired at"),
        ({"file": "MISSING"}, "does not exist"),
    ],
    ids=["command-fails", "command-prints-nothing", "command-missing", "expired-jwt", "file-missing"],
)
def test_a_bad_workload_token_source_says_what_is_wrong(
    *,
    broker: Env,
    tmp_path: Path,
    workload: tuple[OidcServer, McpServer, Any],
    source: dict[str, Any],
    message: str,
) -> None:
    """A failing or silent command, an expired JWT, a missing file: needs_login with what went wrong and
    where to fix it; nothing is sent to the authorization server."""
    oidc, mcp, platform = workload
    if source.get("file") == "EXPIRED":
        path = tmp_path / "token"
        path.write_text(workload_jwt(platform, oidc.issuer, sub="late", lifetime=-60))
        source = {"file": str(path)}
    elif source.get("file") == "MISSING":
        source = {"file": str(tmp_path / "not-there")}
    broker.write_config(
        {NAME: entry(mcp.url, clientId="ci-workload", scopes=["mcp:read"], workloadToken=source)}
    )
    daemon = started(broker)
    try:
        with pytest.raises(ncp_client.NeedsLogin) as err:
            token(broker)
        assert message in err.value.message
        assert "workloadToken" in err.value.hint or "renewed" in err.value.hint
        assert oidc.stats()["requests"].get("token", 0) == 0
        login = broker.run("ncp-broker", "login", NAME)
        assert login.returncode != 0
        assert message in login.stderr
    finally:
        daemon.stop()

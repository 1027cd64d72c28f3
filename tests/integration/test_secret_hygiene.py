"""No secret in a log, a status or an error text (issue 5, DESIGN.md rule 8), with debug logging.

The whole session is scanned at its end (tests/conftest.py, tests/secret_scan.py). This test runs every
path where a secret passes through the daemon in one go — login with dynamic registration and with a
pre-registered confidential client, refresh, token_rejected, logout, an access key through stdin, refused
refreshes and malformed requests that carry a token — and scans its own outputs at once, so the property is
checked when it runs alone too. The scanner itself is checked on a planted secret.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import ncp_client
from tests import secret_scan
from tests.harness import Env, oauth_entry, start_daemon, wait_until

if TYPE_CHECKING:
    from tests.servers.fixtures import BrowserEnvFactory, McpServerFactory, OidcServerFactory

pytestmark = pytest.mark.integration

ACCESS_KEY = "hygiene-access-key-5b0e7c21"
CLIENT_ID = "hygiene-static-client"
CLIENT_SECRET = "hygiene-client-secret-9f3a64d8"


def test_scanner_names_place_and_kind_never_the_value(tmp_path: Path) -> None:
    """A planted secret is found inside other text; short values are ignored; the report holds no value."""
    secret = "rt-0123456789abcdef"
    secrets = {secret: "refresh_token", "short": "access_key"}
    texts = [
        ("daemon.log", f"DEBUG POST /token grant_type=refresh_token&refresh_token={secret}&x=1\n"),
        ("cli-output.txt", "config reloaded, a short word\n"),
        ("error", f"bad value: '{secret}'"),
    ]
    leaks = secret_scan.find_leaks(secrets, texts)
    assert leaks == [("daemon.log", "refresh_token"), ("error", "refresh_token")]
    assert secret not in secret_scan.report(leaks)

    (tmp_path / "issued-1.jsonl").write_text(f'{{"kind": "refresh_token", "value": "{secret}"}}\n{{"kind')
    (tmp_path / secret_scan.OUTPUTS / "a_test").mkdir(parents=True)
    (tmp_path / secret_scan.OUTPUTS / "a_test" / "daemon.log").write_text(texts[0][1])
    assert secret_scan.scan_session(tmp_path) == [("a_test/daemon.log", "refresh_token")]


def test_no_secret_of_a_full_flow_reaches_a_log_status_or_error(
    env: Env,
    oidc_server: OidcServerFactory,
    mcp_server: McpServerFactory,
    browser_env: BrowserEnvFactory,
) -> None:
    """Every secret issued or configured in a full flow stays out of the debug log, CLI output and errors."""
    directory = secret_scan.secrets_dir()
    assert directory is not None, "the session fixture sets $NCP_TEST_SECRETS_DIR"
    static_client = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "application_type": "native",
        "redirect_uris": ["http://127.0.0.1/callback"],  # any port on loopback (RFC 8252)
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    oidc = oidc_server(access_token_ttl=3, clients=[static_client])
    dynamic, static = mcp_server(oidc), mcp_server(oidc)
    env.write_config(
        {
            "dyn": oauth_entry(dynamic.url),
            "static": oauth_entry(static.url, clientId=CLIENT_ID, clientSecret=CLIENT_SECRET),
        }
    )
    texts: list[tuple[str, str]] = []  # (where, text): every CLI output and exception text of the flow

    def run(*argv: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = env.run(*argv, input=input, extra_env=dict(browser_env()), timeout=120)
        stdout = "" if argv[0] == "ncp-token" else done.stdout  # ncp-token prints the token: its job
        texts.append((" ".join(argv[:2]), stdout + done.stderr))
        return done

    def broker_error(call: Callable[..., object], *args: object) -> None:
        with pytest.raises(ncp_client.BrokerError) as raised:
            call(*args, socket_path=env.socket)
        texts.append(("exception", str(raised.value)))

    daemon = start_daemon(env)
    try:
        added = run(
            "ncp-broker", "add", "keyed", "https://keyed.example/mcp", "--access-key", "-", input=ACCESS_KEY
        )
        assert added.returncode == 0, added.stderr
        on_argv = run("ncp-broker", "add", "keyed", "https://keyed.example/mcp", "--access-key", ACCESS_KEY)
        assert on_argv.returncode == 2  # refused, and the refusal does not repeat the key
        for name in ("dyn", "static"):
            login = run("ncp-broker", "login", name)
            assert login.returncode == 0, login.stderr + daemon.log_text()
        issued = {
            name: ncp_client.get_token(name, socket_path=env.socket) for name in ("dyn", "static", "keyed")
        }
        assert issued["keyed"] == ACCESS_KEY
        refreshed = ncp_client.token_rejected("dyn", issued["dyn"], socket_path=env.socket)
        assert refreshed != issued["dyn"]
        time.sleep(2.5)  # the 3-second tokens are refreshed on schedule, the static client's with its secret
        assert run("ncp-token", "static").returncode == 0
        run("ncp-broker", "status")
        run("ncp-broker", "status", "--json")
        assert run("ncp-broker", "logout", "static").returncode == 0  # revocation, with the client secret

        # Error paths that carry a token: malformed requests, an unknown server, a refused refresh.
        current = ncp_client.get_token("dyn", socket_path=env.socket)
        broker_error(ncp_client.call, {"op": "get_token", "server": "dyn", "x": current})
        broker_error(ncp_client.call, {"op": "token_rejected", "server": "dyn", "token": [current]})
        broker_error(ncp_client.token_rejected, "nope", current)
        oidc.set_token_endpoint("error", error="invalid_grant", grant_types=["refresh_token"])

        def grant_ended() -> ncp_client.NeedsLogin | None:
            error = _refresh_error(env)
            return error if isinstance(error, ncp_client.NeedsLogin) else None

        error = wait_until(
            grant_ended,
            15,
            interval=0.2,
            message="the refused refresh to end the grant (needs_login)",
        )
        texts.append(("exception", str(error)))
        assert run("ncp-token", "dyn").returncode == 5
        run("ncp-broker", "status", "dyn")
    finally:
        daemon.stop()

    secrets = secret_scan.load_secrets(directory)
    # The collection works: this flow's tokens, codes, verifiers, keys and client secret were all recorded.
    assert secrets.get(issued["dyn"]) == secrets.get(refreshed) == "access_token"
    assert secrets.get(ACCESS_KEY) == "access_key"
    assert secrets.get(CLIENT_SECRET) == "client_secret"
    expected = {"refresh_token", "authorization_code", "code_verifier", "registration_access_token"}
    assert expected <= set(secrets.values())

    leaks = secret_scan.find_leaks(secrets, [("daemon.log", daemon.log_text()), *texts])
    assert not leaks, secret_scan.report(leaks)

    # And the scan can fail: a refresh token of this run, planted in the log, is found.
    planted = next(value for value, kind in secrets.items() if kind == "refresh_token")
    log = f"{daemon.log_text()}DEBUG refresh_token={planted}\n"
    assert secret_scan.find_leaks(secrets, [("daemon.log", log)]) == [("daemon.log", "refresh_token")]


def _refresh_error(env: Env) -> ncp_client.BrokerError | None:
    """Ask for a refresh of the current token (the refusal, once the grant has ended)."""
    try:
        ncp_client.token_rejected(
            "dyn", ncp_client.get_token("dyn", socket_path=env.socket), socket_path=env.socket
        )
    except ncp_client.BrokerError as exc:
        return exc
    return None

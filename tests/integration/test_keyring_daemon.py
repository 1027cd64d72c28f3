"""The real daemon with ``"store": "keyring"``, against the real oidc-provider and mcp servers; and the real
``auto`` choice on this headless machine.

The keyring is tests/keyring_backend.py's file-backed, recommended backend, selected for every process of
the test (daemon and CLI) with the standard ``$PYTHON_KEYRING_BACKEND``, its file named by
``$NCP_TEST_KEYRING_FILE`` so that the test and a restarted daemon read the same entries. The keyring file
is only read while no refresh can be rewriting it (a long token lifetime, or the daemon stopped).

Secrets are compared as booleans computed beforehand, so a failing assertion never prints one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from brokerd.store import KEYRING_SERVICE, server_key
from tests.harness import Env, StackFactory, sleep_past, start_daemon, tool_names
from tests.keyring_backend import BACKEND, FILE_VARIABLE, read_entries

if TYPE_CHECKING:
    from tests.harness import Daemon
    from tests.servers.fixtures import McpServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def isolate_keyring(env: Env) -> None:
    """Point keyring's config and data roots at empty directories: no keyringrc.cfg of the machine's user
    picks a backend, and keyrings.alt's own files stay inside the test's root."""
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        path = env.root / name.lower()
        path.mkdir(mode=0o700)
        env.vars[name] = str(path)
    env.vars.pop("PYTHON_KEYRING_BACKEND", None)


@pytest.fixture
def keyring_file(env: Env) -> Path:
    """Select the test keyring for every process the test starts; the file it keeps its entries in."""
    isolate_keyring(env)
    path = env.root / "keyring" / "keyring_pass.cfg"
    env.vars["PYTHON_KEYRING_BACKEND"] = BACKEND
    env.vars[FILE_VARIABLE] = str(path)
    # `python -m brokerd` imports the backend by name: make `tests` importable whatever the working directory.
    env.vars["PYTHONPATH"] = ":".join(p for p in (str(REPO), env.vars.get("PYTHONPATH", "")) if p)
    return path


def start(env: Env) -> Daemon:
    daemon = start_daemon(env)
    assert daemon.proc.poll() is None, daemon.log_text()
    return daemon


def store_status(env: Env) -> str:
    return str(env.status()["daemon"]["store"])


def document_path(env: Env, mcp: McpServer) -> Path:
    return env.data / f"{server_key(mcp.url)}.json"


def document(env: Env, mcp: McpServer) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(document_path(env, mcp).read_text())
    return result


def keyring_secrets(path: Path, mcp: McpServer) -> dict[str, str]:
    """The broker's keyring entries for ``mcp``, by entry name (``access_token``, ``refresh_token``, …)."""
    prefix = f"{server_key(mcp.url)}:"
    return {
        username.removeprefix(prefix): value
        for (service, username), value in read_entries(path).items()
        if service == KEYRING_SERVICE and username.startswith(prefix)
    }


def data_dir_text(env: Env) -> str:
    """Everything under the data directory, as text: documents, temporary and moved-aside files."""
    return "\n".join(p.read_text(errors="replace") for p in sorted(env.data.rglob("*")) if p.is_file())


def token(env: Env) -> str:
    """`ncp-token srv`: the access token (never put it in an assertion message)."""
    out = env.run("ncp-token", "srv")
    code, stderr = out.returncode, out.stderr
    assert code == 0, stderr
    return out.stdout.strip()


def mcp_accepts(mcp: McpServer, access_token: str) -> bool:
    """Whether the MCP server lists its tools for ``access_token``."""
    tools = tool_names(mcp.url, access_token)
    return "echo" in tools


def assert_secrets_only_in_keyring(env: Env, mcp: McpServer) -> None:
    """The document holds the record with every secret field null and lists its keyring entries."""
    doc = document(env, mcp)
    tokens = doc["tokens"]
    assert tokens is not None, "the document has no tokens"
    filled = [name for name in ("access_token", "refresh_token") if tokens[name] is not None]
    filled += ["access_key"] if doc["access_key"] is not None else []
    filled += [
        f"registration {name}"
        for reg in doc["registrations"].values()
        for name in ("client_secret", "registration_access_token")
        if reg[name] is not None
    ]
    assert not filled, f"secret fields not null in the document: {filled}"
    assert {"access_token", "refresh_token"} <= set(doc["keyring_entries"])


def wait_past_expiry(env: Env, mcp: McpServer) -> None:
    """Sleep until the stored access token has expired (the daemon is stopped: nothing moves it)."""
    sleep_past(float(document(env, mcp)["tokens"]["expires_at"]), 0.5)


def test_login_puts_tokens_in_the_keyring_and_status_says_so(
    env: Env, keyring_file: Path, stack: StackFactory
) -> None:
    """`"store": "keyring"`: status names the backend and why; after a login the document has every secret
    null and the keyring holds the tokens; `ncp-token` hands out the keyring's token, which the MCP server
    accepts."""
    # Long-lived tokens: no refresh rewrites the keyring while the test reads it.
    s = stack(store="keyring", login=False)
    oidc, mcp = s.oidc, s.mcp
    store = store_status(env)
    assert store.startswith("keyring ("), store
    assert BACKEND in store  # the backend …
    assert 'configured: "store": "keyring"' in store  # … and why
    assert "(priority 1)" in store
    s.log_in()
    access = token(env)
    accepted = mcp_accepts(mcp, access)
    assert accepted, "the MCP server refused the token"

    assert_secrets_only_in_keyring(env, mcp)
    doc = document(env, mcp)
    secrets = keyring_secrets(keyring_file, mcp)
    assert set(secrets) == set(doc["keyring_entries"])  # the document lists exactly what it owns
    handed_out = secrets["access_token"] == access
    assert handed_out, "ncp-token did not hand out the keyring's access token"
    has_refresh = bool(secrets["refresh_token"])
    assert has_refresh, "the keyring holds an empty refresh token"
    on_disk = data_dir_text(env) + s.daemon.log_text()
    leaked = [name for name, value in secrets.items() if value in on_disk]
    assert not leaked, f"keyring secrets found in the data directory or the log: {leaked}"
    assert oidc.stats()["token_requests"]["authorization_code"] == 1


def test_restart_past_expiry_refreshes_from_the_keyring_without_login(
    env: Env, keyring_file: Path, stack: StackFactory
) -> None:
    """Rule 5 with the keyring: a daemon restarted after the access token expired refreshes with the
    keyring's refresh token, without a login and without replay; the rotated refresh token lands in the
    keyring, not in the document; and it is the live one (a second restart refreshes with it)."""
    s = stack(ttl=3, store="keyring")
    oidc, mcp = s.oidc, s.mcp
    first = token(env)
    s.stop()
    before = keyring_secrets(keyring_file, mcp)
    assert_secrets_only_in_keyring(env, mcp)

    issued: list[str] = [first]
    for restart in (1, 2):
        wait_past_expiry(env, mcp)
        daemon = s.start()
        try:
            fresh = token(env)
            accepted = mcp_accepts(mcp, fresh)
        finally:
            s.stop()
        assert accepted, f"restart {restart}: the MCP server refused the fresh token"
        is_new = fresh not in issued
        assert is_new, f"restart {restart}: ncp-token handed out an expired token instead of a fresh one"
        issued.append(fresh)
        after = keyring_secrets(keyring_file, mcp)
        rotated = after["refresh_token"] != before["refresh_token"]
        assert rotated, f"restart {restart}: the keyring still holds the refresh token used before"
        old_gone = before["refresh_token"] not in read_entries(keyring_file).values()
        assert old_gone, f"restart {restart}: the spent refresh token is still in the keyring"
        assert_secrets_only_in_keyring(env, mcp)
        on_disk = data_dir_text(env) + daemon.log_text()
        leaked = [name for name, value in after.items() if value in on_disk]
        leaked += [f"access token {i}" for i, value in enumerate(issued) if value in on_disk]
        assert not leaked, f"restart {restart}: secrets in the data directory or the log: {leaked}"
        stats = oidc.stats()
        assert stats["replay_detected"] == 0, f"restart {restart}: {oidc.events()}"
        assert stats["token_requests"]["authorization_code"] == 1  # no new login
        assert stats["token_success"]["refresh_token"] >= restart
        before = after


def test_logout_removes_the_keyring_entries_and_revokes(
    env: Env, keyring_file: Path, stack: StackFactory
) -> None:
    """`logout` with the keyring: the grant is revoked at the server, the token entries leave the keyring
    (only the kept client registration's entries may stay) and the document no longer lists them."""
    s = stack(store="keyring")
    oidc, mcp = s.oidc, s.mcp
    before = keyring_secrets(keyring_file, mcp)
    assert {"access_token", "refresh_token"} <= set(before)
    client_id = document(env, mcp)["tokens"]["client_id"]
    out = env.run("ncp-broker", "logout", "srv")
    assert out.returncode == 0, out.stderr
    assert "refresh_token: revoked" in out.stdout
    refused = env.run("ncp-token", "srv").returncode
    assert refused == 5
    s.stop()

    after = keyring_secrets(keyring_file, mcp)
    entries = sorted(after)  # names only: the values are secrets
    assert "access_token" not in entries
    assert "refresh_token" not in entries
    assert all(entry.startswith("registration:") for entry in entries), entries
    values = read_entries(keyring_file).values()
    lingering = [name for name in ("access_token", "refresh_token") if before[name] in values]
    assert not lingering, f"revoked tokens still in the keyring: {lingering}"
    doc = document(env, mcp)
    tokens_kept = doc["tokens"] is not None
    assert not tokens_kept, "the document still has tokens after logout"
    assert set(doc["keyring_entries"]) == set(entries)

    stats = oidc.stats()
    assert stats["requests"].get("revocation", 0) >= 1
    # (oidc-provider emits no revocation.success: the fixture's "revocations" stays 0, see test_oauth_edges)
    assert stats["grants_revoked"] == 1
    assert stats["replay_detected"] == 0  # revoked by the logout, not for a replay
    answer = httpx.post(  # the server agrees: the refresh token is dead
        oidc.metadata()["token_endpoint"],
        data={
            "grant_type": "refresh_token",
            "refresh_token": before["refresh_token"],
            "client_id": client_id,
        },
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


def test_auto_on_this_headless_machine_uses_files_and_keyring_is_refused(env: Env) -> None:
    """No keyring selected, no keyringrc: the daemon's `auto` falls back to the file backend and says why,
    naming the backend keyring itself picks here; `"store": "keyring"` refuses to start, saying what to do.

    tests/integration/test_daemon.py checks only the `file (auto: ` prefix in the caller's environment, and
    tests/unit/test_store.py::test_auto_on_this_headless_machine_is_file the reason without a daemon.
    """
    isolate_keyring(env)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import keyring; c = type(keyring.get_keyring()); print(f'{c.__module__}.{c.__qualname__}')",
        ],
        capture_output=True,
        text=True,
        env=env.vars,
        timeout=30,
        check=True,
    )
    real = probe.stdout.strip()
    assert real

    env.write_config({}, store="auto")
    daemon = start(env)
    try:
        store = store_status(env)
    finally:
        daemon.stop()
    assert store.startswith("file (auto: keyring has no usable backend: "), store
    assert real in store, store

    env.write_config({}, store="keyring")
    refused = start_daemon(env, log_name="refused.log")
    try:
        assert refused.proc.wait(15) == 1, refused.log_text()
    finally:
        refused.stop()
    log = refused.log_text()
    assert '"store": "keyring" is configured' in log, log
    assert real in log, log
    assert 'set "store": "file"' in log, log


def test_keyring_detection_error_is_reported_as_the_error(env: Env) -> None:
    """keyring's detection raising (here SecretService without a D-Bus session, as selected on a headless
    machine) refuses `"store": "keyring"` with keyring's own reason, not as a timeout that never happened."""
    isolate_keyring(env)
    env.vars["PYTHON_KEYRING_BACKEND"] = "keyring.backends.SecretService.Keyring"
    env.vars.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env.write_config({}, store="keyring")
    refused = start_daemon(env)
    try:
        code = refused.proc.wait(15)
    finally:
        refused.stop()
    log = refused.log_text()
    assert code == 1, log
    reasons = [line for line in log.splitlines() if "cannot start:" in line]
    assert reasons, log
    assert "did not answer" not in reasons[0], reasons[0]
    # Our classification (brokerd/store/_open.py), whichever step of keyring's detection raised; keyring's
    # own words follow it in parentheses and are not ours to pin.
    assert re.search(r"keyring backend (detection failed|\S+ is not usable) \(", reasons[0]), reasons[0]

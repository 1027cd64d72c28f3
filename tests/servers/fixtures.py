"""pytest fixtures that start the real test servers on loopback: a pytest plugin module.

Load it with `pytest_plugins = ["tests.servers.fixtures"]` (in tests/conftest.py, or in a test module).

Fixtures (all function-scoped factories; everything they start is stopped at teardown):
    oidc_server(**options) -> OidcServer      node's oidc-provider (tests/servers/oidc_server.mjs)
    mcp_server(issuer, **options) -> McpServer  the mcp SDK's protected server (tests/servers/mcp_server.py)
    browser_env(**options) -> BrowserEnv        environment variables with BROWSER set to a login driver

Processes listen on 127.0.0.1 with ephemeral ports, their stdout/stderr go to files under the test's
tmp_path (`servers/` there), every wait has a deadline, and they are stopped by PID (SIGTERM, then SIGKILL).
The first use installs tests/servers/node_modules with install.sh when it is missing or stale, or skips the
test when node/npm are not on PATH.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.waiting import WaitTimeout, wait_until

__all__ = [
    "SERVERS_DIR",
    "BrowserEnv",
    "BrowserEnvFactory",
    "McpServer",
    "McpServerFactory",
    "OidcServer",
    "OidcServerFactory",
    "ServerProcess",
    "browser_env",
    "chromium_available",
    "ensure_node_modules",
    "mcp_server",
    "oidc_server",
]

SERVERS_DIR = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
HTTP_TIMEOUT = 10.0
DEFAULT_SCOPES = ("openid", "offline_access", "mcp:read", "mcp:write", "mcp:admin")

_node_modules_ready = False


# ---------------------------------------------------------------------------------------------------------
# Installation


def _lock_digest() -> str:
    return hashlib.sha256((SERVERS_DIR / "package-lock.json").read_bytes()).hexdigest()


def _node_modules_current() -> bool:
    stamp = SERVERS_DIR / "node_modules" / ".ncp-lock-sha256"
    return stamp.is_file() and stamp.read_text().strip() == _lock_digest()


def ensure_node_modules() -> None:
    """Run install.sh (without Chromium) once when node_modules is missing or stale.

    Skips the calling test when node or npm is not on PATH; fails it when the install fails.
    """
    global _node_modules_ready  # noqa: PLW0603 - one install per test session
    if _node_modules_ready:
        return
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the test authorization server (tests/servers/install.sh)")
    # A file lock, so parallel test processes do not run npm ci over each other.
    checkout = hashlib.sha256(str(SERVERS_DIR).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"ncp-test-servers-{checkout}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _node_modules_current():
            done = subprocess.run(
                ["bash", str(SERVERS_DIR / "install.sh"), "--no-chromium"],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                pytest.fail(f"tests/servers/install.sh failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    _node_modules_ready = True


def chromium_available() -> bool:
    """True when Debian's chromium and playwright-core are installed."""
    return os.access(CHROMIUM, os.X_OK) and (SERVERS_DIR / "node_modules" / "playwright-core").is_dir()


# ---------------------------------------------------------------------------------------------------------
# Processes


class _NotReady(Exception):
    def __init__(self, message: str, *, was_running: bool) -> None:
        super().__init__(message)
        self.was_running = was_running


class ServerProcess:
    """A server process that prints one JSON line on stdout when ready.

    stdout and stderr are appended to `<log_dir>/<name>.stdout.log` / `.stderr.log` (kept across restarts).
    """

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self, argv: Sequence[str] | None = None, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        """Start (again) and return the ready line; RuntimeError with the stderr tail if it never comes.

        A process that is still running but silent at the deadline is stopped and started once more:
        rarely (seen twice in two days of test runs; cause not found) oidc_server.mjs hangs before
        printing its ready line while other test processes load the machine.
        """
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        if argv is not None:
            self.argv = list(argv)
        try:
            return self._start_once(timeout)
        except _NotReady as exc:
            if not exc.was_running:
                raise RuntimeError(str(exc)) from None
            print(f"{exc}\n(starting {self.name} once more)", file=sys.stderr)
            try:
                return self._start_once(timeout)
            except _NotReady as again:
                raise RuntimeError(str(again)) from None

    def _start_once(self, timeout: float) -> dict[str, Any]:
        offset = self.stdout_path.stat().st_size if self.stdout_path.exists() else 0
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.cwd,
                start_new_session=True,
            )
        popen = self._popen

        def ready_or_exited() -> tuple[dict[str, Any] | None, int | None] | None:
            with open(self.stdout_path, "rb") as out:
                out.seek(offset)
                line = out.readline()
            if line.endswith(b"\n"):
                return json.loads(line), None
            code = popen.poll()
            return None if code is None else (None, code)

        with contextlib.suppress(WaitTimeout):
            ready, _ = wait_until(ready_or_exited, timeout, message=f"{self.name}'s ready line")
            if ready is not None:
                return ready
        code = popen.poll()
        self.stop()
        raise _NotReady(
            f"{self.name} did not become ready within {timeout}s (exit code {code}); stderr tail:\n"
            f"{self.stderr_tail()}",
            was_running=code is None,
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL after `timeout`; waits for the exit so no zombie or warning is left."""
        popen, self._popen = self._popen, None
        if popen is None:
            return
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout)

    def stderr_tail(self, size: int = 4000) -> str:
        try:
            return self.stderr_path.read_bytes()[-size:].decode(errors="replace")
        except FileNotFoundError:
            return ""


def _http() -> httpx.Client:
    return httpx.Client(timeout=HTTP_TIMEOUT, trust_env=False)


# ---------------------------------------------------------------------------------------------------------
# The authorization server


class OidcServer:
    """A running oidc_server.mjs. `issuer` is exactly the listening URL (no trailing slash).

    `stop()` then `start()` restarts it on the same port; with `persist=True` (the default) clients, grants,
    tokens and signing keys survive that, as a real server's would survive an outage.
    """

    def __init__(self, process: ServerProcess, config: dict[str, Any]) -> None:
        self.process = process
        self.config = config
        self.issuer = ""
        self.port = 0

    def _launch(self) -> None:
        config_path = self.process.stdout_path.parent / f"{self.process.name}.config.json"
        config_path.write_text(json.dumps(self.config))
        ready = self.process.start(["node", str(SERVERS_DIR / "oidc_server.mjs"), str(config_path)])
        self.issuer, self.port = str(ready["issuer"]), int(ready["port"])
        self.config["port"] = self.port  # a restart reuses the port

    def url(self, path: str) -> str:
        return f"{self.issuer}{path}"

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 metadata from /.well-known/oauth-authorization-server."""
        result: dict[str, Any] = self._get("/.well-known/oauth-authorization-server")
        return result

    def _get(self, path: str) -> Any:
        with _http() as http:
            response = http.get(self.url(path))
            response.raise_for_status()
            return response.json()

    def _admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        with _http() as http:
            response = http.post(self.url(f"/__admin/{path}"), json=body or {})
            response.raise_for_status()
            return response.json()

    def stats(self) -> dict[str, Any]:
        """Counters: token_requests/token_success by grant type, replay_detected, grants_revoked, what
        the token endpoint switch did (token_503, token_stalled, token_dropped, token_late, …), …"""
        result: dict[str, Any] = self._get("/__admin/stats")
        return result

    def events(self) -> list[dict[str, Any]]:
        """The last 500 logged events (grant.revoked, refresh_token.consumed, *.error, …), oldest first."""
        result: list[dict[str, Any]] = self._get("/__admin/events")
        return result

    def reset_stats(self) -> None:
        self._admin("reset_stats")

    def set_token_endpoint(
        self,
        mode: str = "ok",
        *,
        seconds: float = 30.0,
        then: str = "drop",
        error: str = "temporarily_unavailable",
        status: int = 400,
        retry_after: int = 1,
        grant_types: Sequence[str] | None = None,
        count: int | None = None,
    ) -> None:
        """Break the token endpoint (docs/testing-servers.md has the table).

        Unprocessed, the grant unspent: "503" (with `Retry-After: retry_after`), "error" (answer `status`
        with the OAuth `error`), "stall" (hold the request `seconds`, then `then`="drop" the connection or
        "proceed" to process it normally), "drop" (close the connection at once). Processed, a refresh
        token rotated: "late" (hold the answer `seconds`, then send it), "lose" (close the connection
        without the answer). "ok" ends the switch. Only for `grant_types` (short names: refresh_token,
        authorization_code, device_code) if given, and only for the next `count` matching requests if
        given. Setting a mode releases whatever is held (a stall goes on with its `then`, a late answer is
        sent).

        Raises:
            httpx.HTTPStatusError: an unknown mode or `then` (the server answers 400).
        """
        self._admin(
            "token_endpoint",
            {
                "mode": mode,
                "seconds": seconds,
                "then": then,
                "error": error,
                "status": status,
                "retry_after": retry_after,
                "grant_types": list(grant_types) if grant_types is not None else None,
                "count": count,
            },
        )

    def revoke_all(self) -> int:
        """Revoke every grant (all its tokens); returns how many. Refreshes then get invalid_grant."""
        return int(self._admin("revoke_all")["revoked"])

    def add_resource(self, url: str, scopes: Sequence[str] | None = None) -> None:
        """Accept `url` as a resource indicator (JWT access tokens with aud=url), also after a restart."""
        entry: dict[str, Any] = {"url": url}
        if scopes is not None:
            entry["scopes"] = list(scopes)
        self.config["resources"] = [*self.config["resources"], entry]
        self._admin("resources", entry)

    def set_ttl(self, *, access_token: int | None = None, refresh_token: int | None = None) -> None:
        """Lifetimes in seconds for tokens issued from now on."""
        body: dict[str, Any] = {}
        if access_token is not None:
            body["access_token"] = self.config["access_token_ttl"] = access_token
        if refresh_token is not None:
            body["refresh_token"] = self.config["refresh_token_ttl"] = refresh_token
        self._admin("ttl", body)

    def start(self) -> None:
        """Start again (after stop()) on the same port, same issuer."""
        self._launch()

    def stop(self) -> None:
        self.process.stop()

    @property
    def running(self) -> bool:
        return self.process.running


OidcServerFactory = Callable[..., OidcServer]


def start_oidc_server(
    log_dir: Path,
    name: str,
    *,
    scopes: Sequence[str] = DEFAULT_SCOPES,
    access_token_ttl: int = 3600,
    refresh_token_ttl: int = 14 * 24 * 3600,
    resources: Sequence[str] = (),
    clients: Sequence[dict[str, Any]] = (),
    rotate_refresh_token: bool = True,
    device_poll_interval: int | None = None,
    persist: bool = True,
    extra: dict[str, Any] | None = None,
) -> OidcServer:
    """Start oidc_server.mjs; see OidcServer and docs/testing-servers.md for the options."""
    ensure_node_modules()
    config: dict[str, Any] = {
        "port": 0,
        "scopes": list(scopes),
        "access_token_ttl": access_token_ttl,
        "refresh_token_ttl": refresh_token_ttl,
        "resources": list(resources),
        "clients": list(clients),
        "rotate_refresh_token": rotate_refresh_token,
        "device_poll_interval": device_poll_interval,
        "state_dir": str(log_dir / f"{name}.state") if persist else None,
        "parent_pid": os.getpid(),
        **(extra or {}),
    }
    server = OidcServer(ServerProcess(name, [], log_dir, cwd=SERVERS_DIR), config)
    server._launch()
    return server


@pytest.fixture
def oidc_server(tmp_path: Path) -> Iterator[OidcServerFactory]:
    """Factory: `oidc_server(**options) -> OidcServer` (options of start_oidc_server)."""
    started: list[OidcServer] = []

    def start(**options: Any) -> OidcServer:
        server = start_oidc_server(tmp_path / "servers", f"oidc-{len(started) + 1}", **options)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


# ---------------------------------------------------------------------------------------------------------
# The MCP server


class McpServer:
    """A running mcp_server.py. `url` is the MCP endpoint and the resource identifier (`aud`)."""

    def __init__(self, process: ServerProcess, config: dict[str, Any]) -> None:
        self.process = process
        self.config = config
        self.url = ""
        self.port = 0

    def _launch(self) -> None:
        ready = self.process.start(
            [sys.executable, str(SERVERS_DIR / "mcp_server.py"), json.dumps(self.config)]
        )
        self.url, self.port = str(ready["url"]), int(ready["port"])
        self.config["port"] = self.port

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def prm_url(self) -> str:
        """RFC 9728 protected resource metadata, as named in the 401's resource_metadata."""
        return f"{self.origin}/.well-known/oauth-protected-resource{self.config.get('path', '/mcp')}"

    def stats(self) -> dict[str, Any]:
        """statuses, unauthorized, forbidden, methods, tool_calls, step_up_refusals, distinct_tokens."""
        with _http() as http:
            response = http.get(f"{self.origin}/__admin/stats")
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    def reset_stats(self) -> None:
        with _http() as http:
            http.post(f"{self.origin}/__admin/reset_stats").raise_for_status()

    def refuse_tokens(self, count: int = 1) -> None:
        """Answer the next `count` MCP requests that carry a token with 401 invalid_token."""
        with _http() as http:
            http.post(f"{self.origin}/__admin/refuse_tokens", json={"count": count}).raise_for_status()

    def rotate_dpop_nonce(self) -> None:
        """Make a new DPoP nonce (``dpop="nonce"``): the next proof without it is challenged."""
        with _http() as http:
            http.post(f"{self.origin}/__admin/dpop_nonce").raise_for_status()

    def start(self) -> None:
        """Start again (after stop()) on the same port."""
        self._launch()

    def stop(self) -> None:
        self.process.stop()

    @property
    def running(self) -> bool:
        return self.process.running


McpServerFactory = Callable[..., McpServer]


def start_mcp_server(
    log_dir: Path,
    name: str,
    issuer: OidcServer | str,
    *,
    required_scopes: Sequence[str] = ("mcp:read",),
    tool_scopes: dict[str, list[str]] | None = None,
    json_response: bool = False,
    stateless: bool = False,
    path: str = "/mcp",
    register_resource: bool = True,
    dpop: str = "off",
) -> McpServer:
    """Start mcp_server.py for `issuer`; given an OidcServer, its URL is registered there as a resource."""
    issuer_url = issuer.issuer if isinstance(issuer, OidcServer) else issuer
    config: dict[str, Any] = {
        "issuer": issuer_url,
        "port": 0,
        "path": path,
        "required_scopes": list(required_scopes),
        "tool_scopes": tool_scopes if tool_scopes is not None else {"admin_action": ["mcp:admin"]},
        "json_response": json_response,
        "stateless": stateless,
        "dpop": dpop,
        "parent_pid": os.getpid(),
    }
    server = McpServer(ServerProcess(name, [], log_dir), config)
    server._launch()
    if isinstance(issuer, OidcServer) and register_resource:
        issuer.add_resource(server.url)
    return server


@pytest.fixture
def mcp_server(tmp_path: Path) -> Iterator[McpServerFactory]:
    """Factory: `mcp_server(issuer, **options) -> McpServer` (options of start_mcp_server)."""
    started: list[McpServer] = []

    def start(issuer: OidcServer | str, **options: Any) -> McpServer:
        server = start_mcp_server(tmp_path / "servers", f"mcp-{len(started) + 1}", issuer, **options)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


# ---------------------------------------------------------------------------------------------------------
# Browser drivers


class BrowserEnv(dict[str, str]):
    """Environment variables to add for a process that opens a browser with Python's `webbrowser`.

    `BROWSER` is an executable wrapper (webbrowser takes it as one program path, no arguments) that
    returns at once and logs in in the background. `log_path` receives one line per step.
    """

    def __init__(self, values: dict[str, str], *, driver: str, command: Path, log_path: Path) -> None:
        super().__init__(values)
        self.driver = driver
        self.command = command
        self.log_path = log_path

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
        """Wait until `text` appears in the driver's log and return the log; WaitTimeout (an
        AssertionError) with the log otherwise."""
        return wait_until(
            lambda: log if text in (log := self.log_text()) else "",
            timeout,
            message=lambda: f"{text!r} in the browser log:\n{self.log_text()}",
        )


BrowserEnvFactory = Callable[..., BrowserEnv]


def make_browser_env(
    directory: Path,
    name: str,
    *,
    action: str = "approve",
    driver: str | None = None,
    user: str = "alice",
    timeout: float = 30.0,
) -> BrowserEnv:
    """Write the BROWSER wrapper for `driver` ("http", "chromium"; default: chromium when
    NCP_TEST_CHROMIUM=1 and it is installed, else http) and return the variables to set."""
    if action not in ("approve", "deny"):
        raise ValueError(f"action must be approve or deny, not {action!r}")
    if driver is None:
        driver = "chromium" if os.environ.get("NCP_TEST_CHROMIUM") == "1" and chromium_available() else "http"
    if driver == "chromium":
        ensure_node_modules()
        if not chromium_available():
            pytest.skip("the Chromium driver needs /usr/bin/chromium (tests/servers/install.sh as root)")
        program = [shutil.which("node") or "node", str(SERVERS_DIR / "browser_chromium.mjs")]
    elif driver == "http":
        program = [sys.executable, str(SERVERS_DIR / "browser_http.py")]
    else:
        raise ValueError(f"unknown browser driver {driver!r}")
    directory.mkdir(parents=True, exist_ok=True)
    command = directory / f"{name}.sh"
    command.write_text(f'#!/bin/sh\nexec {shlex.join(program)} "$@"\n')
    command.chmod(0o755)
    log_path = directory / f"{name}.log"
    values = {
        "BROWSER": str(command),
        "NCP_TEST_BROWSER_ACTION": action,
        "NCP_TEST_BROWSER_USER": user,
        "NCP_TEST_BROWSER_LOG": str(log_path),
        "NCP_TEST_BROWSER_TIMEOUT": str(timeout),
    }
    return BrowserEnv(values, driver=driver, command=command, log_path=log_path)


@pytest.fixture
def browser_env(tmp_path: Path) -> BrowserEnvFactory:
    """Factory: `browser_env(action="approve"|"deny", driver=None|"http"|"chromium", user="alice",
    timeout=30.0) -> BrowserEnv` (a dict of variables to add to the environment)."""
    made: list[BrowserEnv] = []

    def make(**options: Any) -> BrowserEnv:
        env = make_browser_env(tmp_path / "browser", f"browser-{len(made) + 1}", **options)
        made.append(env)
        return env

    return make

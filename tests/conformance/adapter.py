"""The client under test for the official MCP conformance suite: a real ncp-broker daemon plus the MCP SDK.

The suite runs ``adapter.py SERVER_URL`` with ``MCP_CONFORMANCE_SCENARIO``,
``MCP_CONFORMANCE_PROTOCOL_VERSION`` and, for some scenarios, ``MCP_CONFORMANCE_CONTEXT`` (JSON:
``client_id``, ``client_secret``, ``issuer`` for pre-registration). This program:

1. makes a private temporary directory and writes a broker config (mode 0600) with one OAuth server,
   ``conf``, at that URL: the pre-registered client from the context, if any, and the suite's client
   metadata document URL (the suite has no context key for it; its reference clients use this constant).
   The extension scenarios' contexts become the grant they test (:func:`broker_config`): client
   credentials with the secret or with the private key (written to a 0600 file), a workload token file,
   an enterprise IdP with its ID token in a 0600 file;
2. starts ``ncp-broker start --foreground`` with every ncp-broker path inside that directory, and waits
   for its socket to answer;
3. runs ``ncp-broker login conf`` with ``BROWSER`` set to ``fetch_browser.py`` (for a grant that needs no
   person, the login is the daemon getting its first token itself);
4. speaks MCP through the SDK with ``ncp_client.broker_auth_for_httpx2`` (``BrokerAuth`` for the httpx2
   client of mcp 2.x; the daemon opens ``BROWSER`` itself for a step-up or a new login): connect
   (``initialize``, or the 2026-07-28 stateless lifecycle), ``tools/list``, and ``tools/call`` of
   ``test-tool`` when listed, so that step-up is reached;
5. stops the daemon by its PID and removes the directory.

Exit status 0 when every step worked; otherwise 1, with the step that failed, the daemon's log and the
browser's log on stderr. Nothing here retries or works around the broker: a step that fails is reported.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

import ncp_client

SERVER = "conf"
# The suite's Client ID Metadata Document URL (scenario auth/basic-cimd expects exactly this client_id).
CLIENT_METADATA_URL = "https://conformance-test.local/client-metadata.json"
READY_TIMEOUT = 20.0
LOGIN_TIMEOUT = 60.0
MCP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL = 12_000
HERE = Path(__file__).resolve().parent


class StepFailed(Exception):
    """A step of the run failed; the message says which and why."""


def broker_config(url: str, context: dict[str, Any], scenario: str, root: Path) -> dict[str, Any]:
    """The broker config for one scenario: ``oauth21`` from its context, as a user would write it.

    Files the config names (a private key, a workload token, an ID token) are written into ``root``, mode
    0600: a secret is never an argument or an environment variable of a process the adapter starts.
    """
    oauth21: dict[str, Any] = {}
    client_id = str(context["client_id"]) if context.get("client_id") else None
    if scenario.startswith("auth/client-credentials"):
        oauth21 = {"grant": "client_credentials", "clientId": client_id}
        if context.get("private_key_pem"):
            key = root / "client-key.pem"
            _write_private(key, str(context["private_key_pem"]))
            oauth21["privateKey"] = {"file": str(key)}
        else:
            oauth21["clientSecret"] = str(context["client_secret"])
    elif context.get("valid_jwt"):  # auth/wif-jwt-bearer: the workload's own token, in a file
        token = root / "workload-token.jwt"
        _write_private(token, str(context["valid_jwt"]))
        oauth21 = {"clientId": client_id, "workloadToken": {"file": str(token)}}
    elif context.get("idp_id_token"):  # auth/enterprise-managed-authorization: the IdP's ID token is given
        id_token = root / "idp-id-token.jwt"
        _write_private(id_token, str(context["idp_id_token"]))
        oauth21 = {
            "clientId": client_id,
            "clientSecret": str(context["client_secret"]),
            "enterprise": {
                "issuer": str(context["idp_issuer"]),
                "clientId": str(context["idp_client_id"]),
                "idToken": {"file": str(id_token)},
            },
        }
    else:
        oauth21 = {"clientMetadataUrl": CLIENT_METADATA_URL}
        if client_id:
            oauth21["clientId"] = client_id
        if context.get("client_secret"):
            oauth21["clientSecret"] = str(context["client_secret"])
    auth = {"type": "oauth", "oauth21": oauth21, "allowInsecureLoopback": True}
    return {"mcpServers": {SERVER: {"url": url, "auth": auth}}, "store": "file"}


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _describe(exc: BaseException) -> str:
    """The exception as a sentence; for a task group's ExceptionGroup, its innermost exceptions."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"


def _tail(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL:]
    except OSError:
        return "(none)\n"


class Run:
    """One scenario: the directory, the daemon, the login, the MCP session."""

    def __init__(self, url: str, version: str, context: dict[str, Any], root: Path, scenario: str) -> None:
        self.url, self.version, self.root = url, version, root
        self.socket = root / "broker.sock"
        self.daemon_log = root / "daemon.log"
        self.browser_log = root / "browser.log"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.refusals: list[str] = []  # for the failure message: what the MCP server refused, and why
        config = root / "config.json"
        _write_private(config, json.dumps(broker_config(url, context, scenario, root)))
        browser = root / "browser"
        _write_private(
            browser,
            f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(HERE / 'fetch_browser.py'))}"
            ' "$@"\n',
            0o700,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_CONFORMANCE_")}
        self.env = env | {
            "NCP_BROKER_CONFIG": str(config),
            "NCP_BROKER_SOCK": str(self.socket),
            "NCP_BROKER_DATA": str(root / "data"),
            "NCP_BROKER_STATE": str(root / "state"),
            "NCP_BROKER_LOG_LEVEL": "info",
            "BROWSER": str(browser),
            "NCP_CONFORMANCE_BROWSER_LOG": str(self.browser_log),
        }

    def start_daemon(self) -> None:
        with open(self.daemon_log, "ab") as log:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "brokerd", "start", "--foreground"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if (status := self.daemon.poll()) is not None:
                raise StepFailed(f"the daemon exited with status {status} before it answered")
            try:
                ncp_client.call({"op": "hello"}, timeout=2.0, socket_path=self.socket)
            except ncp_client.BrokerError:
                time.sleep(0.05)
            else:
                return
        raise StepFailed(f"the daemon did not answer on its socket within {READY_TIMEOUT:g} s")

    def login(self) -> None:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "brokerd", "login", SERVER],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=self.env,
                timeout=LOGIN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StepFailed(
                f"`ncp-broker login {SERVER}` did not finish within {LOGIN_TIMEOUT:g} s"
            ) from None
        if done.returncode != 0:
            raise StepFailed(
                f"`ncp-broker login {SERVER}` failed (exit {done.returncode}): {done.stderr.strip()}"
            )

    async def use_mcp(self) -> str:
        mode = self.version if self.version in MODERN_PROTOCOL_VERSIONS else "legacy"
        auth = ncp_client.broker_auth_for_httpx2(SERVER, socket_path=self.socket)

        async def record(response: httpx2.Response) -> None:
            if response.status_code in (401, 403):
                challenge = response.headers.get("www-authenticate", "(no WWW-Authenticate)")
                self.refusals.append(f"HTTP {response.status_code} {challenge}")

        with anyio.fail_after(MCP_TIMEOUT):
            async with (
                httpx2.AsyncClient(auth=auth, timeout=10.0, event_hooks={"response": [record]}) as http,
                Client(streamable_http_client(self.url, http_client=http), mode=mode) as client,
            ):
                names = [tool.name for tool in (await client.list_tools()).tools]
                if "test-tool" not in names:
                    return f"tools/list: {names}; no test-tool to call"
                result = await client.call_tool("test-tool", {})
                if result.is_error:
                    raise StepFailed(f"tools/call test-tool returned an error result: {result.content}")
                return f"tools/list: {names}; tools/call test-tool: ok"

    def stop_daemon(self) -> None:
        if self.daemon is None or self.daemon.poll() is not None:
            return
        self.daemon.terminate()
        try:
            self.daemon.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait(STOP_TIMEOUT)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # the suite's timeout kill: unwind, so `finally` stops the daemon


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: adapter.py MCP_SERVER_URL (run by the conformance suite)\n")
        return 2
    signal.signal(signal.SIGTERM, _terminated)
    url = argv[-1]
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "?")
    version = os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION", "2025-11-25")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    root = Path(tempfile.mkdtemp(prefix="ncpc-", dir="/tmp" if os.path.isdir("/tmp") else None))
    run = Run(url, version, context, root, scenario)
    step = "start the daemon"
    try:
        run.start_daemon()
        step = "log in"
        run.login()
        step = "use the MCP server"
        summary = anyio.run(run.use_mcp)
    except SystemExit:
        sys.stderr.write(f"adapter: {scenario} ({version}): stopped by a signal while trying to {step}\n")
        raise
    except Exception as exc:  # noqa: BLE001 - whatever failed, the run ends with a sentence saying so
        sys.stderr.write(f"adapter: {scenario} ({version}): failed to {step}: {_describe(exc)}\n")
        for refusal in run.refusals:
            sys.stderr.write(f"adapter: the MCP server answered {refusal}\n")
        run.stop_daemon()  # its log is complete once it has stopped
        sys.stderr.write(f"--- daemon log ---\n{_tail(run.daemon_log)}--- browser log ---\n")
        sys.stderr.write(_tail(run.browser_log))
        return 1
    finally:
        run.stop_daemon()
        shutil.rmtree(root, ignore_errors=True)
    print(f"adapter: {scenario} ({version}): ok; {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Shared fixtures: an isolated per-test environment and a real daemon started by PID.

Every daemon logs at debug level. Its logs and the output of every ``Env.run`` are kept for the session's
secret scan (tests/secret_scan.py): at the end of the run, none of them may hold a secret issued or
configured during it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import secret_scan

# Real authorization server, MCP server and browser drivers for integration tests (tests/servers/).
pytest_plugins = ["tests.servers.fixtures"]

START_DEADLINE = 15.0


@dataclass
class Env:
    """Paths and environment of one isolated broker installation."""

    root: Path
    config: Path
    socket: Path
    data: Path
    state: Path
    vars: dict[str, str] = field(default_factory=dict)
    #: Where run() output and, at the end, the logs are kept for the secret scan (None: not kept).
    outputs: Path | None = None

    def write_config(self, servers: dict[str, Any], **top: Any) -> None:
        doc = {"mcpServers": servers, **top}
        for kind, value in secret_scan.json_secrets(doc):
            secret_scan.record_secret(kind, value)
        self.config.write_text(json.dumps(doc, indent=2))
        self.config.chmod(0o600)

    def run(
        self,
        *argv: str,
        input: str | None = None,
        extra_env: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ncp-broker`` or ``ncp-token`` (argv[0]) as a user would, in this environment."""
        module = {"ncp-broker": "brokerd", "ncp-token": "ncp_client._cli"}[argv[0]]
        for flag, kind in (("--access-key", "access_key"), ("--client-secret", "client_secret")):
            if flag in argv[:-1] and argv[argv.index(flag) + 1] == "-":  # the secret comes on stdin
                secret_scan.record_secret(kind, input)
        done = subprocess.run(
            [sys.executable, "-m", module, *argv[1:]],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env={**self.vars, **(extra_env or {})},
            timeout=timeout,
            check=False,
        )
        if self.outputs is not None:
            # ncp-token's standard output is the token: the one place it belongs.
            stdout = "" if argv[0] == "ncp-token" else done.stdout
            self.outputs.mkdir(parents=True, exist_ok=True)
            with (self.outputs / "cli-output.txt").open("a") as out:
                out.write(f"--- {' '.join(argv[:2])} (exit {done.returncode})\n{stdout}{done.stderr}")
        return done

    def keep_for_secret_scan(self) -> None:
        """Copy this installation's logs for the session's secret scan; note the secrets in its files."""
        if self.outputs is None:
            return
        self.outputs.mkdir(parents=True, exist_ok=True)
        for folder, _, names in os.walk(self.root):
            for name in names:
                path = Path(folder, name)
                if name.endswith(".log"):
                    with contextlib.suppress(OSError):
                        shutil.copyfile(path, self.outputs / "_".join(path.relative_to(self.root).parts))
                elif path == self.config or (name.endswith(".json") and Path(folder) == self.data):
                    with contextlib.suppress(OSError, ValueError):
                        for kind, value in secret_scan.json_secrets(json.loads(path.read_text())):
                            secret_scan.record_secret(kind, value)


@pytest.fixture(scope="session", autouse=True)
def secret_hygiene() -> Iterator[None]:
    """Issue 5: no secret issued or configured during the run appears in a daemon log or a CLI output.

    $NCP_TEST_SECRETS_DIR is where oidc_server.mjs and the tests record secrets and where Env keeps its
    outputs (tests/secret_scan.py); at the end, the outputs are searched for the secrets. The directory is
    kept when a leak is found.
    """
    directory = Path(tempfile.mkdtemp(prefix="ncpb-secrets-"))
    os.environ[secret_scan.SECRETS_DIR_VAR] = str(directory)
    try:
        yield
    finally:
        del os.environ[secret_scan.SECRETS_DIR_VAR]
    if leaks := secret_scan.scan_session(directory):
        where = directory / secret_scan.OUTPUTS
        pytest.fail(
            f"whole-session scan: {secret_scan.report(leaks)}\n(outputs kept in {where})", pytrace=False
        )
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    # Unix socket paths are limited to ~107 bytes, and pytest's tmp_path is long: use a short root.
    root = Path(tempfile.mkdtemp(prefix="ncpb-"))
    e = Env(
        root=root,
        config=root / "config.json",
        socket=root / "run" / "broker.sock",
        data=root / "data",
        state=root / "state",
    )
    e.vars = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NCP_", "CLAUDE_CODE_"))},
        "NCP_BROKER_CONFIG": str(e.config),
        "NCP_BROKER_SOCK": str(e.socket),
        "NCP_BROKER_DATA": str(e.data),
        "NCP_BROKER_STATE": str(e.state),
        "NCP_BROKER_LOG_LEVEL": "debug",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if (secrets := secret_scan.secrets_dir()) is not None:
        e.outputs = secrets / secret_scan.OUTPUTS / re.sub(r"[^\w.-]+", "_", request.node.nodeid)
    try:
        yield e
    finally:
        e.keep_for_secret_scan()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Daemon:
    env: Env
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after a deadline; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_daemon(env: Env, *extra: str, log_name: str = "daemon.log") -> Daemon:
    """Start ``ncp-broker start --foreground`` and wait until its socket answers."""
    log = env.root / log_name
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "brokerd", *extra, "start", "--foreground"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env.vars,
        )
    daemon = Daemon(env, proc, log)
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return daemon  # the caller checks why (e.g. a refused config)
        if env.socket.exists() and _answers(env.socket):
            return daemon
        time.sleep(0.02)
    daemon.stop()
    raise AssertionError(f"daemon did not start within {START_DEADLINE} s:\n{daemon.log_text()}")


def _answers(sock: Path) -> bool:
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(str(sock))
        s.sendall(b'{"op":"hello"}\n')
        return s.recv(100).startswith(b"{")
    except OSError:
        return False
    finally:
        s.close()


@pytest.fixture
def daemon(env: Env) -> Iterator[Daemon]:
    """A real daemon on a private socket; the test writes the config first (or gets an empty one)."""
    if not env.config.exists():
        env.write_config({})
    d = start_daemon(env)
    assert d.proc.poll() is None, d.log_text()
    try:
        yield d
    finally:
        d.stop()

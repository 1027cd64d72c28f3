"""Shared fixtures: an isolated per-test environment and a real daemon started by PID."""

from __future__ import annotations

import json
import os
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

    def write_config(self, servers: dict[str, Any], **top: Any) -> None:
        self.config.write_text(json.dumps({"mcpServers": servers, **top}, indent=2))
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
        return subprocess.run(
            [sys.executable, "-m", module, *argv[1:]],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env={**self.vars, **(extra_env or {})},
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def env() -> Iterator[Env]:
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
    try:
        yield e
    finally:
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

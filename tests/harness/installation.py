"""One isolated broker installation (``Env``) and a real daemon started in it by PID (``Daemon``).

Every daemon logs at debug level. Its logs and the output of every ``Env.run`` are kept for the session's
secret scan (tests/secret_scan.py): at the end of the run, none of them may hold a secret issued or
configured during it. The ``env`` and ``daemon`` fixtures (tests/conftest.py) make these per test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests import secret_scan
from tests.harness.waiting import wait_until

__all__ = ["START_DEADLINE", "Daemon", "Env", "start_daemon"]

START_DEADLINE = 15.0
#: The command names a user types, and the module each one runs.
_MODULES = {"ncp-broker": "brokerd", "ncp-token": "ncp_client._cli"}


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
        """Write ``{"mcpServers": servers, **top}`` as the config file (mode 0600); its secrets are noted
        for the secret scan."""
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
        """Run ``ncp-broker`` or ``ncp-token`` (argv[0]) as a user would, in this environment.

        Raises:
            subprocess.TimeoutExpired: it ran longer than ``timeout`` seconds (it is killed).
        """
        for flag, kind in (("--access-key", "access_key"), ("--client-secret", "client_secret")):
            if flag in argv[:-1] and argv[argv.index(flag) + 1] == "-":  # the secret comes on stdin
                secret_scan.record_secret(kind, input)
        done = subprocess.run(
            [sys.executable, "-m", _MODULES[argv[0]], *argv[1:]],
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

    def spawn(
        self,
        *argv: str,
        extra_env: dict[str, str] | None = None,
        stdin: int | IO[Any] = subprocess.DEVNULL,
        stdout: int | IO[Any] = subprocess.PIPE,
    ) -> subprocess.Popen[str]:
        """Start ``ncp-broker`` or ``ncp-token`` (argv[0]) in the background, its output captured as text
        (``stdout``: a pipe, or a file to read while it runs).

        The caller waits for it (``communicate(timeout=…)``) and kills it if it is still running. Its
        output is not kept for the secret scan: check it in the test.
        """
        return subprocess.Popen(
            [sys.executable, "-m", _MODULES[argv[0]], *argv[1:]],
            env={**self.vars, **(extra_env or {})},
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )

    def status(self, *names: str) -> dict[str, Any]:
        """``ncp-broker status --json [NAME…]``, parsed (it never contains a token).

        Raises:
            AssertionError: the command failed (its stderr is the message).
        """
        out = self.run("ncp-broker", "status", "--json", *names)
        assert out.returncode == 0, out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result

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


@dataclass
class Daemon:
    """A ``ncp-broker start --foreground`` process; its stdout and stderr go to ``log``."""

    env: Env
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

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

    def kill(self) -> None:
        """SIGKILL (``kill -9``): no clean-up, no last save; returns once the process is gone."""
        self.proc.kill()
        self.proc.wait(10)


def start_daemon(env: Env, *extra: str, log_name: str = "daemon.log") -> Daemon:
    """Start ``ncp-broker [extra…] start --foreground`` and wait until its socket answers.

    Returns as soon as the daemon answers, or as soon as it has exited (the caller checks why, e.g. a
    refused config).

    Raises:
        AssertionError: it neither answered nor exited within START_DEADLINE seconds (it is stopped; the
            message holds its log).
    """
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
    try:
        wait_until(
            lambda: proc.poll() is not None or (env.socket.exists() and _answers(env.socket)),
            START_DEADLINE,
            interval=0.02,
            message=lambda: f"the daemon to answer on {env.socket}; its log:\n{daemon.log_text()}",
        )
    except AssertionError:
        daemon.stop()
        raise
    return daemon


def _answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(str(path))
        s.sendall(b'{"op":"hello"}\n')
        return s.recv(100).startswith(b"{")
    except OSError:
        return False
    finally:
        s.close()

"""Hosts for the stdio proxy's tests: the mcp SDK's stdio client, and a raw line-level host.

- ``proxy_argv(server, *flags)``: the command a host's config runs (``python -m brokerd proxy SERVER``).
- ``sdk_host(env, server, **callbacks)``: an ``mcp.Client`` over ``stdio_client`` running the proxy, as
  Claude Desktop or Cursor would run it; the proxy's stderr goes to a ``*.log`` file under the test's broker
  root, so the session's secret scan (tests/secret_scan.py) reads it.
- ``RawHost``: the proxy as a subprocess with pipes, for byte-level tests (malformed lines, oversized
  messages, closing stdin, signals): ``send`` writes a line, ``receive`` reads one (bounded), ``stderr()``
  reads what the proxy said so far.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

if TYPE_CHECKING:
    from tests.conftest import Env

__all__ = ["RawHost", "initialize_message", "proxy_argv", "sdk_host", "stderr_log"]

_serial = itertools.count(1)
PROTOCOL = "2025-06-18"


def proxy_argv(server: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "brokerd", "proxy", server, *flags]


def stderr_log(env: Env, name: str = "proxy") -> Path:
    """A fresh ``*.log`` under the broker root: kept for the secret scan with the daemon's logs."""
    return env.root / f"{name}-{next(_serial)}.log"


@contextlib.asynccontextmanager
async def sdk_host(
    env: Env,
    server: str,
    *flags: str,
    extra_env: dict[str, str] | None = None,
    log: Path | None = None,
    **client_options: Any,
) -> AsyncIterator[Client]:
    """An initialized ``mcp.Client`` whose server is ``ncp-broker proxy SERVER``."""
    argv = proxy_argv(server, *flags)
    params = StdioServerParameters(command=argv[0], args=argv[1:], env={**env.vars, **(extra_env or {})})
    path = log or stderr_log(env)
    with path.open("a") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy", **client_options) as client:
            yield client


def initialize_message(ident: Any = 0, version: str = PROTOCOL) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": ident,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "ncp-broker-tests", "version": "0"},
        },
    }


class RawHost:
    """The proxy under a host that writes and reads lines itself."""

    def __init__(self, env: Env, server: str, *flags: str, extra_env: dict[str, str] | None = None) -> None:
        self.log = stderr_log(env)
        self._err = self.log.open("ab")
        self.proc = subprocess.Popen(
            proxy_argv(server, *flags),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env={**env.vars, **(extra_env or {})},
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(b"")  # end of output

    def send(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def receive(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next message from the proxy; AssertionError at end of output or after ``timeout``."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer within {timeout} s; stderr:\n{self.stderr()}") from None
        assert line, f"the proxy closed its output; stderr:\n{self.stderr()}"
        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, ident: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a request and return the answer with its id (messages before it are skipped)."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        while True:
            answer = self.receive()
            if answer.get("id") == ident and "method" not in answer:
                return answer

    def initialize(self, version: str = PROTOCOL) -> dict[str, Any]:
        self.send(initialize_message(0, version))
        answer = self.receive()
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    def stderr(self) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.log.read_text(errors="replace")

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Close stdin, then SIGTERM, then SIGKILL: never leaves the process behind."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.close_stdin()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        self._reader.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                if pipe is not None:
                    pipe.close()
        self._err.close()

    def __enter__(self) -> RawHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

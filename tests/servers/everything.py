"""``@modelcontextprotocol/server-everything`` (npm) on loopback, for the stdio proxy's tests.

It has no ready line and takes its port from ``$PORT``, so :func:`start_everything` picks a free port,
starts ``node …/dist/index.js streamableHttp|sse`` and waits until that port accepts connections. Its
Streamable HTTP endpoint is ``/mcp`` (stateful, resumable); the HTTP+SSE (2024-11-05) one is ``/sse``. It
sends the traffic a transparent proxy must carry both ways: sampling, form and URL elicitation, roots,
logging, progress and resource updates.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.servers.fixtures import SERVERS_DIR, ensure_node_modules

__all__ = ["Everything", "start_everything"]

_ENTRY = SERVERS_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
READY_TIMEOUT = 30.0


@dataclass
class Everything:
    proc: subprocess.Popen[bytes]
    port: int
    transport: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{'mcp' if self.transport == 'streamableHttp' else 'sse'}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_everything(log_dir: Path, transport: str = "streamableHttp") -> Everything:
    """Start it; RuntimeError with its log when the port does not open within READY_TIMEOUT."""
    ensure_node_modules()
    port = _free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"everything-{transport}-{port}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["node", str(_ENTRY), transport],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env={**os.environ, "PORT": str(port)},
            start_new_session=True,
        )
    server = Everything(proc, port, transport, log)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if _accepts(port):
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(
        f"server-everything did not listen on {port}:\n{log.read_text(errors='replace')[-3000:]}"
    )

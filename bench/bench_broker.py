"""Benchmarks of the daemon and the thin client, measured side by side in one run.

    python bench/bench_broker.py [--quick]

Prints:

1. ``ncp-token SERVER`` whole-process wall time ÷ ``python3 -c pass`` (goal ≤ 2.0);
2. get_token round trips per second and p50/p99 latency, 1 and 32 concurrent clients, persistent
   connection and connect-per-request, next to a bare stdlib Unix-socket echo server (asyncio) measured
   the same way — the floor for Python;
3. the daemon's RSS with 0 and with 1,000 configured servers.

Everything runs on loopback Unix sockets in a temporary directory; every process started is stopped by
PID; every loop is bounded by a request count and a deadline.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KEY = "bench-key-0123456789abcdef"
REQUEST = b'{"op":"get_token","server":"s0"}\n'
DEADLINE = 30.0  # no single measurement runs longer than this

ECHO_SERVER = r"""
import asyncio, os, sys
async def handle(reader, writer):
    try:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    finally:
        writer.close()
async def main():
    server = await asyncio.start_unix_server(handle, sys.argv[1])
    os.write(1, b"ready\n")
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- processes ------------------------------------------------------------------------------------


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str], ready: Callable[[], bool]) -> None:
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{argv[:4]} did not start")
            time.sleep(0.02)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return -1

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def answers(sock: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(str(sock))
        s.sendall(REQUEST)
        return s.recv(4096).endswith(b"\n")
    except OSError:
        return False
    finally:
        s.close()


def start_broker(root: Path, config: dict[str, Any]) -> tuple[Proc, dict[str, str], Path]:
    """A foreground daemon for ``config`` with every path under ``root``: (process, environment, socket)."""
    root.mkdir(parents=True, exist_ok=True)
    sock = root / "run" / "broker.sock"
    path = root / "config.json"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NCP_")},
        "NCP_BROKER_CONFIG": str(path),
        "NCP_BROKER_SOCK": str(sock),
        "NCP_BROKER_DATA": str(root / "data"),
        "NCP_BROKER_STATE": str(root / "state"),
        "NCP_BROKER_LOG_LEVEL": "warning",
    }
    proc = Proc([sys.executable, "-m", "brokerd", "start", "--foreground"], env, lambda: answers(sock))
    return proc, env, sock


def start_daemon(root: Path, servers: int) -> tuple[Proc, dict[str, str]]:
    entries = {
        f"s{i}": {"url": f"https://mcp{i}.example.com/mcp", "auth": {"type": "bearer", "token": KEY}}
        for i in range(max(servers, 1))
    }
    proc, env, _ = start_broker(root, {"mcpServers": entries, "store": "file"})
    return proc, env


def start_echo(root: Path) -> tuple[Proc, Path]:
    sock = root / "echo.sock"
    proc = Proc([sys.executable, "-c", ECHO_SERVER, str(sock)], dict(os.environ), lambda: answers(sock))
    return proc, sock


# ---- 1. ncp-token start-up ------------------------------------------------------------------------


def wall(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def bench_startup(env: dict[str, str], runs: int) -> None:
    ncp_token = [sys.executable, "-m", "ncp_client._cli", "s0"]
    script = shutil.which("ncp-token")
    if script:
        ncp_token = [script, "s0"]
    baseline = [sys.executable, "-c", "pass"]
    for argv in (ncp_token, baseline):  # warm the page cache
        wall(argv, env)
    token_times, pass_times = [], []
    for _ in range(runs):  # interleaved, so drift affects both alike
        token_times.append(wall(ncp_token, env))
        pass_times.append(wall(baseline, env))
    t, p = statistics.median(token_times), statistics.median(pass_times)
    print(f"1. ncp-token start-up (median of {runs}, interleaved)")
    print(f"   ncp-token s0        {t * 1000:7.1f} ms   ({' '.join(ncp_token[:1])})")
    print(f"   python3 -c pass     {p * 1000:7.1f} ms")
    print(f"   ratio               {t / p:7.2f}   (goal <= 2.0)")


# ---- 2. round trips -------------------------------------------------------------------------------


def _worker(sock: str, persistent: bool, count: int, deadline: float, out: Any) -> None:
    latencies: list[float] = []
    conn: socket.socket | None = None
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            start = time.perf_counter()
            if conn is None:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.settimeout(10)
                conn.connect(sock)
            conn.sendall(REQUEST)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    raise ConnectionError("closed")
                buf += chunk
            if not persistent:
                conn.close()
                conn = None
            latencies.append(time.perf_counter() - start)
    finally:
        if conn is not None:
            conn.close()
    out.put(latencies)


def round_trips(sock: Path, clients: int, persistent: bool, total: int) -> tuple[float, float, float]:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    per_client = max(1, total // clients)
    deadline = time.monotonic() + DEADLINE
    procs = [
        ctx.Process(target=_worker, args=(str(sock), persistent, per_client, deadline, queue))
        for _ in range(clients)
    ]
    start = time.perf_counter()
    for p in procs:
        p.start()
    latencies: list[float] = []
    for _ in procs:
        latencies += queue.get(timeout=DEADLINE + 10)
    elapsed = time.perf_counter() - start
    for p in procs:
        p.join(10)
    return len(latencies) / elapsed, percentile(latencies, 0.5) * 1e6, percentile(latencies, 0.99) * 1e6


def bench_round_trips(daemon_sock: Path, echo_sock: Path, total: int) -> None:
    print("\n2. get_token round trips (client processes; echo = bare stdlib asyncio Unix-socket echo server)")
    header = ("clients", "connection", "server", "req/s", "p50 us", "p99 us", "÷ echo")
    print("   {:>7} {:<12} {:<8} {:>9} {:>8} {:>8} {:>7}".format(*header))
    for clients in (1, 32):
        for persistent in (True, False):
            mode = "persistent" if persistent else "per-request"
            rows = {}
            for name, sock in (("echo", echo_sock), ("broker", daemon_sock)):
                rows[name] = round_trips(sock, clients, persistent, total)
            for name in ("echo", "broker"):
                rate, p50, p99 = rows[name]
                ratio = "" if name == "echo" else f"{rate / rows['echo'][0]:7.2f}"
                print(f"   {clients:>7} {mode:<12} {name:<8} {rate:9.0f} {p50:8.0f} {p99:8.0f} {ratio:>7}")


# ---- 3. memory ------------------------------------------------------------------------------------


def bench_memory(root: Path) -> None:
    print("\n3. daemon RSS")
    results = {}
    for servers in (1, 1000):
        proc, _env = start_daemon(root / f"mem{servers}", servers)
        try:
            results[servers] = proc.rss_kib()
        finally:
            proc.stop()
    for servers, kib in results.items():
        print(f"   {servers:>5} servers   {kib / 1024:7.1f} MiB")
    print(f"   ratio 1000/1     {results[1000] / results[1]:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs (for a smoke test)")
    args = parser.parse_args()
    runs, total = (5, 500) if args.quick else (30, 20000)
    print(
        f"ncp-broker benchmarks — {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}\n"
    )
    root = Path(tempfile.mkdtemp(prefix="ncpb-bench-"))
    procs: list[Proc] = []
    try:
        daemon, env = start_daemon(root / "main", 1)
        procs.append(daemon)
        echo, echo_sock = start_echo(root)
        procs.append(echo)
        bench_startup(env, runs)
        bench_round_trips(Path(env["NCP_BROKER_SOCK"]), echo_sock, total)
        bench_memory(root)
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

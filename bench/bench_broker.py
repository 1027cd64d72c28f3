"""Benchmarks of the daemon and the thin client, measured side by side in one run.

    python bench/bench_broker.py [--quick] [--rounds N] [--venv DIR] [--baseline [NAME=]REF_OR_DIR ...]

Prints:

1. ``ncp-token SERVER`` whole-process wall time next to ``python -c pass`` of the same interpreter, from a
   *regular* (non-editable) install in a fresh venv, with pip upgraded so that its console-script wrapper
   is the current one — an editable install adds an import hook to every start, and pyenv's global
   interpreter loads its own site-packages, so either slows the floor and flatters the ratio. The bench
   builds that venv (``python -m venv``, ``pip install -U pip``, ``pip install .``) in a temporary
   directory, or in ``--venv DIR`` to reuse it (this checkout is reinstalled into it each run). The same
   entry point is also timed behind the wrapper pip < 25 generates (it imports ``re``, which we do not
   control), and the modules the ``ncp-token`` path loads beyond the bare interpreter are listed;
2. round trips per second and p50/p99 latency with 1 and 32 client processes, in three ways of using a
   connection: a new one per request (``per-request``: most non-Python clients), a new one per request
   whose client shuts down its sending side after the request (``half-close``: ``ncp-token`` and
   ``ncp_client``), and one connection for all requests (``persistent``: BrokerAuth, a proxy). Each is
   measured against two bare stdlib echo servers speaking the same framing: ``echo-sel``, a ``selectors``
   loop that accepts, reads and answers in one pass (the ceiling for a Python server on this machine),
   and ``echo-aio``, asyncio's ``start_unix_server`` (a typical Python server). ``--baseline`` adds the
   daemon of another git ref (or source directory) to the same table, so a change is measured against
   what it replaces in one run. Rounds are interleaved and the median is printed;
3. the daemon's RSS with 1 and with 1,000 configured servers.

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

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key-0123456789abcdef"
REQUEST = b'{"op":"get_token","server":"s0"}\n'
DEADLINE = 30.0  # no single measurement runs longer than this

ECHO_ASYNCIO = r"""
import asyncio, sys
async def handle(reader, writer):
    try:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    finally:
        writer.close()
async def main():
    server = await asyncio.start_unix_server(handle, sys.argv[1])
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""

# Accepts every pending connection, reads and answers what is there at once, and registers a connection
# with the selector only when it has to wait: the least work a Python server can do per connection.
ECHO_SELECTORS = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
listener.listen(1024)
listener.setblocking(False)
sel.register(listener, selectors.EVENT_READ)
pending = {}
def serve(conn):
    buf = pending.pop(conn, b"")
    while True:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            pending[conn] = buf
            return True
        except OSError:
            data = b""
        if not data:
            return False
        buf += data
        end = buf.rfind(b"\n") + 1
        if end:
            conn.sendall(buf[:end])
            buf = buf[end:]
while True:
    for key, _ in sel.select():
        if key.fileobj is listener:
            while True:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    break
                conn.setblocking(False)
                if serve(conn):
                    sel.register(conn, selectors.EVENT_READ)
                else:
                    conn.close()
        elif not serve(key.fileobj):
            sel.unregister(key.fileobj)
            pending.pop(key.fileobj, None)
            key.fileobj.close()
"""

# pip < 25 wraps every console script in this (pip >= 25, pipx and uv no longer import re).
LEGACY_WRAPPER = """\
# -*- coding: utf-8 -*-
import re
import sys
from ncp_client._cli import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- processes ------------------------------------------------------------------------------------


class Proc:
    def __init__(
        self, argv: list[str], env: dict[str, str], ready: Callable[[], bool], cwd: Path | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{argv[:4]} did not start")
            time.sleep(0.02)

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds this process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / ticks, int(fields[12]) / ticks

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


def start_broker(
    root: Path, config: dict[str, Any], source: Path | None = None
) -> tuple[Proc, dict[str, str], Path]:
    """A foreground daemon for ``config`` with every path under ``root``: (process, environment, socket).

    ``source``: run the daemon from that source tree (an older checkout) instead of the installed one.
    """
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
    daemon_env = dict(env)
    if source is not None:
        daemon_env["PYTHONPATH"] = os.pathsep.join([str(source), str(source / "client")])
    argv = [sys.executable, "-m", "brokerd", "start", "--foreground"]
    # cwd=root: `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH
    proc = Proc(argv, daemon_env, lambda: answers(sock), cwd=root)
    return proc, env, sock


def start_daemon(root: Path, servers: int, source: Path | None = None) -> tuple[Proc, dict[str, str]]:
    entries = {
        f"s{i}": {"url": f"https://mcp{i}.example.com/mcp", "auth": {"type": "bearer", "token": KEY}}
        for i in range(max(servers, 1))
    }
    proc, env, _ = start_broker(root, {"mcpServers": entries, "store": "file"}, source)
    return proc, env


def start_echo(root: Path, name: str, code: str) -> tuple[Proc, Path]:
    sock = root / f"{name}.sock"
    proc = Proc([sys.executable, "-c", code, str(sock)], dict(os.environ), lambda: answers(sock))
    return proc, sock


def baseline_source(spec: str, scratch: Path) -> Path:
    """A source tree for ``spec``: a directory as it is, else a git ref of this repository, exported."""
    if Path(spec).is_dir():
        return Path(spec).resolve()
    target = scratch / f"baseline-{len(list(scratch.glob('baseline-*')))}"
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", spec], capture_output=True, check=True, timeout=60
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True, timeout=60)
    return target


# ---- 1. ncp-token start-up ------------------------------------------------------------------------


def regular_install(venv: Path) -> Path:
    """``venv`` (created if missing) with this checkout installed the way users get it; its python."""
    python = venv / "bin" / "python"

    def run(*argv: str | Path) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, argv))} failed:\n{done.stderr}")

    if not python.exists():
        run(sys.executable, "-m", "venv", venv)
        run(python, "-m", "pip", "install", "-q", "--upgrade", "pip")
        run(python, "-m", "pip", "install", "-q", ROOT)
    else:
        run(python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", ROOT)
    return python


def wall(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


PATH_MODULES = (
    "import sys; before = set(sys.modules); from ncp_client import _cli; "
    "print(' '.join(sorted(m for m in set(sys.modules) - before if not m.startswith('ncp_client'))))"
)


def bench_startup(python: Path, env: dict[str, str], runs: int) -> None:
    bindir = python.parent
    legacy = bindir / "ncp-token-pip24-wrapper"
    legacy.write_text(f"#!{python}\n{LEGACY_WRAPPER}")
    legacy.chmod(0o755)
    pip = subprocess.run(
        [python, "-m", "pip", "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    rows = {
        "python -c pass": [str(python), "-c", "pass"],
        "import ncp_client._cli (no request)": [str(python), "-c", "import ncp_client._cli"],
        f"ncp-token s0 (pip {pip} wrapper)": [str(bindir / "ncp-token"), "s0"],
        "ncp-token s0 (pip < 25 wrapper)": [str(legacy), "s0"],
    }
    for argv in rows.values():  # warm the page cache, and fail loudly if one does not work
        wall(argv, env)
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(runs):  # interleaved, so drift affects all alike
        for name, argv in rows.items():
            times[name].append(wall(argv, env))
    floor = statistics.median(times["python -c pass"])
    print(f"1. ncp-token start-up (median of {runs}, interleaved; regular install in {bindir.parent})")
    for name, values in times.items():
        t = statistics.median(values)
        print(f"   {name:<36} {t * 1000:6.1f} ms   {t / floor:5.2f} x floor")
    modules = subprocess.run([python, "-c", PATH_MODULES], capture_output=True, text=True, check=True)
    print(f"   modules the ncp-token path adds: {modules.stdout.strip() or '(none)'}")
    print("   goal: ncp-token <= 1.3 x floor with the current wrapper")


# ---- 2. round trips -------------------------------------------------------------------------------


def _worker(sock: str, mode: str, count: int, deadline: float, out: Any) -> None:
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
            if mode == "half-close":
                conn.shutdown(socket.SHUT_WR)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    raise ConnectionError("closed")
                buf += chunk
            if mode != "persistent":
                conn.close()
                conn = None
            latencies.append(time.perf_counter() - start)
    finally:
        if conn is not None:
            conn.close()
    out.put(latencies)


def round_trips(sock: Path, clients: int, mode: str, total: int) -> tuple[float, float, float]:
    """(requests per second, p50 µs, p99 µs) of ``total`` requests from ``clients`` processes."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    per_client = max(1, total // clients)
    deadline = time.monotonic() + DEADLINE
    procs = [
        ctx.Process(target=_worker, args=(str(sock), mode, per_client, deadline, queue))
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


Result = tuple[float, float, float, float, float]  # req/s, p50 µs, p99 µs, server user µs/req, sys µs/req


def measured(server: Proc, sock: Path, clients: int, mode: str, total: int) -> Result:
    """round_trips, with the server's own CPU time per request (user = Python, system = the kernel)."""
    user0, sys0 = server.cpu_seconds()
    start = time.perf_counter()
    rate, p50, p99 = round_trips(sock, clients, mode, total)
    count = rate * (time.perf_counter() - start)  # about: round_trips' own clock starts a little later
    user1, sys1 = server.cpu_seconds()
    return rate, p50, p99, (user1 - user0) / count * 1e6, (sys1 - sys0) / count * 1e6


def bench_round_trips(servers: dict[str, tuple[Proc, Path]], total: int, rounds: int) -> None:
    print(
        f"\n2. get_token round trips (client processes; median of {rounds} interleaved rounds; "
        "echo-sel = stdlib selectors echo, the ceiling;\n   cpu = the server's user+system CPU µs "
        "per request, clock ticks of 10 ms: rough below a few thousand requests)"
    )
    header = ("clients", "connection", "server", "req/s", "p50 us", "p99 us", "cpu usr+sys", "÷ ceiling")
    print("   {:>7} {:<12} {:<14} {:>8} {:>7} {:>7} {:>12} {:>9}".format(*header))
    for clients in (1, 32):
        for mode in ("per-request", "half-close", "persistent"):
            runs: dict[str, list[Result]] = {name: [] for name in servers}
            for _ in range(rounds):
                for name, (proc, sock) in servers.items():
                    runs[name].append(measured(proc, sock, clients, mode, total))
            ceiling = statistics.median(r[0] for r in runs["echo-sel"])
            for name, results in runs.items():
                rate, p50, p99, user, system = (statistics.median(r[i] for r in results) for i in range(5))
                cpu = f"{user:.0f}+{system:.0f}"
                print(
                    f"   {clients:>7} {mode:<12} {name:<14} {rate:8.0f} {p50:7.0f} {p99:7.0f} {cpu:>12} "
                    f"{rate / ceiling:9.2f}"
                )


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
    parser.add_argument("--rounds", type=int, help="interleaved rounds per round-trip figure (default 3)")
    parser.add_argument("--venv", type=Path, help="build (or reuse) the regular-install venv here")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="[NAME=]REF_OR_DIR",
        help="also measure the daemon of this git ref or source tree, as NAME (repeatable)",
    )
    parser.add_argument(
        "--only", choices=("startup", "round-trips", "memory"), action="append", help="run only these"
    )
    args = parser.parse_args()
    runs, total, rounds = (5, 500, 1) if args.quick else (40, 20000, 3)
    rounds = args.rounds or rounds
    only = set(args.only or ("startup", "round-trips", "memory"))
    print(
        f"ncp-broker benchmarks — {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(
        "load average at start: {:.1f} {:.1f} {:.1f} (other work on the machine)\n".format(*os.getloadavg())
    )
    root = Path(tempfile.mkdtemp(prefix="ncpb-bench-"))
    procs: list[Proc] = []
    try:
        daemon, env = start_daemon(root / "main", 1)
        procs.append(daemon)
        if "startup" in only:
            bench_startup(regular_install(args.venv or root / "venv"), env, runs)
        if "round-trips" in only:
            servers: dict[str, tuple[Proc, Path]] = {}
            for name, code in (("echo-sel", ECHO_SELECTORS), ("echo-aio", ECHO_ASYNCIO)):
                proc, sock = start_echo(root, name, code)
                procs.append(proc)
                servers[name] = proc, sock
            for i, spec in enumerate(args.baseline):
                name, _, ref = spec.rpartition("=")
                proc, benv = start_daemon(root / f"baseline{i}", 1, baseline_source(ref, root))
                procs.append(proc)
                servers[name or f"broker@{ref[:7]}"] = proc, Path(benv["NCP_BROKER_SOCK"])
            servers["broker"] = daemon, Path(env["NCP_BROKER_SOCK"])
            bench_round_trips(servers, total, rounds)
        if "memory" in only:
            bench_memory(root)
        print("\nload average at end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: ``ncp-broker proxy`` beside the same host speaking HTTP directly and beside npm's mcp-remote.

    python bench/bench_proxy.py [--calls 300] [--runs 5] [--copies 3] [--duration 30]

Prints, measured side by side in one run against the same servers (oidc-provider with strict rotation and
the mcp SDK's streamable HTTP server, on loopback):

1. import cost of the two transport designs: ``ncp_client.proxy`` (httpx, httpx-sse, trio) and the mcp
   SDK's client transports (``mcp.client.streamable_http`` + ``mcp.client.sse``), over a bare interpreter;
2. start to the first ``tools/list`` answer (spawn, ``initialize``, ``notifications/initialized``,
   ``tools/list``), median of ``--runs``: the proxy, and mcp-remote with its tokens already on disk;
3. p50/p99 per ``tools/call`` (``echo``) over ``--calls`` sequential calls, the host being the mcp SDK's
   ``Client`` each time: over its own Streamable HTTP transport (with ``broker_auth_for_httpx2``: the daemon
   is asked per request there too), over stdio through the proxy, and over stdio through mcp-remote; the
   added latency is each minus the first;
   and again for a host with no MCP library (3b): httpx's async client under trio with one token against
   lines on pipes through the proxy, which bounds the proxy's own cost (the hop over pipes, its parsing,
   a ``get_token`` per request, its HTTP) from above;
4. resident memory of one proxy process and of one mcp-remote process after those calls;
5. ``--copies`` copies of each sharing one grant (3-second tokens, strict rotation) for ``--duration``
   seconds, every copy calling a tool every 0.2 s: refreshes and refresh points due, replays, revoked grants
   and logins at the authorization server, and the calls the hosts saw fail. The proxies share the daemon's
   grant; the mcp-remote copies share one ``MCP_REMOTE_CONFIG_DIR``, as copies on one machine share
   ``~/.mcp-auth``.

mcp-remote logs in through a browser: it opens the URL with the ``open`` package's bundled ``xdg-open``,
which runs ``$BROWSER``, so the fixtures' HTTP browser driver (tests/servers/browser_http.py) logs it in
without a person. Every process is stopped by PID; every loop has a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.servers and bench.bench_broker when run as a script

from bench.bench_broker import percentile, start_broker  # noqa: E402
from tests.servers.fixtures import (  # noqa: E402
    SERVERS_DIR,
    McpServer,
    OidcServer,
    make_browser_env,
    start_mcp_server,
    start_oidc_server,
)

NAME = "srv"
MCP_REMOTE = SERVERS_DIR / "node_modules" / "mcp-remote" / "dist" / "proxy.js"
PROTOCOL = "2025-06-18"
TTL = 3
REFRESH_FRACTION = 2 / 3  # brokerd/schedule.py
ANSWER_TIMEOUT = 60.0
LOGIN_TIMEOUT = 120.0


# ---- a host that speaks lines on pipes ----------------------------------------------------------------


class PipeHost:
    """A stdio MCP server process driven line by line (the proxy, or mcp-remote)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self._err = log.open("ab")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, env=env
        )
        self._buffer = b""
        self._next_id = 1

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def _line(self, deadline: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no answer in time")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("the server closed its output")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        ident = self._next_id
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while True:
            answer: dict[str, Any] = json.loads(self._line(deadline))
            if answer.get("id") == ident and "method" not in answer:
                return answer

    def initialize(self) -> None:
        params = {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"},
        }
        answer = self.request("initialize", params)
        if "result" not in answer:
            raise RuntimeError(f"initialize failed: {answer}")
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return -1

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()


def proxy_argv() -> list[str]:
    return [sys.executable, "-m", "brokerd", "proxy", NAME]


def remote_argv(url: str) -> list[str]:
    return [shutil.which("node") or "node", str(MCP_REMOTE), url, "--allow-http"]


def call_echo(host: PipeHost, i: int) -> bool:
    answer = host.request("tools/call", {"name": "echo", "arguments": {"text": f"call {i}"}})
    return "result" in answer and not answer["result"].get("isError")


# ---- set-up -----------------------------------------------------------------------------------------


class Site:
    """One authorization server, one MCP server, one daemon logged in, one mcp-remote config dir."""

    def __init__(self, root: Path, name: str, ttl: int) -> None:
        self.root = root / name
        self.root.mkdir(parents=True)
        self.logs = self.root / "logs"
        self.oidc: OidcServer = start_oidc_server(self.logs, "oidc", access_token_ttl=ttl)
        self.mcp: McpServer = start_mcp_server(self.logs, "mcp", self.oidc)
        auth = {"type": "oauth", "oauth21": {}, "allowInsecureLoopback": True}
        self.daemon, self.env, self.sock = start_broker(
            self.root / "broker", {"mcpServers": {NAME: {"url": self.mcp.url, "auth": auth}}, "store": "file"}
        )
        self.browser = make_browser_env(self.root / "browser", "driver")
        self.remote_env = {**os.environ, **self.browser, "MCP_REMOTE_CONFIG_DIR": str(self.root / "mcp-auth")}
        self._serial = 0

    def log(self, what: str) -> Path:
        self._serial += 1
        return self.logs / f"{what}-{self._serial}.log"

    def log_in_broker(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "brokerd", "login", NAME],
            env={**self.env, **self.browser},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=LOGIN_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ncp-broker login failed: {done.stderr[-2000:]}")

    def log_in_remote(self) -> None:
        """mcp-remote's own first run: its browser login (driven by $BROWSER), tokens to its config dir."""
        host = PipeHost(remote_argv(self.mcp.url), self.remote_env, self.log("mcp-remote-login"))
        try:
            host.initialize()
            host.request("tools/list")
        finally:
            host.stop()

    def proxy(self) -> PipeHost:
        return PipeHost(proxy_argv(), self.env, self.log("proxy"))

    def remote(self) -> PipeHost:
        return PipeHost(remote_argv(self.mcp.url), self.remote_env, self.log("mcp-remote"))

    def stop(self) -> None:
        self.daemon.stop()
        self.mcp.stop()
        self.oidc.stop()


# ---- 1. import cost ---------------------------------------------------------------------------------


def _wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def bench_imports(runs: int) -> None:
    cases = {
        "bare interpreter": "pass",
        "ncp_client.proxy (httpx, httpx-sse, trio)": "import ncp_client.proxy._run",
        "mcp SDK client transports": "import mcp.client.streamable_http, mcp.client.sse",
    }
    times = {
        name: statistics.median(_wall([sys.executable, "-c", code]) for _ in range(runs))
        for name, code in cases.items()
    }
    bare = times["bare interpreter"]
    print("\n1. import cost (median of", runs, "runs)")
    for name, seconds in times.items():
        extra = "" if name == "bare interpreter" else f"   +{(seconds - bare) * 1000:.0f} ms"
        print(f"   {name:<45} {seconds * 1000:7.0f} ms{extra}")
    sdk = times["mcp SDK client transports"] - bare
    ours = times["ncp_client.proxy (httpx, httpx-sse, trio)"] - bare
    print(f"   SDK transports / ncp_client.proxy (over the interpreter): {sdk / ours:.1f}x")


# ---- 2. start-up --------------------------------------------------------------------------------------


def _first_list(host: PipeHost) -> float:
    host.initialize()
    answer = host.request("tools/list")
    if "result" not in answer:
        raise RuntimeError(f"tools/list failed: {answer}")
    return time.perf_counter() - host.started


def bench_startup(site: Site, runs: int) -> None:
    results: dict[str, list[float]] = {"ncp-broker proxy": [], "mcp-remote": []}
    for _ in range(runs):
        for name, make in (("ncp-broker proxy", site.proxy), ("mcp-remote", site.remote)):
            host = make()
            try:
                results[name].append(_first_list(host))
            finally:
                host.stop()
    print(f"\n2. start to the first tools/list answer (median of {runs} runs; both already logged in)")
    for name, values in results.items():
        print(f"   {name:<18} {statistics.median(values) * 1000:7.0f} ms   (min {min(values) * 1000:.0f})")
    ratio = statistics.median(results["mcp-remote"]) / statistics.median(results["ncp-broker proxy"])
    print(f"   mcp-remote / proxy: {ratio:.1f}x")


# ---- 3, 4. per-call overhead and memory -------------------------------------------------------------


async def _sdk_calls(make_client: Any, calls: int) -> list[float]:
    async with make_client() as client:
        for i in range(10):  # warm-up
            await client.call_tool("echo", {"text": f"warm {i}"})
        times = []
        for i in range(calls):
            start = time.perf_counter()
            result = await client.call_tool("echo", {"text": f"call {i}"})
            times.append(time.perf_counter() - start)
            if result.is_error:
                raise RuntimeError("a tools/call failed")
    return times


def _rss_of_child(command: str) -> int:
    """VmRSS of this process's child whose command line starts with ``command`` (the stdio server)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            cmdline = (status.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PPid:\t{os.getpid()}\n" in text and command.encode() in b" ".join(cmdline):
            return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS:"))
    return -1


async def _raw_http_calls(site: Site, calls: int) -> list[float]:
    """The raw host's own HTTP: httpx's async client under trio, the token asked for once (a lower bound:
    the proxy asks the daemon for each request), done at the answer's event, as MCP clients are."""
    import httpx

    import ncp_client

    token = ncp_client.get_token(NAME, socket_path=site.sock)
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
    }

    async def post(http: httpx.AsyncClient, message: dict[str, Any]) -> dict[str, Any]:
        async with http.stream("POST", site.mcp.url, json=message, headers=headers) as response:
            if "mcp-session-id" in response.headers:
                headers["Mcp-Session-Id"] = response.headers["mcp-session-id"]
            if response.status_code == 202:
                return {}
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                answer: dict[str, Any] = json.loads(await response.aread())
                return answer
            async for line in response.aiter_lines():
                if line.startswith("data:") and line[5:].strip():
                    event: dict[str, Any] = json.loads(line[5:])
                    return event
        raise RuntimeError("the SSE answer ended without an event")

    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        params = {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"},
        }
        await post(http, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
        headers["MCP-Protocol-Version"] = PROTOCOL
        await post(http, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        times = []
        for i in range(calls + 10):
            call = {"name": "echo", "arguments": {"text": f"call {i}"}}
            start = time.perf_counter()
            answer = await post(http, {"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": call})
            if i >= 10:  # the first ten warm up
                times.append(time.perf_counter() - start)
            if "result" not in answer:
                raise RuntimeError(f"a tools/call failed: {answer}")
    return times


def bench_raw_calls(site: Site, calls: int) -> None:
    """A host with no MCP library: its own HTTP client, or lines on pipes through the proxy."""
    import trio

    direct = trio.run(_raw_http_calls, site, calls)
    host = site.proxy()
    try:
        piped = _piped_calls(host, calls)
    finally:
        host.stop()
    d50, d99 = percentile(direct, 0.5), percentile(direct, 0.99)
    p50, p99 = percentile(piped, 0.5), percentile(piped, 0.99)
    print(f"\n3b. the same per-call figure for a host with no MCP library, {calls} calls")
    print(f"   direct (httpx async, one token)    {d50 * 1000:6.2f} / {d99 * 1000:6.2f} ms")
    print(
        f"   lines through ncp-broker proxy     {p50 * 1000:6.2f} / {p99 * 1000:6.2f} ms"
        f"   added {(p50 - d50) * 1000:+.2f} / {(p99 - d99) * 1000:+.2f} ms"
    )


def _piped_calls(host: PipeHost, calls: int) -> list[float]:
    host.initialize()
    for i in range(10):
        call_echo(host, i)
    times = []
    for i in range(calls):
        start = time.perf_counter()
        if not call_echo(host, i):
            raise RuntimeError("a tools/call failed")
        times.append(time.perf_counter() - start)
    return times


def bench_calls(site: Site, calls: int) -> None:
    """The mcp SDK's Client as the host each time: over its own HTTP transport, or over stdio to a bridge."""
    import contextlib

    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client

    import ncp_client

    rss: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def direct() -> Any:
        auth = ncp_client.broker_auth_for_httpx2(NAME, socket_path=site.sock)
        async with (
            httpx2.AsyncClient(auth=auth, timeout=30) as http,
            Client(streamable_http_client(site.mcp.url, http_client=http), mode="legacy") as client,
        ):
            yield client

    def over_stdio(argv: list[str], env: dict[str, str], name: str) -> Any:
        @contextlib.asynccontextmanager
        async def make() -> Any:
            params = StdioServerParameters(command=argv[0], args=argv[1:], env=env)
            with site.log(name).open("w") as errlog:
                async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
                    yield client
                    rss[name] = _rss_of_child(argv[1] if name == "mcp-remote" else "brokerd")

        return make

    results = {
        "direct (its HTTP transport)": anyio.run(_sdk_calls, direct, calls),
        "ncp-broker proxy": anyio.run(
            _sdk_calls, over_stdio(proxy_argv(), site.env, "ncp-broker proxy"), calls
        ),
        "mcp-remote": anyio.run(
            _sdk_calls, over_stdio(remote_argv(site.mcp.url), site.remote_env, "mcp-remote"), calls
        ),
    }
    base = results["direct (its HTTP transport)"]
    d50, d99 = percentile(base, 0.5), percentile(base, 0.99)
    print(f"\n3. per tools/call from the mcp SDK's Client, {calls} sequential calls of echo")
    print("   (p50 / p99; added = minus the same host over its own HTTP transport)")
    for name, values in results.items():
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        added = "" if values is base else f"   added {(p50 - d50) * 1000:+.2f} / {(p99 - d99) * 1000:+.2f} ms"
        print(f"   {name:<28} {p50 * 1000:6.2f} / {p99 * 1000:6.2f} ms{added}")
    print("\n4. resident memory of the stdio server process after those calls")
    for name, kib in rss.items():
        print(f"   {name:<18} {kib / 1024:6.1f} MiB")


# ---- 5. copies sharing one grant ----------------------------------------------------------------------


def _loop(host: PipeHost, until: float, out: dict[str, int]) -> None:
    i = 0
    try:
        host.initialize()
    except (TimeoutError, EOFError, RuntimeError, ValueError):
        out["failed"] += 1
        return
    while time.monotonic() < until:
        i += 1
        try:
            ok = call_echo(host, i)
        except (TimeoutError, EOFError, ValueError):
            ok = False
        out["calls"] += 1
        out["failed"] += 0 if ok else 1
        time.sleep(0.2)


def _share(site: Site, make: Any, copies: int, duration: float) -> dict[str, Any]:
    site.oidc.reset_stats()
    hosts = [make() for _ in range(copies)]
    counts = [{"calls": 0, "failed": 0} for _ in hosts]
    started = time.monotonic()
    until = started + duration
    threads = [
        threading.Thread(target=_loop, args=(host, until, count), daemon=True)
        for host, count in zip(hosts, counts, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + ANSWER_TIMEOUT)
    elapsed = time.monotonic() - started
    for host in hosts:
        host.stop()
    stats = site.oidc.stats()
    return {
        "calls": sum(c["calls"] for c in counts),
        "failed": sum(c["failed"] for c in counts),
        "refreshes": stats["token_requests"].get("refresh_token", 0),
        "refresh_ok": stats["token_success"].get("refresh_token", 0),
        "due": elapsed / (TTL * REFRESH_FRACTION),
        "replays": stats["replay_detected"],
        "revoked": stats["grants_revoked"],
        "logins": stats["token_requests"].get("authorization_code", 0),
        "errors": stats["token_errors"],
    }


def bench_sharing(site: Site, copies: int, duration: float) -> None:
    rows = {
        "ncp-broker proxy": _share(site, site.proxy, copies, duration),
        "mcp-remote": _share(site, site.remote, copies, duration),
    }
    print(f"\n5. {copies} copies sharing one grant for {duration:g} s ({TTL} s tokens, strict rotation)")
    print("   (refreshes: sent / succeeded; due: refresh points in that time at 2/3 of the lifetime)")
    for name, r in rows.items():
        print(
            f"   {name:<18} calls {r['calls']:4}  failed {r['failed']:3}  refreshes {r['refreshes']:3} / "
            f"{r['refresh_ok']:3}  due {r['due']:5.1f}  replays {r['replays']}  "
            f"revoked grants {r['revoked']}  "
            f"new logins {r['logins']}  token errors {r['errors'] or '-'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()
    if not MCP_REMOTE.exists() or shutil.which("node") is None:
        sys.exit("bench_proxy: needs node and tests/servers/node_modules (bash tests/servers/install.sh)")
    print(
        f"bench_proxy: {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores"
    )
    bench_imports(args.runs * 2)
    root = Path(tempfile.mkdtemp(prefix="ncpb-bench-proxy-"))
    sites: list[Site] = []
    try:
        fast = Site(root, "long-tokens", ttl=3600)
        sites.append(fast)
        fast.log_in_broker()
        fast.log_in_remote()
        bench_startup(fast, args.runs)
        bench_calls(fast, args.calls)
        bench_raw_calls(fast, args.calls)
        shared = Site(root, "rotating", ttl=TTL)
        sites.append(shared)
        shared.log_in_broker()
        shared.log_in_remote()
        bench_sharing(shared, args.copies, args.duration)
    finally:
        for site in sites:
            site.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: one refresh chain per server under load, against the real oidc-provider (3-second tokens).

    python bench/bench_refresh.py [--duration SECONDS] [--pace SECONDS] [--clients 1,10,100]

Prints, for N = 1, 10 and 100 client processes sending ``get_token`` requests (``ncp_client``) for
``--duration`` seconds (default 60), each pausing between 0 and twice ``--pace`` seconds between calls:

1. refreshes seen by the authorization server ÷ the refresh points due in that time (elapsed ÷ (2/3 of
   the 3 s lifetime), the schedule of DESIGN.md rule 9; goal 1.0), the same ÷ token lifetimes elapsed
   (1.5 by that design), replays and revoked grants (goal 0), client errors, including answers whose
   ``expires_in`` is 0 (goal 0);
2. p50/p99 ``get_token`` latency of calls in flight while the server rotated the token (its
   ``refresh_token.consumed`` event) and of all other calls;
3. with server A's token endpoint stalled for 15 s (10 clients on A), p99 ``get_token`` latency of 10
   clients of server B, which has its own authorization server (goal < 50 ms).

Everything listens on loopback: two oidc-provider processes and two MCP servers started with the test
fixtures' functions (tests/servers/fixtures.py), one daemon, logins through the fixtures' HTTP browser
driver. Every process is stopped by PID; every loop is bounded by a deadline.
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.servers and bench.bench_broker when run as a script

from bench.bench_broker import Proc, percentile, start_broker  # noqa: E402

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

    from tests.servers.fixtures import McpServer, OidcServer

TTL = 3  # access-token lifetime, seconds
REFRESH_FRACTION = 2 / 3  # brokerd/renewal.py: refresh at two thirds of the issued lifetime
STALL = 15.0  # seconds server A's token endpoint is held in part 3
CALL_TIMEOUT = 5.0  # the thin client's default
LOGIN_TIMEOUT = 120.0

Record = tuple[float, float, bool]  # wall-clock start, latency in seconds, answered with a token


# ---- clients (forked processes) ---------------------------------------------------------------------------


def _client(
    *, sock: str, server: str, start_at: float, until: float, pace: float, seed: int, out: Queue[Any]
) -> None:
    import ncp_client

    rng = random.Random(seed)  # noqa: S311 - pacing, not a secret
    records: list[Record] = []
    errors: Counter[str] = Counter()
    while time.time() < start_at:
        time.sleep(0.005)
    while time.time() < until:
        wall, start = time.time(), time.perf_counter()
        try:
            # get_token's request, read raw for its expires_in: a token past its expiry is an error too
            result = ncp_client.call(
                {"op": "get_token", "server": server}, socket_path=sock, timeout=CALL_TIMEOUT
            )
            left = result.get("expires_in")  # None: the token has no expiry
            ok = isinstance(result.get("token"), str) and (left is None or left > 0)
            if not ok:
                errors["expired token"] += 1
        except ncp_client.BrokerError as exc:
            errors[f"{type(exc).__name__}({exc.code})"] += 1
            ok = False
        records.append((wall, time.perf_counter() - start, ok))
        time.sleep(rng.uniform(0, 2 * pace))
    out.put((server, records, dict(errors)))


def run_clients(
    sock: Path, plan: dict[str, int], duration: float, pace: float
) -> tuple[float, float, dict[str, list[Record]], dict[str, Counter[str]]]:
    """``plan[server]`` client processes per server, all starting together; returns the window (wall
    clock), the records and the errors per server."""
    ctx = multiprocessing.get_context("fork")
    queue: Queue[Any] = ctx.Queue()
    total = sum(plan.values())
    start_at = time.time() + 1.0 + total * 0.02  # forking 100 processes takes a while on two CPUs
    until = start_at + duration
    procs = [
        ctx.Process(
            target=_client,
            kwargs={
                "sock": str(sock),
                "server": server,
                "start_at": start_at,
                "until": until,
                "pace": pace,
                "seed": n * 7919 + i,
                "out": queue,
            },
        )
        for n, (server, count) in enumerate(plan.items())
        for i in range(count)
    ]
    for p in procs:
        p.start()
    records: dict[str, list[Record]] = {server: [] for server in plan}
    errors: dict[str, Counter[str]] = {server: Counter() for server in plan}
    try:
        for _ in procs:
            server, got, errs = queue.get(timeout=until - time.time() + CALL_TIMEOUT + 30)
            records[server] += got
            errors[server].update(errs)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
    return start_at, until, records, errors


# ---- set-up -----------------------------------------------------------------------------------------------


def start_servers(logs: Path, name: str) -> tuple[OidcServer, McpServer]:
    from tests.servers.fixtures import start_mcp_server, start_oidc_server

    oidc = start_oidc_server(logs, f"oidc-{name}", access_token_ttl=TTL)
    return oidc, start_mcp_server(logs, f"mcp-{name}", oidc, json_response=True)


def start_daemon(root: Path, servers: dict[str, McpServer]) -> tuple[Proc, dict[str, str], Path]:
    entries = {
        name: {"url": mcp.url, "auth": {"type": "oauth", "oauth21": {}, "allowInsecureLoopback": True}}
        for name, mcp in servers.items()
    }
    return start_broker(root, {"mcpServers": entries})


def log_in(root: Path, env: dict[str, str], name: str) -> None:
    from tests.servers.fixtures import make_browser_env

    browser = make_browser_env(root / "browser", f"browser-{name}")
    done = subprocess.run(
        [sys.executable, "-m", "brokerd", "login", name],
        env={**env, **browser},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=LOGIN_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"login to {name} failed: {done.stderr[-2000:]}")


# ---- reports ----------------------------------------------------------------------------------------------


def rotations(oidc: OidcServer, start: float, end: float) -> list[float]:
    """When the server rotated a refresh token (wall clock), within [start, end]."""
    return sorted(
        float(e["t"])
        for e in oidc.events()
        if e["event"] == "refresh_token.consumed" and start <= e["t"] <= end
    )


def in_flight(record: Record, moments: list[float]) -> bool:
    """Whether the call was in flight at one of ``moments`` (sorted)."""
    start, latency, _ = record
    i = bisect.bisect_left(moments, start)
    return i < len(moments) and moments[i] <= start + latency


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:8.2f}" if values else "       -"


def bench_chain(sock: Path, oidc: OidcServer, clients: list[int], duration: float, pace: float) -> None:
    print(f"1. one refresh chain under load: {duration:g} s per client count, {TTL} s tokens,")
    print(f"   each client pausing 0-{2 * pace:g} s between calls; due = elapsed / (2/3 x {TTL} s)")
    print(
        "   {:>7} {:>7} {:>6} {:>9} {:>5} {:>7} {:>10} {:>7}".format(
            "clients", "calls", "errors", "refreshes", "due", "÷ due", "÷ lifetimes", "replays"
        )
    )
    latencies: list[tuple[int, list[float], list[float]]] = []
    for n in clients:
        # The daemon refreshes on schedule with or without callers: count over the whole window in
        # which the counters could move.
        t0 = time.time()
        before = oidc.stats()
        start, end, records, errors = run_clients(sock, {"a": n}, duration, pace)
        after = oidc.stats()
        elapsed = time.time() - t0
        refreshes = after["token_requests"].get("refresh_token", 0)
        refreshes -= before["token_requests"].get("refresh_token", 0)
        replays = after["replay_detected"] + after["grants_revoked"]
        replays -= before["replay_detected"] + before["grants_revoked"]
        due = elapsed / (REFRESH_FRACTION * TTL)
        failed = sum(errors["a"].values())
        print(
            f"   {n:>7} {len(records['a']):>7} {failed:>6} {refreshes:>9} {due:>5.1f} "
            f"{refreshes / due:>7.2f} {refreshes / (elapsed / TTL):>10.2f} {replays:>7}"
            + (f"   {dict(errors['a'])}" if failed else "")
        )
        moments = rotations(oidc, start, end)
        during = [rec[1] for rec in records["a"] if in_flight(rec, moments)]
        other = [rec[1] for rec in records["a"] if not in_flight(rec, moments)]
        latencies.append((n, during, other))
    print("\n2. get_token latency (ms): calls in flight when the server rotated the token, and all others")
    print(
        "   {:>7} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}".format(
            "clients", "n refr", "p50", "p99", "n else", "p50", "p99"
        )
    )
    for n, during, other in latencies:
        print(
            f"   {n:>7} {len(during):>8} {ms(during, 0.5)} {ms(during, 0.99)}   "
            f"{len(other):>8} {ms(other, 0.5)} {ms(other, 0.99)}"
        )


def bench_isolation(sock: Path, stalled: OidcServer, pace: float) -> None:
    print(f"\n3. server a's token endpoint stalled for {STALL:g} s, 10 clients on a and 10 on server b")
    stalled.set_token_endpoint("stall", seconds=STALL + 5, grant_types=["refresh_token"])
    try:
        _, _, records, errors = run_clients(sock, {"a": 10, "b": 10}, STALL, pace)
    finally:
        stalled.set_token_endpoint("ok")
    b = [rec[1] for rec in records["b"]]
    print(f"   b: {len(b)} calls, {sum(errors['b'].values())} errors (goal 0)")
    print(f"      p50 {ms(b, 0.5).strip()} ms, p99 {ms(b, 0.99).strip()} ms (goal < 50 ms)")
    a_ok = sum(rec[2] for rec in records["a"])
    print(f"   a: {len(records['a'])} calls, {a_ok} answered with a token, errors: {dict(errors['a']) or 0}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per client count (default 60)")
    parser.add_argument("--pace", type=float, default=0.05, help="mean pause between a client's calls (s)")
    parser.add_argument("--clients", default="1,10,100", help="comma-separated client counts")
    args = parser.parse_args()
    clients = [int(n) for n in args.clients.split(",") if n]
    print(
        f"ncp-broker refresh benchmark — {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}\n"
    )
    root = Path(tempfile.mkdtemp(prefix="ncpb-refresh-"))
    started: list[Any] = []  # servers and the daemon, stopped in reverse order
    try:
        oidc_a, mcp_a = start_servers(root / "servers", "a")
        started += [oidc_a, mcp_a]
        oidc_b, mcp_b = start_servers(root / "servers", "b")
        started += [oidc_b, mcp_b]
        daemon, env, sock = start_daemon(root, {"a": mcp_a, "b": mcp_b})
        started.append(daemon)
        for name in ("a", "b"):
            log_in(root, env, name)
        bench_chain(sock, oidc_a, clients, args.duration, args.pace)
        bench_isolation(sock, oidc_a, args.pace)
        for name, oidc in (("a", oidc_a), ("b", oidc_b)):
            stats = oidc.stats()
            print(
                f"   server {name} over the whole run: {stats['replay_detected']} replays, "
                f"{stats['grants_revoked']} revoked grants, "
                f"{stats['token_requests'].get('authorization_code', 0)} logins"
            )
    finally:
        for thing in reversed(started):
            thing.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: how soon callers get a token again after the authorization server recovers.

    python bench/bench_recovery.py [--runs 5]

For each way the token endpoint fails — 503 with ``Retry-After: 1``, dropped connections, a stall that
holds the request until the outage ends (then drops it) — and ``--runs`` times each: break the token
endpoint, wait until the 3-second access token has expired (callers get ``as_unreachable``), end the
outage, and poll ``get_token`` every 50 ms, as a client retrying would. Prints, per kind of outage, the
median and the worst time from the end of the outage to the first token, and how long a caller waited
for its ``as_unreachable`` answer during the outage.

By design (brokerd/renewal.py): a caller with an expired token may retry a failed refresh once per
ON_DEMAND_RETRY (1 s), never before Retry-After, and waits at most JOIN_WAIT (2 s) for one; a stalled
request is never duplicated, so a stall ends when the server answers or drops it. docs/troubleshooting.md
quotes these figures.

Everything listens on loopback (the test fixtures' oidc-provider and MCP server, one daemon); every
process is stopped by PID; every loop is bounded.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.servers and bench.* when run as a script

from bench.bench_refresh import TTL, log_in, start_daemon, start_servers  # noqa: E402

OUTAGES: dict[str, dict[str, Any]] = {
    "503 (Retry-After: 1)": {"mode": "503", "retry_after": 1},
    "dropped connections": {"mode": "drop"},
    "stall, then drop": {"mode": "stall", "seconds": 60, "then": "drop"},
}
POLL = 0.05
DEADLINE = 30.0


def one_run(sock: Path, oidc: Any, outage: dict[str, Any]) -> tuple[float, float]:
    """(seconds from the end of the outage to a token, seconds a caller waited for as_unreachable)."""
    import ncp_client

    expires_at = float(ncp_client.call({"op": "get_token", "server": "a"}, socket_path=sock)["expires_at"])
    oidc.set_token_endpoint(grant_types=["refresh_token"], **outage)
    time.sleep(max(0.0, expires_at + 1.0 - time.time()))
    asked = time.perf_counter()
    try:
        ncp_client.get_token("a", socket_path=sock)
    except ncp_client.AuthServerUnreachable:
        pass
    else:
        raise RuntimeError("a token although the outage outlived it")
    refused_after = time.perf_counter() - asked
    oidc.set_token_endpoint("ok")
    back = time.perf_counter()
    while time.perf_counter() - back < DEADLINE:
        try:
            ncp_client.get_token("a", socket_path=sock)
            return time.perf_counter() - back, refused_after
        except ncp_client.AuthServerUnreachable:
            time.sleep(POLL)
    raise RuntimeError(f"no token {DEADLINE:g} s after the outage ended")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ncpb-bench-recovery-"))
    started: list[Any] = []
    try:
        oidc, mcp = start_servers(root / "servers", "a")
        started += [oidc, mcp]
        daemon, env, sock = start_daemon(root / "broker", {"a": mcp})
        started.append(daemon)
        log_in(root, env, "a")
        print(
            f"# {platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
            f"{args.runs} runs each, {TTL} s tokens, polling every {POLL * 1000:.0f} ms"
        )
        print(f"{'outage':24}  {'to a token: median':>18}  {'worst':>6}  {'as_unreachable after':>21}")
        for label, outage in OUTAGES.items():
            recoveries, refusals = [], []
            for _ in range(args.runs):
                recovered, refused = one_run(sock, oidc, outage)
                recoveries.append(recovered)
                refusals.append(refused)
            print(
                f"{label:24}  {statistics.median(recoveries):17.2f}s  {max(recoveries):5.2f}s  "
                f"{statistics.median(refusals):20.2f}s"
            )
        stats = oidc.stats()
        print(
            f"# replays {stats['replay_detected']}, revoked grants {stats['grants_revoked']}, "
            f"logins {stats['token_requests'].get('authorization_code', 0)}"
        )
    finally:
        for proc in reversed(started):
            proc.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

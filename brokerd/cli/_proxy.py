"""``ncp-broker proxy SERVER``: the stdio MCP server that hosts run (docs/proxy.md).

The host starts it at its own start-up, so this module imports nothing until the command runs, and then
only the proxy (``ncp_client.proxy``: trio and httpx); the daemon's start-up code is imported only when the
daemon is not running. A SERVER given as a URL is matched by the daemon (``list`` with ``url``).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["register"]

_DESCRIPTION = """\
Serve MCP on standard input and output (newline-delimited JSON-RPC) and forward every message to the
configured server SERVER over Streamable HTTP (or HTTP+SSE), with a token from the broker on each request.
Put this command in a host's config as a stdio server. Diagnostics go to standard error only.

If the daemon is not running, the proxy starts it as `ncp-broker start` would (unless
NCP_BROKER_NO_AUTOSTART is set). When the server needs a login, the daemon opens one browser tab for all
callers and the host's request waits for it (--login-timeout). The proxy holds no refresh token, keeps no
token between requests and writes no file."""


def _autostart(args: argparse.Namespace) -> Any:
    if os.environ.get("NCP_BROKER_NO_AUTOSTART"):
        return None

    def start() -> str:
        import sys

        from brokerd.cli._daemon import start_background

        # Standard output belongs to the host: what the starting daemon has to say goes to stderr.
        return start_background(args, note=lambda line: print(f"ncp-broker proxy: {line}", file=sys.stderr))

    return start


def cmd_proxy(args: argparse.Namespace) -> int:
    from ncp_client.proxy import ProxyOptions, run

    return run(
        ProxyOptions(
            server=args.server,
            socket_path=args.socket,
            transport=args.transport,
            login_timeout=None if args.no_login else args.login_timeout,
            max_message_bytes=args.max_message_bytes,
            verbose=args.verbose,
            autostart=_autostart(args),
        )
    )


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def register(sub: Any) -> None:
    p = sub.add_parser(
        "proxy",
        help="stdio MCP server for hosts: forwards to SERVER with the broker's tokens",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("server", metavar="SERVER", help="a configured server name, or its URL")
    p.add_argument(
        "--transport",
        choices=["auto", "http", "sse"],
        default="auto",
        help="auto (default): Streamable HTTP, falling back to HTTP+SSE (2024-11-05) when the first POST "
        "is answered 400/404/405 without a JSON-RPC error; http: Streamable HTTP only; sse: HTTP+SSE only",
    )
    p.add_argument(
        "--login-timeout",
        type=_positive,
        default=300.0,
        metavar="SECONDS",
        help="how long a request waits for a login in the browser (default: 300)",
    )
    p.add_argument(
        "--no-login",
        action="store_true",
        help="never open a browser: answer requests that need a login with an error naming the command",
    )
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=16 * 1024 * 1024,
        metavar="N",
        help="largest message either way (default: 16 MiB); a longer host line is answered with an error",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="log each message's kind, method and id to stderr (never content)",
    )
    p.set_defaults(func=cmd_proxy)

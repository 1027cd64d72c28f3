"""``ncp-broker``: start, stop and administer the daemon.

One module per group of commands, each adding its subcommands with ``register``:

* ``_daemon``: start, stop, reload;
* ``_status``: status, list;
* ``_servers``: add, remove, login, logout, invalidate, import-ncp;
* ``_hosts``: hosts (list, show, install, uninstall).

Secrets (access keys, client secrets) are read from standard input, a file or an environment variable,
never from the command line, where every user on the machine could see them in ``ps``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from brokerd import __version__, paths
from brokerd.cli import _daemon, _hosts, _proxy, _servers, _status
from brokerd.cli._common import CliError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ncp-broker",
        description="One OAuth 2.1 credential broker per user for MCP servers.",
        epilog='Shell use: curl -H "Authorization: Bearer $(ncp-token SERVER)" …  — see docs/.',
    )
    p.add_argument("--version", action="version", version=f"ncp-broker {__version__}")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file in NCP's mcpServers format (default: $NCP_BROKER_CONFIG, else "
        f"{paths.config_path()})",
    )
    p.add_argument(
        "--socket", type=Path, default=None, help="socket path (default: $NCP_BROKER_SOCK or the runtime dir)"
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get("NCP_BROKER_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="daemon log level (default: info)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for group in (_daemon, _status, _servers, _hosts, _proxy):
        group.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.config = (args.config or paths.config_path()).expanduser()
    args.socket = (args.socket or paths.socket_path()).expanduser()
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        status: int = args.func(args)
    except CliError as exc:
        print(f"ncp-broker: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    return status

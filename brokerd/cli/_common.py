"""What every ``ncp-broker`` command shares: exit statuses, errors, talking to the daemon, reading secrets
and the config file."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brokerd.secret import Secret

if TYPE_CHECKING:
    from brokerd import config

__all__ = [
    "EXIT_ERROR",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "call",
    "edit",
    "fmt_time",
    "load_config",
    "read_secret",
    "reload_if_running",
    "running",
]

# Exit statuses shared with ncp-token where they mean the same thing.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


class CliError(Exception):
    """A command failed; ``main`` prints the message and exits with ``status``."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


# ---- talking to the daemon ------------------------------------------------------------------------


def call(args: argparse.Namespace, request: dict[str, Any], timeout: float = 10.0) -> Any:
    """Send ``request`` to the daemon on ``args.socket``; its error answers become :class:`CliError`."""
    from ncp_client import BrokerError, BrokerNotRunning
    from ncp_client import call as broker_call

    try:
        return broker_call(request, timeout=timeout, socket_path=args.socket)
    except BrokerNotRunning as exc:
        raise CliError(str(exc), EXIT_NOT_RUNNING) from None
    except BrokerError as exc:
        raise CliError(str(exc), exc.exit_status) from None


def running(args: argparse.Namespace) -> dict[str, Any] | None:
    """The daemon's hello answer, or None when nothing answers on the socket."""
    from ncp_client import BrokerError
    from ncp_client import call as broker_call

    try:
        result = broker_call({"op": "hello"}, timeout=2.0, socket_path=args.socket)
    except BrokerError:
        return None
    return result if isinstance(result, dict) else None


# ---- secrets from stdin / file / env --------------------------------------------------------------


def read_secret(source: str, what: str) -> Secret:
    """Read a secret from ``-`` (stdin), ``file:PATH`` or ``env:NAME``."""
    if source == "-":
        if sys.stdin.isatty():
            import getpass

            value = getpass.getpass(f"{what}: ")
        else:
            value = sys.stdin.readline()
    elif source.startswith("file:"):
        try:
            value = Path(source[5:]).expanduser().read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise CliError(f"cannot read the {what} from {source[5:]}: {exc}") from None
    elif source.startswith("env:"):
        value = os.environ.get(source[4:], "")
        if not value:
            raise CliError(f"the environment variable {source[4:]} is empty or not set")
    else:
        raise CliError(
            f"{what}s are never taken from the command line (other users can read it); "
            "give - (stdin), file:PATH or env:NAME",
            EXIT_USAGE,
        )
    value = value.strip()
    if not value:
        raise CliError(f"the {what} is empty")
    return Secret(value)


# ---- config and output ----------------------------------------------------------------------------


def fmt_time(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def load_config(args: argparse.Namespace) -> config.Config:
    from brokerd import config  # the config loader (msgspec, the OAuth core) only for commands that read it

    try:
        return config.load(args.config)
    except config.ConfigError as exc:
        raise CliError(str(exc)) from None


def edit(args: argparse.Namespace, change: Callable[[dict[str, Any]], None]) -> None:
    from brokerd import config

    try:
        config.edit_raw(args.config, change)
    except config.ConfigError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write {args.config}: {exc.strerror}") from None


def reload_if_running(args: argparse.Namespace) -> None:
    if running(args) is not None:
        call(args, {"op": "reload"})

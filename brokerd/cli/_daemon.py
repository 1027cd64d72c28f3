"""``ncp-broker start``, ``stop`` and ``reload``: the daemon's life."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from brokerd import fsutil, paths
from brokerd.cli._common import EXIT_OK, CliError, call, running

__all__ = ["register", "start_background"]

START_TIMEOUT = 15.0
# A stopping daemon first finishes the exchanges in flight (each bounded by the HTTP driver's 15 s), and a
# starting one waits up to daemon.STOP_WAIT for it: wait a little longer than that.
STOP_TIMEOUT = 75.0


def cmd_start(args: argparse.Namespace) -> int:
    from brokerd import daemon

    opts = daemon.DaemonOptions(config_path=args.config, socket_path=args.socket)
    if args.foreground:
        return daemon.run(opts)
    hello = running(args)
    if hello and not hello.get("stopping"):
        print(f"ncp-broker is already running (pid {hello.get('pid')}) on {args.socket}")
        return EXIT_OK
    print(start_background(args))  # a daemon that is stopping is waited for by the new one
    return EXIT_OK


def start_background(args: argparse.Namespace, note: Callable[[str], None] = print) -> str:
    """Start the daemon in the background as ``ncp-broker start`` does; returns the line to show.

    Also what ``ncp-broker proxy`` runs when nothing answers on the socket: its stdout is the host's, so
    this prints nothing itself; ``note`` shows the daemon's lines while it waits (for a previous daemon
    that is stopping), and the proxy passes one that writes to stderr.

    Raises:
        CliError: the daemon reported why it could not start, or did not report readiness in time.
    """
    try:
        fsutil.ensure_private_dir(paths.state_dir())
    except (OSError, fsutil.UnsafePathError) as exc:
        raise CliError(f"log directory: {exc}") from None
    log_file = paths.log_path()
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.fchmod(log_fd, 0o600)
    read_end, write_end = os.pipe()
    env = dict(os.environ, NCP_BROKER_READY_FD=str(write_end), NCP_BROKER_SOCK=str(args.socket))
    cmd = [sys.executable, "-m", "brokerd", "--config", str(args.config), "--log-level", args.log_level]
    try:
        child = subprocess.Popen(
            [*cmd, "start", "--foreground"],
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            pass_fds=(write_end,),
            env=env,
            start_new_session=True,  # survives the terminal that started it
        )
    finally:
        os.close(write_end)
        os.close(log_fd)
    answer = _read_readiness(read_end, START_TIMEOUT, note)
    if answer == "ready":
        return f"ncp-broker started (pid {child.pid}) on {args.socket}; log: {log_file}"
    if answer.startswith("error ") and "already running" in answer:
        return answer[6:]
    if answer.startswith("error "):
        raise CliError(f"ncp-broker did not start: {answer[6:]}\n  log: {log_file}")
    status = child.poll()
    raise CliError(
        f"ncp-broker did not report readiness within {START_TIMEOUT:g} s "
        f"({'still starting' if status is None else f'exit status {status}'}); see {log_file}"
    )


def _read_readiness(fd: int, timeout: float, note: Callable[[str], None]) -> str:
    """The daemon's last readiness line ("ready" or "error …"); "note …" lines before it go to ``note``,
    and each gives the daemon as long again (it is waiting for a previous daemon to stop)."""
    import selectors

    from brokerd.daemon import STOP_WAIT

    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        try:
            while True:
                line, newline, rest = data.partition(b"\n")
                if newline and line.startswith(b"note "):
                    note(line[5:].decode(errors="replace"))
                    data = rest
                    deadline = time.monotonic() + STOP_WAIT + timeout
                    continue
                if newline:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    break
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
    return data.decode(errors="replace").strip()


def _lock_released(args: argparse.Namespace) -> bool:
    """Whether no daemon holds the instance lock of ``args.socket`` (a forwarded socket has no local lock:
    then only the socket can tell)."""
    import fcntl

    try:
        fd = os.open(paths.lock_path(args.socket), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing releases our shared lock
    return True


def cmd_stop(args: argparse.Namespace) -> int:
    """Ask the daemon to stop and return once it has exited: it first finishes the exchanges in flight."""
    hello = running(args)
    if hello is None:
        print(f"ncp-broker is not running on {args.socket}")
        return EXIT_OK
    pid = hello.get("pid")
    if not hello.get("stopping"):
        call(args, {"op": "shutdown"})
    started = time.monotonic()
    told = False
    while time.monotonic() - started < STOP_TIMEOUT:
        if running(args) is None and _lock_released(args):
            print(f"ncp-broker stopped (pid {pid})")
            return EXIT_OK
        if not told and time.monotonic() - started > 1.0:
            print(f"ncp-broker (pid {pid}) is finishing the token exchanges in flight…")
            told = True
        time.sleep(0.05)
    raise CliError(f"ncp-broker (pid {pid}) did not stop within {STOP_TIMEOUT:g} s; see its log")


def cmd_reload(args: argparse.Namespace) -> int:
    summary = call(args, {"op": "reload"})
    parts = [f"{k}: {', '.join(v)}" for k, v in summary.items() if v]
    print("config reloaded" + (f" ({'; '.join(parts)})" if parts else ", nothing changed"))
    return EXIT_OK


def register(sub: Any) -> None:
    s = sub.add_parser("start", help="start the daemon (in the background unless --foreground)")
    s.add_argument("--foreground", action="store_true", help="stay in the foreground (for service managers)")
    s.set_defaults(func=cmd_start)
    sub.add_parser(
        "stop", help="stop the daemon (it finishes the exchanges in flight first; returns once it has exited)"
    ).set_defaults(func=cmd_stop)
    sub.add_parser("reload", help="re-read the config (a bad file is refused)").set_defaults(func=cmd_reload)

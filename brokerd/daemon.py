"""The composition root: lock, socket, config, store, broker, signals.

Start-up order matters and each step fails with a sentence a person can act on:

1. the socket's directory is created 0700 and checked (ours, a directory, not a symlink);
2. the single-instance lock next to the socket is taken (``flock``; a dead daemon's lock is released by
   the kernel, so a ``kill -9`` never blocks the next start, and a live daemon is never second-guessed).
   A previous daemon that is still stopping (finishing its exchanges) is waited for, and that is said;
3. a leftover socket file is removed only now that we hold the lock — and only if nothing answers on it;
4. the config is loaded (a bad file stops the start; a bad *reload* keeps the running config);
5. we listen, then report readiness (``NCP_BROKER_READY_FD`` for ``ncp-broker start``, ``sd_notify`` for
   systemd); a systemd-passed socket (``LISTEN_FDS``) replaces steps 3 and the bind.

SIGTERM/SIGINT and the ``shutdown`` request stop the daemon (DESIGN rule 10): it takes no new exchange
(requests that need one get ``stopping``; tokens it holds are still served), cancels pending logins, waits
for every exchange in flight to be answered and saved (each is bounded by its own timeout), then stops
listening and exits. SIGHUP reloads the config.

Two nurseries make that order: the *work* nursery runs renewals, logins and the timer; the outer one runs
the socket server. A stop cancels the work nursery first (sent exchanges are shielded, so this waits for
them) and the server last, so callers get answers until the end.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import signal
import socket as stdlib_socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import trio

from brokerd import config, fsutil, paths
from brokerd.broker import Broker
from brokerd.callback import CallbackHub
from brokerd.grant import OAuthContext
from brokerd.oauth_driver import make_http_client
from brokerd.server import serve
from brokerd.store import StoreError, open_store
from brokerd.wire import WireError

__all__ = ["DaemonError", "DaemonOptions", "run"]

log = logging.getLogger("brokerd")

_SUN_PATH_MAX = 107 if os.uname().sysname == "Linux" else 103


class DaemonError(Exception):
    """The daemon cannot start. The message says why and what to do."""


class AlreadyRunning(DaemonError):
    pass


@dataclass(frozen=True)
class DaemonOptions:
    config_path: Path
    socket_path: Path


_HELD: list[int] = []

STOP_WAIT = 60.0
"""How long a starting daemon waits for a previous one that is still stopping (its exchanges are bounded
by the HTTP driver's 15 s timeout; saving takes a moment more)."""


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder_is_stopping(handle: IO[str]) -> bool:
    """Whether the daemon holding the lock has said, in the lock file, that it is on its way out."""
    handle.seek(0)
    return handle.read().split()[1:2] == ["stopping"]


def _say_stopping(handle: IO[str]) -> None:
    """Tell a daemon that starts meanwhile that this one is stopping, so it waits instead of giving up."""
    with contextlib.suppress(OSError):
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} stopping\n")
        handle.flush()


@contextlib.contextmanager
def _instance_lock(sock: Path, readiness: _Readiness) -> Iterator[IO[str]]:
    lock_file = paths.lock_path(sock)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    handle = os.fdopen(fd, "r+")
    try:
        if not _try_lock(handle):
            pid = _holder_pid(handle)
            if not _holder_is_stopping(handle):
                raise AlreadyRunning(
                    f"ncp-broker is already running (pid {pid}) on {sock}; use it, or stop it with: "
                    "ncp-broker stop"
                )
            note = f"waiting for the previous daemon (pid {pid}) to finish stopping"
            log.info("%s", note)
            readiness.note(note)
            deadline = time.monotonic() + STOP_WAIT
            while not _try_lock(handle):
                if time.monotonic() > deadline:
                    raise AlreadyRunning(
                        f"the previous daemon (pid {pid}) did not finish stopping within {STOP_WAIT:g} s; "
                        f"see its log, or end it with: kill {pid}"
                    )
                time.sleep(0.05)  # nothing else runs yet: blocking here is fine
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        # Held until the process exits: a duplicate of the descriptor is never closed, so the kernel
        # releases the lock only then, after every last write; "the lock is free" means "the daemon has
        # exited" to `ncp-broker stop` and to the next daemon.
        _HELD.append(os.dup(handle.fileno()))
        yield handle
    finally:
        handle.close()


def _holder_pid(handle: IO[str]) -> str:
    """The pid the lock holder wrote; it may have taken the lock a moment before writing, so look twice."""
    for _ in range(20):
        handle.seek(0)
        if words := handle.read().split():
            return words[0]
        time.sleep(0.05)
    return "unknown"


def _remove_stale_socket(sock: Path) -> None:
    try:
        st = sock.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise DaemonError(f"{sock} exists and is not a socket; move it away or set NCP_BROKER_SOCK")
    probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(os.fspath(sock))
    except OSError:
        pass  # nobody listening: a dead daemon's socket
    else:
        raise DaemonError(f"something is listening on {sock} without holding the lock; not replacing it")
    finally:
        probe.close()
    log.info("removing the stale socket of a daemon that is gone: %s", sock)
    sock.unlink()


def _bind(sock: Path) -> stdlib_socket.socket:
    if len(os.fsencode(sock)) > _SUN_PATH_MAX:
        raise DaemonError(f"socket path is too long for a Unix socket ({len(str(sock))} bytes): {sock}")
    raw = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is born 0600: no window where it is wider
    try:
        raw.bind(os.fspath(sock))
    except OSError as exc:
        raw.close()
        raise DaemonError(f"cannot bind {sock}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(sock, 0o600)
    raw.listen(128)
    return raw


def _systemd_socket() -> stdlib_socket.socket | None:
    """The listening socket systemd passed us (socket activation), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return stdlib_socket.socket(fileno=3)


def _sd_notify(message: str) -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with (
        stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_DGRAM) as s,
        contextlib.suppress(OSError),
    ):
        s.sendto(message.encode(), addr)


class _Readiness:
    """Tells ``ncp-broker start`` (our parent) that we are listening, or why we are not."""

    def __init__(self) -> None:
        fd = os.environ.pop("NCP_BROKER_READY_FD", None)
        self._fd = int(fd) if fd and fd.isdigit() else None

    def _say(self, line: str) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._fd, line.encode() + b"\n")
            os.close(self._fd)
        self._fd = None

    def note(self, line: str) -> None:
        """A line for the starting command to show while we wait; readiness is still to come."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._fd, f"note {line}\n".encode())

    def ready(self) -> None:
        self._say("ready")
        _sd_notify("READY=1")

    def failed(self, reason: str) -> None:
        self._say("error " + reason)


async def _watch_signals(broker: Broker) -> None:
    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if broker.stopping:
                    continue
                _sd_notify("RELOADING=1")
                try:
                    broker.reload()
                except WireError:
                    pass  # already logged by reload, which keeps the running config
                except Exception:
                    log.exception("reload failed; keeping the running config")
                _sd_notify("READY=1")
            elif not broker.stopping:
                log.info("received %s; stopping", signal.Signals(signum).name)
                broker.begin_stop()
                broker.shutdown_requested.set()


@dataclass
class _Work:
    """The work nursery (renewals, logins, the timer) and the event set once everything in it has ended."""

    nursery: trio.Nursery
    ended: trio.Event


async def _run_work(*, task_status: trio.TaskStatus[_Work] = trio.TASK_STATUS_IGNORED) -> None:
    ended = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            task_status.started(_Work(nursery, ended))
            await trio.sleep_forever()
    finally:
        ended.set()


async def _main(opts: DaemonOptions, readiness: _Readiness) -> None:
    sock = opts.socket_path
    inherited = _systemd_socket()
    try:
        fsutil.ensure_private_dir(sock.parent)
    except (fsutil.UnsafePathError, OSError) as exc:
        raise DaemonError(f"socket directory: {exc}") from None
    with _instance_lock(sock, readiness) as lock:
        cfg = config.load(opts.config_path)
        if warning := config.insecure_file_warning(opts.config_path):
            log.warning("%s", warning)
        store = open_store(cfg.store, paths.data_dir())
        if inherited is None:
            _remove_stale_socket(sock)
            raw = _bind(sock)
        else:
            raw = inherited
        bound_inode = os.stat(sock).st_ino if inherited is None else None
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(raw))
        try:
            async with make_http_client() as http, trio.open_nursery() as outer:
                work: _Work = await outer.start(_run_work)
                oauth = OAuthContext(http=http, hub=CallbackHub(work.nursery), nursery=work.nursery)
                broker = Broker(
                    cfg, store, oauth=oauth, socket_path=sock, store_description=str(store.describe())
                )
                outer.start_soon(_watch_signals, broker)
                work.nursery.start_soon(oauth.scheduler.run, work.nursery)
                # A usable cached token, hello, list and status are answered from the accept loop itself.
                await outer.start(
                    functools.partial(serve, immediate=broker.answer_now), listener, broker.handle
                )
                log.info(
                    "ncp-broker %s listening on %s (pid %d, config %s, store %s)",
                    _version(),
                    sock,
                    os.getpid(),
                    opts.config_path,
                    store.describe(),
                )
                readiness.ready()
                await broker.shutdown_requested.wait()
                broker.begin_stop()
                _say_stopping(lock)
                log.info("stopping: no new exchanges; finishing those in flight")
                _sd_notify("STOPPING=1")
                work.nursery.cancel_scope.cancel()  # exchanges already sent are shielded: this waits for them
                await work.ended.wait()
                # let the last answers reach their clients before the listener goes away
                await trio.sleep(0.05)
                outer.cancel_scope.cancel()
        finally:
            await listener.aclose()
            if bound_inode is not None:
                with contextlib.suppress(OSError):
                    if os.stat(sock).st_ino == bound_inode:
                        sock.unlink()
            log.info("stopped")


def _version() -> str:
    from brokerd import __version__

    return __version__


def run(opts: DaemonOptions) -> int:
    """Run the daemon in this process until it is stopped. Returns the exit status."""
    readiness = _Readiness()
    try:
        trio.run(_main, opts, readiness)
    except AlreadyRunning as exc:
        readiness.failed(str(exc))
        log.error("%s", exc)
        return 3
    except (DaemonError, config.ConfigError, StoreError) as exc:
        readiness.failed(str(exc))
        log.error("cannot start: %s", exc)
        return 1
    except OSError as exc:
        reason = f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, '?')})"
        readiness.failed(reason)
        log.error("cannot start: %s", reason)
        return 1
    return 0

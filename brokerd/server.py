"""The Unix-socket server: the accept loop, peer credentials, a cheap path per connection.

Shaped like ``trio.serve_listeners`` — one nursery, ``task_status.started()`` once listening — but most
connections carry one request (``ncp-token``, shell and non-Python clients connect per request), so the
per-connection machinery is what the daemon spends its time on. :func:`serve` therefore works on the raw
non-blocking socket instead of a ``trio.SocketStream``:

* the accept loop drains the kernel's backlog with plain ``accept()`` calls and sleeps in
  ``wait_readable`` only when it is empty (no ``SocketStream``, no ``TCP_NODELAY`` attempts that a Unix
  socket refuses, no checkpoint around each call that succeeded);
* right after accepting it reads what the client has sent already. One request that the optional
  :class:`~brokerd.connection.Immediate` hook can answer without waiting is answered there and then; if
  the client has also shut down its sending side (``ncp_client`` does), that is the whole connection,
  without a task;
* every other connection gets a task over the same socket (``brokerd.connection``): it sleeps only when
  the socket would block, under one cancel scope for the deadline in force. The first such connection
  after a wake-up is served by the accepting task itself, which first hands the accepting on to a new
  task, so its answer goes out in the same pass of trio's scheduler.

A handler call may wait (a caller may wait 2 s for a refresh, a login for minutes), so the task that
accepts never calls one: only :class:`~brokerd.connection.Immediate`, which by contract never waits.
Nothing one connection brings may reach the nursery (that would stop the daemon): every failure is
answered per request or ends only that connection.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import os
import socket as stdlib_socket
import struct
import sys
from collections.abc import Callable

import trio

from brokerd import wire
from brokerd.connection import (
    YIELD_EVERY,
    Conversation,
    FrameReader,
    Handler,
    Immediate,
    SocketChannel,
    answer_at_once,
    handle_connection,
)

__all__ = ["MAX_CONNECTIONS", "FrameReader", "Immediate", "handle_connection", "peer_uid", "serve"]

log = logging.getLogger("brokerd.server")

PeerCheck = Callable[[int | None], bool]

MAX_CONNECTIONS = 256


def peer_uid(sock: stdlib_socket.socket | trio.socket.SocketType) -> int | None:
    """The uid of the process at the other end of a Unix socket, or None if the OS will not say."""
    try:
        so_peercred: int | None = getattr(stdlib_socket, "SO_PEERCRED", None)
        if so_peercred is not None:  # Linux: struct ucred {pid, uid, gid}
            creds = sock.getsockopt(stdlib_socket.SOL_SOCKET, so_peercred, 12)
            _pid, uid, _gid = struct.unpack("3i", creds)
            return int(uid)
        if sys.platform == "darwin" or "bsd" in sys.platform:
            # LOCAL_PEERCRED (level 0 = SOL_LOCAL, option 1) fills a struct xucred: version, uid, ...
            creds = sock.getsockopt(0, 1, 76)
            _version, uid = struct.unpack_from("Ii", creds)
            return int(uid)
    except OSError as exc:
        log.warning("could not read peer credentials: %s", exc)
    return None


_PAUSE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# Errors accept() passes on from a connection that failed before we took it (trio ignores the same).
_SKIP_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ECONNABORTED", "EPROTO", "EPERM", "ECONNRESET", "ETIMEDOUT", "ENOPROTOOPT", "EOPNOTSUPP")
    if hasattr(errno, name)
)


def _first_read(conn: stdlib_socket.socket, max_frame: int) -> tuple[bytes, bool]:
    """What the client has sent by now, and whether it has also shut down its sending side.

    Raises:
        OSError: the connection already broke.
    """
    try:
        data = conn.recv(max_frame)
    except BlockingIOError:
        return b"", False
    if not data:
        return b"", True
    if not data.endswith(b"\n"):
        return data, False  # a partial frame: the task reads the rest under the frame deadline
    try:
        more = conn.recv(max_frame)
    except BlockingIOError:
        return data, False
    return data + more, not more


@dataclasses.dataclass(frozen=True)
class _Limits:
    max_connections: int = MAX_CONNECTIONS
    max_frame: int = wire.MAX_FRAME
    frame_deadline: float = wire.FRAME_DEADLINE
    idle_timeout: float = wire.IDLE_TIMEOUT


def _one_frame(data: bytes, max_frame: int) -> bool:
    """Whether ``data`` is exactly one frame that is not blank."""
    return len(data) <= max_frame and data.find(b"\n") == len(data) - 1 and bool(data.strip())


class _Server:
    """The accept loop's state: what every connection shares."""

    def __init__(
        self,
        nursery: trio.Nursery,
        handler: Handler,
        immediate: Immediate | None,
        peer_ok: PeerCheck,
        limits: _Limits,
    ) -> None:
        self.nursery = nursery
        self.handler = handler
        self.immediate = immediate
        self.peer_ok = peer_ok
        self.slots = trio.Semaphore(limits.max_connections)  # past it, clients wait in the backlog
        self.limits = limits
        self.max_frame = limits.max_frame

    def take(self, conn: stdlib_socket.socket) -> tuple[bytes, bool, bytes] | None:
        """Serve a connection just accepted as far as can be done at once. None: it is done (and its slot
        released); else what its task starts from, as for :meth:`_serve_one`."""
        try:
            rest = self._at_once(conn)
        except Exception:
            # Nothing one connection brings may stop the accept loop.
            log.exception("internal error on a new connection; closing it")
            rest = None
        if rest is None:
            self._close(conn)
        return rest

    async def accept_loop(self, sock: stdlib_socket.socket, *, woken: bool = True) -> None:
        """Accept until cancelled, taking each connection as far as it goes at once.

        Of the connections that need a task, the first after each wake-up is served by this task itself,
        which hands the accepting on to a new task: its answer goes out in this pass of trio's scheduler
        instead of the next (a one-client round trip is one pass shorter); the rest of the backlog gets a
        task each from the new acceptor.
        """
        slots = self.slots
        in_a_row = 0
        while True:
            try:
                slots.acquire_nowait()
            except trio.WouldBlock:
                await slots.acquire()
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                slots.release()
                in_a_row, woken = 0, True
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as exc:
                slots.release()
                if exc.errno in _PAUSE_ERRNOS:
                    log.error("accept failed (%s); pausing 1 s", os.strerror(exc.errno))
                    await trio.sleep(1.0)
                    continue
                if exc.errno in _SKIP_ERRNOS:
                    continue
                raise
            rest = self.take(conn)
            if rest is not None:
                if woken:
                    self.nursery.start_soon(functools.partial(self.accept_loop, sock, woken=False))
                    await self._serve_one(conn, *rest)
                    return
                self.nursery.start_soon(self._serve_one, conn, *rest)
            in_a_row += 1
            if in_a_row >= YIELD_EVERY:
                in_a_row = 0
                await trio.lowlevel.checkpoint()

    def _at_once(self, conn: stdlib_socket.socket) -> tuple[bytes, bool, bytes] | None:
        """Check the peer and answer what can be answered now. None: the connection is done;
        else what its task starts from (bytes read, whether the client shut down its side, unsent)."""
        uid = peer_uid(conn)
        if not self.peer_ok(uid):
            log.warning("refused a connection from uid %s (this daemon serves uid %s)", uid, os.getuid())
            return None
        conn.setblocking(False)
        try:
            buffered, at_eof = _first_read(conn, self.max_frame)
        except OSError:
            return None  # the client went away already
        if at_eof and not buffered:
            return None  # connected and left
        if self.immediate is None or not _one_frame(buffered, self.max_frame):
            return buffered, at_eof, b""
        # One request, already here, that the immediate hook can answer: the client gets its answer
        # now, from the accept loop. If it has also shut down its sending side, that is the end of the
        # connection, without a task; else a task waits for its next request or its end.
        answer = answer_at_once(buffered[:-1], self.immediate)
        if answer is None:
            return buffered, at_eof, b""
        try:
            sent = conn.send(answer)
        except OSError:
            return None  # the client went away; nothing to tell anyone
        return None if at_eof and sent == len(answer) else (b"", at_eof, answer[sent:])

    def _close(self, conn: stdlib_socket.socket) -> None:
        conn.close()
        self.slots.release()

    async def _serve_one(
        self, conn: stdlib_socket.socket, buffered: bytes, at_eof: bool, pending: bytes
    ) -> None:
        try:
            channel = SocketChannel(conn)
            limits = self.limits
            reader = FrameReader(
                channel,
                max_frame=limits.max_frame,
                frame_deadline=limits.frame_deadline,
                idle_timeout=limits.idle_timeout,
                buffered=buffered,
                at_eof=at_eof,
            )
            await Conversation(channel, reader, self.handler, self.immediate, limits.max_frame).run(pending)
        finally:
            self._close(conn)


def _listening_socket(listener: trio.SocketListener) -> stdlib_socket.socket:
    # A duplicate of the listener's descriptor as a plain socket, for synchronous non-blocking accept();
    # the caller still owns (and closes) the listener.
    tsock = listener.socket
    sock = stdlib_socket.fromfd(tsock.fileno(), tsock.family, tsock.type)
    sock.setblocking(False)
    return sock


async def serve(
    listener: trio.SocketListener,
    handler: Handler,
    *,
    immediate: Immediate | None = None,
    peer_ok: PeerCheck | None = None,
    max_connections: int = MAX_CONNECTIONS,
    max_frame: int = wire.MAX_FRAME,
    frame_deadline: float = wire.FRAME_DEADLINE,
    idle_timeout: float = wire.IDLE_TIMEOUT,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections forever, checking each peer's uid: another user gets nothing, not even an error.

    ``peer_ok`` decides on the peer's uid (``None`` when the OS will not tell); by default only this
    process's own uid is served. ``immediate`` (see :class:`Immediate`) answers at once what needs no
    waiting. At most ``max_connections`` are served at a time; the next ones wait in the kernel's backlog.
    The framing limits are :func:`handle_connection`'s.

    Raises:
        OSError: accept() failed in a way that is not about one connection or a passing shortage.
    """
    my_uid = os.getuid()
    check = peer_ok if peer_ok is not None else (lambda uid: uid == my_uid)
    sock = _listening_socket(listener)
    try:
        async with trio.open_nursery() as nursery:
            limits = _Limits(max_connections, max_frame, frame_deadline, idle_timeout)
            server = _Server(nursery, handler, immediate, check, limits)
            log.debug("accepting; requests answered from the accept loop: %s", "on" if immediate else "off")
            task_status.started()
            await server.accept_loop(sock)
    finally:
        sock.close()

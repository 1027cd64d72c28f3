"""The Unix-socket server: framing, deadlines, peer credentials, a cheap path per connection.

Shaped like ``trio.serve_listeners`` — one nursery, ``task_status.started()`` once listening — but most
connections carry one request (``ncp-token``, shell and non-Python clients connect per request), so the
per-connection machinery is what the daemon spends its time on. :func:`serve` therefore works on the raw
non-blocking socket instead of a ``trio.SocketStream``:

* the accept loop drains the kernel's backlog with plain ``accept()`` calls and sleeps in
  ``wait_readable`` only when it is empty (no ``SocketStream``, no ``TCP_NODELAY`` attempts that a Unix
  socket refuses, no checkpoint around each call that succeeded);
* right after accepting it reads what the client has sent already. A client that sent one request and
  shut down its sending side (``ncp_client`` does) is answered there and then, without a task, when the
  optional :class:`Immediate` hook can answer without waiting;
* everything else gets a task, as before, over the same socket: it sleeps in ``wait_readable`` /
  ``wait_writable`` only when the socket would block, under one cancel scope for the deadline in force.

A handler call may wait (a caller may wait 2 s for a refresh, a login for minutes), so no handler ever
runs in the accept loop: only :class:`Immediate`, which by contract never waits. An exception escaping a
connection's task would kill the whole daemon, so :func:`handle_connection` and the connection tasks
answer every failure per request and only ever end their own connection.
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
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from brokerd import wire

__all__ = ["MAX_CONNECTIONS", "FrameReader", "Immediate", "handle_connection", "peer_uid", "serve"]

log = logging.getLogger("brokerd.server")

Handler = Callable[[wire.Request], Awaitable[Any]]
PeerCheck = Callable[[int | None], bool]

SEND_DEADLINE = 10.0
MAX_CONNECTIONS = 256
# A connection that always has data ready never sleeps; it yields to the others after this many socket
# operations in a row, and the accept loop after this many accepts.
_YIELD_EVERY = 16


class Immediate(Protocol):
    """An optional answer-at-once hook next to the handler (``serve(..., immediate=broker.answer_now)``).

    Called with a decoded request, in the accept loop itself, so it must never wait or block. It returns
    the result (what the handler would have returned) when it can answer without awaiting anything — a
    ``get_token`` whose cached token is usable, ``hello`` — and ``None`` otherwise, and the request then
    goes to the handler in a task as usual. It may raise :class:`~brokerd.wire.WireError` for an error
    answer. Whatever it answers must be what the handler would have answered at that moment.
    """

    def __call__(self, req: wire.Request, /) -> Any: ...


class FrameTooLarge(Exception):
    pass


class _PeerNotReading(Exception):
    pass


class _Source(Protocol):
    async def receive(self, max_bytes: int, deadline: float) -> bytes | bytearray:
        """Up to ``max_bytes`` (``b""`` at end of stream). Raises trio.TooSlowError past ``deadline``."""
        ...


class _Sink(Protocol):
    async def send(self, data: bytes) -> None:
        """All of ``data``, or raise _PeerNotReading if the peer stops reading for SEND_DEADLINE."""
        ...


class FrameReader:
    """Splits a byte stream into newline-terminated frames under a size cap and two deadlines.

    ``idle_timeout`` bounds the wait for the first byte of a frame (connections may stay open between
    requests); ``frame_deadline`` bounds how long a frame may take once it has started, so a client that
    sends half a line and stalls is dropped. ``buffered`` is what was already read from the source, and
    ``at_eof`` says that the source ended after it.
    """

    def __init__(
        self,
        source: _Source,
        *,
        max_frame: int = wire.MAX_FRAME,
        frame_deadline: float = wire.FRAME_DEADLINE,
        idle_timeout: float = wire.IDLE_TIMEOUT,
        buffered: bytes = b"",
        at_eof: bool = False,
    ) -> None:
        self._source = source
        self._buf = bytearray(buffered)
        self._eof = at_eof
        self._max = max_frame
        self._frame_deadline = frame_deadline
        self._idle = idle_timeout

    async def next_frame(self) -> bytes | None:
        """The next frame without its newline, or None at a clean end of stream.

        Raises:
            FrameTooLarge: no newline within ``max_frame`` bytes.
            trio.TooSlowError: a deadline passed.
        """
        deadline: float | None = None
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                if end + 1 > self._max:
                    raise FrameTooLarge
                frame = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return frame
            if len(self._buf) >= self._max:
                raise FrameTooLarge
            if self._eof:
                return None  # a half frame at EOF is dropped: nobody is left to answer
            if deadline is None:
                deadline = trio.current_time() + (self._frame_deadline if self._buf else self._idle)
            chunk = await self._source.receive(self._max, deadline)
            if not chunk:
                self._eof = True
                return None
            if not self._buf:
                deadline = trio.current_time() + self._frame_deadline
            self._buf += chunk


class _StreamChannel:
    """A trio stream (memory streams in tests, any other transport) as a framed connection's two ends."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream

    async def receive(self, max_bytes: int, deadline: float) -> bytes | bytearray:
        with trio.CancelScope(deadline=deadline):
            return await self._stream.receive_some(max_bytes)
        raise trio.TooSlowError

    async def send(self, data: bytes) -> None:
        """A client that stops reading is dropped instead of pinning this task."""
        with trio.move_on_after(SEND_DEADLINE):
            await self._stream.send_all(data)
            return
        raise _PeerNotReading


class _SocketChannel:
    """A connected non-blocking socket: it sleeps only when the kernel says the call would block.

    No checkpoint after a call that succeeded (trio's socket methods take two), so a one-request
    connection costs a few system calls, and at most one sleep in ``wait_readable`` for the client's end.
    Only this connection's task uses the socket, so closing it needs no ``notify_closing``.
    """

    def __init__(self, sock: stdlib_socket.socket) -> None:
        self._sock = sock
        self._busy = 0

    async def _fairness(self) -> None:
        self._busy += 1
        if self._busy >= _YIELD_EVERY:
            self._busy = 0
            await trio.lowlevel.checkpoint()

    async def receive(self, max_bytes: int, deadline: float) -> bytes:
        while True:
            try:
                data = self._sock.recv(max_bytes)
            except BlockingIOError:
                with trio.CancelScope(deadline=deadline) as scope:
                    await trio.lowlevel.wait_readable(self._sock)
                if scope.cancelled_caught:
                    raise trio.TooSlowError from None
                self._busy = 0
                continue
            except OSError as exc:  # ECONNRESET: the client went away
                raise trio.BrokenResourceError from exc
            await self._fairness()
            return data

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        deadline: float | None = None
        while view:
            try:
                view = view[self._sock.send(view) :]
            except BlockingIOError:
                if deadline is None:
                    deadline = trio.current_time() + SEND_DEADLINE
                with trio.CancelScope(deadline=deadline) as scope:
                    await trio.lowlevel.wait_writable(self._sock)
                if scope.cancelled_caught:
                    raise _PeerNotReading from None
                self._busy = 0
            except OSError as exc:  # EPIPE, ECONNRESET: the client went away
                raise trio.BrokenResourceError from exc
        await self._fairness()


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


def _frame_too_large(max_frame: int) -> bytes:
    err = wire.WireError(
        "frame_too_large",
        f"a request longer than {max_frame} bytes (or without a newline); closing",
        "send one JSON object per line",
    )
    return wire.encode_error(None, err)


def _internal_error(req: wire.Request) -> bytes:
    err = wire.WireError(
        "internal", "the daemon hit an internal error answering this request", "see the daemon's log"
    )
    return wire.encode_error(req.id, err)


def _answer_at_once(frame: bytes, immediate: Immediate | None) -> bytes | None:
    """The answer to ``frame`` if it needs no handler (a bad frame, or ``immediate`` knows), else None."""
    try:
        req = wire.decode_request(frame)
    except wire.WireError as exc:
        return wire.encode_error(wire.request_id(frame), exc)
    if immediate is None:
        return None
    try:
        result = immediate(req)
    except wire.WireError as exc:
        return wire.encode_error(req.id, exc)
    except Exception:
        log.exception("internal error while answering %s at once", type(req).__name__)
        return _internal_error(req)
    return None if result is None else wire.encode_result(req.id, result)


async def _answer(frame: bytes, handler: Handler) -> bytes:
    try:
        req = wire.decode_request(frame)
    except wire.WireError as exc:
        return wire.encode_error(wire.request_id(frame), exc)
    try:
        result = await handler(req)
    except wire.WireError as exc:
        return wire.encode_error(req.id, exc)
    except Exception:
        log.exception("internal error while answering %s", type(req).__name__)
        return _internal_error(req)
    return wire.encode_result(req.id, result)


class _Channel(_Source, _Sink, Protocol):
    pass


class _Conversation:
    """One connection's requests and answers, in order, over any channel."""

    def __init__(
        self,
        channel: _Channel,
        reader: FrameReader,
        handler: Handler,
        immediate: Immediate | None,
        max_frame: int,
    ) -> None:
        self._channel = channel
        self._reader = reader
        self._handler = handler
        self._immediate = immediate
        self._max_frame = max_frame

    async def run(self, pending: bytes = b"") -> None:
        """Send ``pending``, then answer frames until the connection ends.

        Never raises for anything the peer does: bad frames get ``bad_request``, oversized ones
        ``frame_too_large`` and a close, stalls a close.
        """
        try:
            if pending:
                await self._channel.send(pending)
            await self._answer_frames()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client went away; nothing to tell anyone
        except _PeerNotReading:
            log.debug("closing a connection whose client stopped reading its answers")
        except Exception:
            # Nothing a peer sends may reach the accept loop's nursery: that would stop the daemon.
            log.exception("internal error on a connection; closing it")

    async def _answer_frames(self) -> None:
        channel, immediate = self._channel, self._immediate
        while True:
            try:
                frame = await self._reader.next_frame()
            except FrameTooLarge:
                await channel.send(_frame_too_large(self._max_frame))
                return
            except trio.TooSlowError:
                log.debug("closing a connection that stalled")
                return
            if frame is None:
                return
            if not frame.strip():
                continue
            answer = _answer_at_once(frame, immediate) if immediate is not None else None
            await channel.send(answer if answer is not None else await _answer(frame, self._handler))


async def handle_connection(
    stream: trio.abc.Stream,
    handler: Handler,
    *,
    immediate: Immediate | None = None,
    max_frame: int = wire.MAX_FRAME,
    frame_deadline: float = wire.FRAME_DEADLINE,
    idle_timeout: float = wire.IDLE_TIMEOUT,
) -> None:
    """Serve requests on one stream until it closes, misbehaves, or the daemon stops.

    Never raises for anything the peer does: bad frames get ``bad_request``, oversized ones
    ``frame_too_large`` and a close, stalls a close. (:func:`serve` runs the same conversation over its
    raw sockets; this entry point takes any trio stream.)
    """
    channel = _StreamChannel(stream)
    reader = FrameReader(
        channel, max_frame=max_frame, frame_deadline=frame_deadline, idle_timeout=idle_timeout
    )
    try:
        async with stream:
            await _Conversation(channel, reader, handler, immediate, max_frame).run()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


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
            if in_a_row >= _YIELD_EVERY:
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
        answer = _answer_at_once(buffered[:-1], self.immediate)
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
            channel = _SocketChannel(conn)
            limits = self.limits
            reader = FrameReader(
                channel,
                max_frame=limits.max_frame,
                frame_deadline=limits.frame_deadline,
                idle_timeout=limits.idle_timeout,
                buffered=buffered,
                at_eof=at_eof,
            )
            await _Conversation(channel, reader, self.handler, self.immediate, limits.max_frame).run(pending)
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
            task_status.started()
            await server.accept_loop(sock)
    finally:
        sock.close()

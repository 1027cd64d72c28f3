"""The Unix-socket server: framing, deadlines, peer credentials, one handler task per connection.

Shaped like ``trio.serve_listeners``: one nursery, a task per connection, ``task_status.started()`` once
listening. An exception escaping a connection handler would kill the whole daemon, so
:func:`handle_connection` answers every failure per request and only ever ends its own connection.
"""

from __future__ import annotations

import errno
import logging
import os
import socket as stdlib_socket
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from brokerd import wire

__all__ = ["FrameReader", "handle_connection", "peer_uid", "serve"]

log = logging.getLogger("brokerd.server")

Handler = Callable[[wire.Request], Awaitable[Any]]


class FrameTooLarge(Exception):
    pass


class FrameReader:
    """Splits a byte stream into newline-terminated frames under a size cap and two deadlines.

    ``idle_timeout`` bounds the wait for the first byte of a frame (connections may stay open between
    requests); ``frame_deadline`` bounds how long a frame may take once it has started, so a client that
    sends half a line and stalls is dropped.
    """

    def __init__(
        self,
        stream: trio.abc.ReceiveStream,
        *,
        max_frame: int = wire.MAX_FRAME,
        frame_deadline: float = wire.FRAME_DEADLINE,
        idle_timeout: float = wire.IDLE_TIMEOUT,
    ) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._max = max_frame
        self._frame_deadline = frame_deadline
        self._idle = idle_timeout

    async def next_frame(self) -> bytes | None:
        """The next frame without its newline, or None at a clean end of stream.

        Raises:
            FrameTooLarge: no newline within ``max_frame`` bytes.
            trio.TooSlowError: a deadline passed.
        """
        deadline = trio.current_time() + (self._frame_deadline if self._buf else self._idle)
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
            with trio.fail_at(deadline):
                chunk = await self._stream.receive_some(self._max)
            if not chunk:
                return None  # a half frame at EOF is dropped: nobody is left to answer
            if not self._buf:
                deadline = trio.current_time() + self._frame_deadline
            self._buf += chunk


def peer_uid(sock: trio.socket.SocketType) -> int | None:
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


SEND_DEADLINE = 10.0
MAX_CONNECTIONS = 256


class _PeerNotReading(Exception):
    pass


async def _send(stream: trio.abc.SendStream, data: bytes) -> None:
    """Send one answer; a client that stops reading is dropped instead of pinning this task."""
    with trio.move_on_after(SEND_DEADLINE):
        await stream.send_all(data)
        return
    raise _PeerNotReading


async def handle_connection(
    stream: trio.abc.Stream,
    handler: Handler,
    *,
    max_frame: int = wire.MAX_FRAME,
    frame_deadline: float = wire.FRAME_DEADLINE,
    idle_timeout: float = wire.IDLE_TIMEOUT,
) -> None:
    """Serve requests on one connection until it closes, misbehaves, or the daemon stops.

    Never raises for anything the peer does: bad frames get ``bad_request``, oversized ones
    ``frame_too_large`` and a close, stalls a close.
    """
    reader = FrameReader(
        stream, max_frame=max_frame, frame_deadline=frame_deadline, idle_timeout=idle_timeout
    )
    try:
        async with stream:
            while True:
                try:
                    frame = await reader.next_frame()
                except FrameTooLarge:
                    err = wire.WireError(
                        "frame_too_large",
                        f"a request longer than {max_frame} bytes (or without a newline); closing",
                        "send one JSON object per line",
                    )
                    await _send(stream, wire.encode_error(None, err))
                    return
                except trio.TooSlowError:
                    log.debug("closing a connection that stalled")
                    return
                if frame is None:
                    return
                if not frame.strip():
                    continue
                await _send(stream, await _answer(frame, handler))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return  # the client went away; nothing to tell anyone
    except _PeerNotReading:
        log.debug("closing a connection whose client stopped reading its answers")
    except Exception:
        # Nothing a peer sends may reach the accept loop's nursery: that would stop the daemon.
        log.exception("internal error on a connection; closing it")


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
        err = wire.WireError(
            "internal", "the daemon hit an internal error answering this request", "see the daemon's log"
        )
        return wire.encode_error(req.id, err)
    return wire.encode_result(req.id, result)


async def serve(
    listener: trio.SocketListener,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections forever, checking each peer's uid: another user gets nothing, not even an error."""
    my_uid = os.getuid()
    slots = trio.Semaphore(MAX_CONNECTIONS)  # past it, clients wait in the kernel's backlog
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            await slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                slots.release()
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                    log.error("accept failed (%s); pausing 1 s", os.strerror(exc.errno))
                    await trio.sleep(1.0)
                    continue
                raise
            uid = peer_uid(stream.socket)
            if uid != my_uid:
                log.warning("refused a connection from uid %s (this daemon serves uid %s)", uid, my_uid)
                await stream.aclose()
                slots.release()
                continue
            nursery.start_soon(_serve_one, stream, handler, slots)


async def _serve_one(stream: trio.SocketStream, handler: Handler, slots: trio.Semaphore) -> None:
    try:
        await handle_connection(stream, handler)
    finally:
        slots.release()

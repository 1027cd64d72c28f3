"""One connection's conversation: framing, deadlines, answers in order, over a trio stream or a raw socket.

A frame is one request line (DESIGN.md rule 6: size-capped, typed decoding, deadlines). Every failure a
peer can cause is answered per request or ends only its own connection: an exception escaping here into
the server's nursery would stop the daemon. ``brokerd.server`` accepts connections and hands them here.
"""

from __future__ import annotations

import logging
import socket as stdlib_socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from brokerd import wire

__all__ = [
    "SEND_DEADLINE",
    "YIELD_EVERY",
    "Conversation",
    "FrameReader",
    "FrameTooLarge",
    "Handler",
    "Immediate",
    "SocketChannel",
    "answer_at_once",
    "handle_connection",
]

log = logging.getLogger("brokerd.server")  # one logger for the socket side, as before the split

Handler = Callable[[wire.Request], Awaitable[Any]]

SEND_DEADLINE = 10.0
# A connection that always has data ready never sleeps; it yields to the others after this many socket
# operations in a row (and the accept loop after this many accepts).
YIELD_EVERY = 16


class Immediate(Protocol):
    """An optional answer-at-once hook next to the handler (``serve(..., immediate=broker.answer_now)``).

    Called with a decoded request before the handler, in the accept loop itself (and in a connection's task
    for the requests after its first), so it must never wait or block. It returns
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


class SocketChannel:
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
        if self._busy >= YIELD_EVERY:
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


def answer_at_once(frame: bytes, immediate: Immediate | None) -> bytes | None:
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


class Conversation:
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
            answer = answer_at_once(frame, immediate) if immediate is not None else None
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
            await Conversation(channel, reader, handler, immediate, max_frame).run()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return

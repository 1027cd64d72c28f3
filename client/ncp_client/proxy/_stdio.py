"""The host's side: newline-delimited JSON-RPC on standard input and output (the MCP stdio transport).

Input is split into lines with a cap on one line (``limit``): a longer message is skipped up to its
newline without being kept, and reported as :data:`OVERSIZED`, so a runaway host cannot grow the
proxy's memory. Output is one message per line, written whole by one task at a time.

Pipes and sockets are read and written through trio's non-blocking file descriptor streams; anything else
(a file, a terminal, ``/dev/null``) in a worker thread, since epoll refuses regular files and a terminal
shared with a shell must not be switched to non-blocking mode.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from typing import Final

import trio

__all__ = ["OVERSIZED", "HostInput", "HostOutput"]

OVERSIZED: Final = b""  # stands for a line that was over the limit (an empty line is never yielded)
_CHUNK = 65536


def _pollable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class HostInput:
    """Lines from the host (without their newline, CR stripped); :data:`OVERSIZED` for one over ``limit``."""

    def __init__(self, fd: int, limit: int) -> None:
        self._limit = limit
        self._fd = os.dup(fd)
        self._stream = trio.lowlevel.FdStream(self._fd) if _pollable(self._fd) else None

    async def _read(self) -> bytes:
        if self._stream is not None:
            return await self._stream.receive_some(_CHUNK)
        return await trio.to_thread.run_sync(os.read, self._fd, _CHUNK, abandon_on_cancel=True)

    async def lines(self) -> AsyncIterator[bytes]:
        buffer = bytearray()
        skipping = False  # inside a line that was over the limit
        while chunk := await self._read():
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                if skipping:
                    skipping = False
                elif len(buffer) + end - start > self._limit:
                    yield OVERSIZED
                else:
                    buffer += chunk[start:end]
                    line = bytes(buffer).rstrip(b"\r")
                    if line.strip():
                        yield line
                buffer.clear()
                start = end + 1
            if not skipping:
                buffer += chunk[start:]
                if len(buffer) > self._limit:
                    buffer.clear()
                    skipping = True
                    yield OVERSIZED
        if buffer.strip() and not skipping:  # a last message without its newline
            yield bytes(buffer).rstrip(b"\r")

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
        else:
            os.close(self._fd)


class HostOutput:
    """Writes whole lines to the host, one writer at a time."""

    def __init__(self, fd: int) -> None:
        self._fd = os.dup(fd)
        self._stream = trio.lowlevel.FdStream(self._fd) if _pollable(self._fd) else None
        self._lock = trio.Lock()

    async def send(self, line: bytes) -> None:
        """Raises trio.BrokenResourceError when the host closed its end."""
        data = line + b"\n"
        async with self._lock:
            if self._stream is not None:
                await self._stream.send_all(data)
                return
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self._fd, view)
                except BrokenPipeError:
                    raise trio.BrokenResourceError("the host closed standard output") from None
                view = view[written:]

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
        else:
            os.close(self._fd)

"""Async variant of the protocol call, for trio and asyncio alike.

It looks at which event loop is running the caller — trio if ``trio`` is imported and we are inside
``trio.run``, else asyncio — and uses that loop's Unix-socket support. Neither library is imported here
unless the caller is already using it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ncp_client._errors import ProtocolError
from ncp_client._paths import socket_path as _default_path
from ncp_client._protocol import DEFAULT_TIMEOUT, MAX_ANSWER, encode, not_running, unwrap

__all__ = ["acall"]


def _in_trio() -> bool:
    trio = sys.modules.get("trio")
    return trio is not None and bool(trio.lowlevel.in_trio_run())


async def acall(
    request: dict[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    socket_path: str | os.PathLike[str] | None = None,
) -> Any:
    """Like :func:`ncp_client._protocol.call` (the sending side shut down after the request, too),
    without blocking the event loop."""
    path = os.fspath(socket_path) if socket_path is not None else _default_path()
    line = await (_trio_exchange if _in_trio() else _asyncio_exchange)(path, encode(request), timeout)
    return unwrap(line)


def _timed_out(timeout: float) -> ProtocolError:
    return ProtocolError(
        "timeout", f"ncp-broker did not answer within {timeout:g} s", "see `ncp-broker status`"
    )


async def _trio_exchange(path: str, data: bytes, timeout: float) -> bytes:
    import trio

    try:
        with trio.fail_after(timeout):
            try:
                stream = await trio.open_unix_socket(path)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise not_running(path, exc.strerror or "no socket") from None
            async with stream:
                await stream.send_all(data)
                await stream.send_eof()
                buf = bytearray()
                while b"\n" not in buf:
                    if len(buf) > MAX_ANSWER:
                        raise ProtocolError("protocol_error", "the daemon's answer is too large")
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        raise ProtocolError(
                            "protocol_error", "the daemon closed the connection without answering"
                        )
                    buf += chunk
    except trio.TooSlowError:
        raise _timed_out(timeout) from None
    except (trio.BrokenResourceError, OSError) as exc:
        raise ProtocolError("protocol_error", f"the connection to ncp-broker broke: {exc}") from None
    return bytes(buf[: buf.index(b"\n")])


async def _asyncio_exchange(path: str, data: bytes, timeout: float) -> bytes:
    import asyncio

    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_unix_connection(path, limit=MAX_ANSWER)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise not_running(path, exc.strerror or "no socket") from None
            try:
                writer.write(data)
                writer.write_eof()
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        raise _timed_out(timeout) from None
    except (ValueError, asyncio.LimitOverrunError):
        raise ProtocolError("protocol_error", "the daemon's answer is too large") from None
    except OSError as exc:
        raise ProtocolError("protocol_error", f"the connection to ncp-broker broke: {exc}") from None
    if not line.endswith(b"\n"):
        raise ProtocolError("protocol_error", "the daemon closed the connection without answering")
    return line[:-1]

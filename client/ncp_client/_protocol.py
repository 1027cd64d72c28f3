"""Request/response over the daemon's socket with the standard library only (see docs/protocol.md)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ncp_client._errors import BrokerNotRunning, ProtocolError, error_from_answer
from ncp_client._paths import default_socket_path

__all__ = ["DEFAULT_TIMEOUT", "LOGIN_TIMEOUT", "MAX_ANSWER", "call", "encode", "not_running", "unwrap"]

DEFAULT_TIMEOUT = 5.0
LOGIN_TIMEOUT = 370.0  # the daemon gives a login 300 s, plus up to 60 s to learn its URL
MAX_ANSWER = 1024 * 1024  # answers are small; a runaway peer must not eat our memory


def not_running(path: Path, why: str) -> BrokerNotRunning:
    return BrokerNotRunning(
        "not_running", f"ncp-broker is not running on {path} ({why})", "start it with: ncp-broker start"
    )


def encode(request: dict[str, Any]) -> bytes:
    return json.dumps(request, separators=(",", ":")).encode() + b"\n"


def unwrap(line: bytes) -> Any:
    """The ``result`` of one answer line.

    Raises:
        ServerError: the daemon answered with an error.
        ProtocolError: the line is not a valid answer.
    """
    try:
        answer = json.loads(line)
    except ValueError:
        raise ProtocolError("protocol_error", "the daemon sent an answer that is not JSON") from None
    if not isinstance(answer, dict) or "ok" not in answer:
        raise ProtocolError("protocol_error", "the daemon sent an answer without 'ok'")
    if answer["ok"] is True:
        return answer.get("result")
    raise error_from_answer(answer.get("error"))


def call(
    request: dict[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    socket_path: str | os.PathLike[str] | None = None,
) -> Any:
    """Send one request on a fresh connection and return the ``result``.

    ``timeout`` bounds the whole exchange (connect, send, answer).

    Raises:
        BrokerNotRunning: no socket, or nobody listening on it.
        ProtocolError: timeout, a broken connection, or an answer that is not one.
        ServerError: the daemon's error answer (a subclass per code).
    """
    path = Path(socket_path) if socket_path is not None else default_socket_path()
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise not_running(path, exc.strerror or "no socket") from None
        except TimeoutError:
            raise ProtocolError(
                "timeout", f"ncp-broker did not accept a connection on {path} within {timeout:g} s"
            ) from None
        except OSError as exc:  # EAGAIN (backlog full: busy, not gone), EACCES, ...
            raise ProtocolError(
                "connect_failed",
                f"cannot connect to ncp-broker on {path}: {exc.strerror or exc}",
                "see `ncp-broker status`",
            ) from None
        try:
            sock.sendall(encode(request))
            line = _read_line(sock, deadline)
        except TimeoutError:
            raise ProtocolError(
                "timeout",
                f"ncp-broker did not answer within {timeout:g} s",
                "see `ncp-broker status`; raise the timeout with --timeout",
            ) from None
        except OSError as exc:
            raise ProtocolError("protocol_error", f"the connection to ncp-broker broke: {exc}") from None
    finally:
        sock.close()
    return unwrap(line)


def _read_line(sock: socket.socket, deadline: float) -> bytes:
    buf = bytearray()
    while True:
        end = buf.find(b"\n")
        if end >= 0:
            return bytes(buf[:end])
        if len(buf) > MAX_ANSWER:
            raise ProtocolError("protocol_error", "the daemon's answer is too large")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise ProtocolError("protocol_error", "the daemon closed the connection without answering")
        buf += chunk

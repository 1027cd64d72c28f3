"""Request/response over the daemon's socket with the standard library only (see docs/protocol.md).

``ncp-token`` runs this once per process, so start-up counts more than anything else here: ``import
socket`` builds four enums and ``import json`` compiles regular expressions, together about as long as the
whole interpreter takes to start. This module therefore uses the two C modules underneath them,
``_socket`` (the socket type itself) and ``_json`` (the same string escaper and scanner ``json`` uses), and
falls back to ``socket`` and ``json`` on an interpreter that lacks them. The answer is parsed exactly as
``json.loads`` would; ``tests/unit/test_client_protocol.py`` holds the two equal.
"""

from __future__ import annotations

import os
import time

from ncp_client._errors import BrokerNotRunning, ProtocolError, error_from_answer
from ncp_client._paths import socket_path as _default_path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

try:
    import _socket as _sock  # the C half of `socket`: everything call() needs, without the enums
except ImportError:  # pragma: no cover - every CPython has it
    import socket as _sock  # type: ignore[no-redef]

__all__ = [
    "DEFAULT_TIMEOUT",
    "LOGIN_TIMEOUT",
    "MAX_ANSWER",
    "call",
    "decode",
    "encode",
    "json_text",
    "not_running",
    "unwrap",
]

DEFAULT_TIMEOUT = 5.0
LOGIN_TIMEOUT = 370.0  # the daemon gives a login 300 s, plus up to 60 s to learn its URL
MAX_ANSWER = 1024 * 1024  # answers are small; a runaway peer must not eat our memory


def not_running(path: str | os.PathLike[str], why: str) -> BrokerNotRunning:
    return BrokerNotRunning(
        "not_running",
        f"ncp-broker is not running on {os.fspath(path)} ({why})",
        "start it with: ncp-broker start",
    )


# ---- JSON on the C accelerators -------------------------------------------------------------------


def _json_codec() -> tuple[Callable[[str], str], Callable[[str, int], tuple[Any, int]]]:
    """(string escaper, value scanner) from ``_json``, set up as ``json``'s defaults set them up.

    Raises:
        ImportError, AttributeError, TypeError: no usable ``_json`` (then ``json`` itself is used).
    """
    import _json

    class _Defaults:  # the attributes json.JSONDecoder() gives the C scanner
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = {
            "-Infinity": float("-inf"),
            "Infinity": float("inf"),
            "NaN": float("nan"),
        }.__getitem__

    # typeshed types the context as a scanner itself; it needs only the attributes above
    return _json.encode_basestring_ascii, _json.make_scanner(_Defaults())  # type: ignore[arg-type]


try:
    _escape, _scan = _json_codec()
except (ImportError, AttributeError, TypeError):  # pragma: no cover - every CPython has _json
    import json as _stdlib_json

    def json_text(value: object) -> str:
        return _stdlib_json.dumps(value, separators=(",", ":"))

    def encode(request: dict[str, Any]) -> bytes:
        return (json_text(request) + "\n").encode()

    def decode(text: str) -> Any:
        return _stdlib_json.loads(text)

else:
    _WHITESPACE = " \t\n\r"  # what JSON allows between tokens
    _FLOATS = {float("inf"): "Infinity", float("-inf"): "-Infinity"}

    def json_text(value: object) -> str:
        """``json.dumps(value, separators=(",", ":"))`` for what requests hold (no indent, no sorting).

        Raises:
            TypeError: a value JSON has no text for.
        """
        return _value(value)

    def _value(value: object) -> str:
        if isinstance(value, str):
            return _escape(value)
        if value is None:
            return "null"
        if value is True:
            return "true"
        if value is False:
            return "false"
        if isinstance(value, int):
            return int.__repr__(value)
        if isinstance(value, float):
            if value != value:  # noqa: PLR0124 (NaN is the one value unequal to itself)
                return "NaN"
            return _FLOATS.get(value) or float.__repr__(value)
        if isinstance(value, list | tuple):
            return "[" + ",".join(_value(item) for item in value) + "]"
        if isinstance(value, dict):
            return "{" + ",".join(_key(k) + ":" + _value(v) for k, v in value.items()) + "}"
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    def _key(key: object) -> str:
        if isinstance(key, str):
            return _escape(key)
        if key is None or isinstance(key, int | float):  # as json.dumps: their JSON text, quoted
            return _escape(_value(key))
        raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")

    def encode(request: dict[str, Any]) -> bytes:
        """One request frame: compact JSON (as ``json.dumps`` with ``separators=(",", ":")``), newline."""
        return (_value(request) + "\n").encode()

    def decode(text: str) -> Any:
        """``json.loads(text)``.

        Raises:
            ValueError: ``text`` is not one JSON value.
        """
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            value, end = _scan(text, start)
        except StopIteration:
            raise ValueError("no JSON value") from None
        if text[end:].strip(_WHITESPACE):
            raise ValueError("extra data after the JSON value")
        return value


def unwrap(line: bytes) -> Any:
    """The ``result`` of one answer line.

    Raises:
        ServerError: the daemon answered with an error.
        ProtocolError: the line is not a valid answer.
    """
    try:
        answer = decode(line.decode())
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProtocolError("protocol_error", "the daemon sent an answer that is not JSON") from None
    if not isinstance(answer, dict) or "ok" not in answer:
        raise ProtocolError("protocol_error", "the daemon sent an answer without 'ok'")
    if answer["ok"] is True:
        return answer.get("result")
    raise error_from_answer(answer.get("error"))


# ---- the exchange ---------------------------------------------------------------------------------


def call(
    request: dict[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    socket_path: str | os.PathLike[str] | None = None,
) -> Any:
    """Send one request on a fresh connection and return the ``result``.

    ``timeout`` bounds the whole exchange (connect, send, answer). After the request the client shuts
    down its sending side: the daemon then knows that no second request follows, and answers and
    closes without waiting for one.

    Raises:
        BrokerNotRunning: no socket, or nobody listening on it.
        ProtocolError: timeout, a broken connection, or an answer that is not one.
        ServerError: the daemon's error answer (a subclass per code).
    """
    path = os.fspath(socket_path) if socket_path is not None else _default_path()
    deadline = time.monotonic() + timeout
    sock = _sock.socket(_sock.AF_UNIX, _sock.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
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
            sock.shutdown(_sock.SHUT_WR)
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


def _read_line(sock: _sock.socket, deadline: float) -> bytes:
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

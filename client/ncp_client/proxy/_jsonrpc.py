"""JSON-RPC 2.0 messages as the proxy sees them: the host's bytes, parsed once, classified, never rebuilt.

The proxy forwards the bytes it received (``raw``); the parsed ``body`` is only read, to choose HTTP headers,
to match answers to requests and to build the few error answers the proxy writes itself. Those carry the
code and hint of what went wrong in ``error.data.ncp_broker``, so a host (or a person reading its log) can
tell a broker problem from the remote server's own errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_REQUEST",
    "PARSE_ERROR",
    "Message",
    "NotJsonRpc",
    "error_line",
    "id_key",
    "parse",
    "single_line",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INTERNAL_ERROR = -32603  # what the MCP SDKs answer for a transport failure, so hosts treat it alike

Kind = Literal["request", "notification", "response", "batch"]


class NotJsonRpc(ValueError):
    """The line is not one JSON-RPC message (or batch); ``code`` is the JSON-RPC error to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Message:
    """One message from the host (or a batch of them, which the 2025-03-26 revision still allows)."""

    raw: bytes
    body: Any
    kind: Kind
    method: str | None = None
    id: Any = None

    @property
    def params(self) -> dict[str, Any]:
        params = self.body.get("params") if isinstance(self.body, dict) else None
        return params if isinstance(params, dict) else {}

    def request_ids(self) -> list[Any]:
        """The ids this message expects answers for: its own, or those of a batch's requests."""
        if self.kind == "request":
            return [self.id]
        if self.kind == "batch":
            return [m["id"] for m in self.body if isinstance(m, dict) and "method" in m and "id" in m]
        return []


def _classify(body: dict[str, Any]) -> tuple[Kind, str | None, Any]:
    method = body.get("method")
    if isinstance(method, str):
        return ("request" if "id" in body else "notification"), method, body.get("id")
    return "response", None, body.get("id")


def parse(raw: bytes) -> Message:
    """Classify one line from the host.

    Raises:
        NotJsonRpc: the line is not JSON (parse error) or not an object or array (invalid request).
    """
    try:
        body = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        raise NotJsonRpc(PARSE_ERROR, "Parse error: the line is not JSON") from None
    if isinstance(body, dict):
        kind, method, ident = _classify(body)
        return Message(raw, body, kind, method, ident)
    if isinstance(body, list) and body and all(isinstance(m, dict) for m in body):
        return Message(raw, body, "batch")
    raise NotJsonRpc(INVALID_REQUEST, "Invalid Request: a message must be a JSON object (or a batch of them)")


def id_key(ident: Any) -> str:
    """A dictionary key for a JSON-RPC id that keeps ``1``, ``1.0`` and ``"1"`` apart, as JSON does."""
    return json.dumps(ident)


def error_line(ident: Any, code: int, message: str, *, broker_code: str = "", hint: str = "") -> bytes:
    """A JSON-RPC error answer written by the proxy itself."""
    error: dict[str, Any] = {"code": code, "message": message}
    if broker_code or hint:
        error["data"] = {"ncp_broker": {"code": broker_code, "hint": hint}}
    return json.dumps({"jsonrpc": "2.0", "id": ident, "error": error}, separators=(",", ":")).encode()


def single_line(data: bytes) -> bytes:
    """``data`` (one JSON value) on one line: raw CR and LF can only be whitespace between JSON tokens."""
    if b"\n" in data or b"\r" in data:
        return data.replace(b"\r", b" ").replace(b"\n", b" ")
    return data

"""Errors the thin client raises.

    BrokerError                 every failure; ``code``, ``message``, ``hint`` and an exit status
    ├── BrokerNotRunning        nothing listens on the socket (hint: ncp-broker start)
    ├── ProtocolError           the daemon's answer made no sense, or the connection broke mid-answer
    └── ServerError             the daemon answered with an error ``code`` for this request:
        ├── UnknownServer           ``unknown_server``
        ├── NeedsLogin              ``needs_login``, ``login_in_progress``, ``login_unavailable``
        ├── AuthServerUnreachable   ``as_unreachable``
        ├── Stopping                ``stopping``: the daemon is stopping and starts no new exchange
        └── InsufficientScope       ``insufficient_scope`` (step-up gave up)

Exit statuses (``ncp-token``): 0 ok, 2 usage, 3 not running (or stopping), 4 unknown server, 5 needs login,
6 authorization server unreachable, 7 protocol error, 1 anything else the daemon refused.
"""

from __future__ import annotations

__all__ = [
    "AuthServerUnreachable",
    "BrokerError",
    "BrokerNotRunning",
    "InsufficientScope",
    "NeedsLogin",
    "ProtocolError",
    "ServerError",
    "Stopping",
    "UnknownServer",
    "error_from_answer",
]


class BrokerError(Exception):
    exit_status = 1

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class BrokerNotRunning(BrokerError):
    exit_status = 3


class ProtocolError(BrokerError):
    exit_status = 7


class ServerError(BrokerError):
    pass


class UnknownServer(ServerError):
    exit_status = 4


class NeedsLogin(ServerError):
    exit_status = 5


class AuthServerUnreachable(ServerError):
    exit_status = 6


class InsufficientScope(ServerError):
    pass


class Stopping(ServerError):
    """The daemon is stopping: it serves what it holds but starts no new exchange. Start it again."""

    exit_status = 3


_BY_CODE: dict[str, type[ServerError]] = {
    "unknown_server": UnknownServer,
    "needs_login": NeedsLogin,
    "login_in_progress": NeedsLogin,
    "login_unavailable": NeedsLogin,
    "as_unreachable": AuthServerUnreachable,
    "insufficient_scope": InsufficientScope,
    "stopping": Stopping,
}


def error_from_answer(error: object) -> BrokerError:
    """The exception for an ``{"code", "message", "hint"}`` error object from the daemon."""
    if not isinstance(error, dict):
        return ProtocolError("protocol_error", "the daemon sent an error without details")
    code = str(error.get("code", "unknown"))
    message = str(error.get("message", code))
    hint = str(error.get("hint", ""))
    return _BY_CODE.get(code, ServerError)(code, message, hint)

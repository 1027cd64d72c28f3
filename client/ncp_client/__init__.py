"""Thin client for ncp-broker: ask the daemon for a fresh access token.

    >>> import ncp_client
    >>> token = ncp_client.get_token("myserver")                      # doctest: +SKIP
    >>> httpx.AsyncClient(auth=ncp_client.BrokerAuth("myserver"))      # doctest: +SKIP

``get_token`` and the ``ncp-token`` command use the standard library only; ``BrokerAuth`` imports httpx
when first used. Every failure is a :class:`BrokerError` whose ``hint`` says what to do.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ncp_client._async import acall
from ncp_client._errors import (
    AuthServerUnreachable,
    BrokerError,
    BrokerNotRunning,
    NeedsLogin,
    ProtocolError,
    ServerError,
    UnknownServer,
)
from ncp_client._paths import default_socket_path
from ncp_client._protocol import DEFAULT_TIMEOUT, call

if TYPE_CHECKING:
    from ncp_client._auth import BrokerAuth, broker_auth_for_httpx2

__all__ = [
    "AuthServerUnreachable",
    "BrokerAuth",
    "BrokerError",
    "BrokerNotRunning",
    "NeedsLogin",
    "ProtocolError",
    "ServerError",
    "UnknownServer",
    "acall",
    "aget_token",
    "atoken_rejected",
    "broker_auth_for_httpx2",
    "call",
    "default_socket_path",
    "get_token",
    "token_rejected",
]

SocketPath = str | os.PathLike[str] | None


def _token_request(server: str, min_ttl: float | None) -> dict[str, Any]:
    request: dict[str, Any] = {"op": "get_token", "server": server}
    if min_ttl is not None:
        request["min_ttl"] = min_ttl
    return request


def _token(result: Any) -> str:
    if not isinstance(result, dict) or not isinstance(result.get("token"), str):
        raise ProtocolError("protocol_error", "the daemon's answer has no token")
    return str(result["token"])


def get_token(
    server: str,
    *,
    min_ttl: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    socket_path: SocketPath = None,
) -> str:
    """A fresh access token for ``server`` with at least ``min_ttl`` seconds left (daemon default 30 s).

    Raises:
        BrokerNotRunning, UnknownServer, NeedsLogin, AuthServerUnreachable, ProtocolError, ServerError.
    """
    return _token(call(_token_request(server, min_ttl), timeout=timeout, socket_path=socket_path))


async def aget_token(
    server: str,
    *,
    min_ttl: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    socket_path: SocketPath = None,
) -> str:
    """:func:`get_token` for trio or asyncio code."""
    return _token(await acall(_token_request(server, min_ttl), timeout=timeout, socket_path=socket_path))


def token_rejected(
    server: str, token: str, *, timeout: float = DEFAULT_TIMEOUT, socket_path: SocketPath = None
) -> str:
    """Tell the daemon that ``server`` answered 401 to ``token``; returns the token to retry with.

    The daemon refreshes only if ``token`` is still its current one; if another client already caused a
    refresh, the newer token comes back at once.
    """
    request = {"op": "token_rejected", "server": server, "token": token}
    return _token(call(request, timeout=timeout, socket_path=socket_path))


async def atoken_rejected(
    server: str, token: str, *, timeout: float = DEFAULT_TIMEOUT, socket_path: SocketPath = None
) -> str:
    """:func:`token_rejected` for trio or asyncio code."""
    request = {"op": "token_rejected", "server": server, "token": token}
    return _token(await acall(request, timeout=timeout, socket_path=socket_path))


def __getattr__(name: str) -> Any:
    if name in ("BrokerAuth", "broker_auth_for_httpx2"):  # imports httpx, so only on first use
        from ncp_client import _auth

        return getattr(_auth, name)
    raise AttributeError(f"module 'ncp_client' has no attribute {name!r}")

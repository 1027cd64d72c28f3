"""Thin client for ncp-broker: ask the daemon for a fresh access token.

    >>> import ncp_client
    >>> token = ncp_client.get_token("myserver")                      # doctest: +SKIP
    >>> httpx.AsyncClient(auth=ncp_client.BrokerAuth("myserver"))      # doctest: +SKIP

``get_token`` and the ``ncp-token`` command use the standard library only; ``BrokerAuth`` imports httpx
when first used. Every failure is a :class:`BrokerError` whose ``hint`` says what to do.
"""

from __future__ import annotations

import os
import time

from ncp_client._errors import (
    AuthServerUnreachable,
    BrokerError,
    BrokerNotRunning,
    InsufficientScope,
    NeedsLogin,
    ProtocolError,
    ServerError,
    Stopping,
    UnknownServer,
)
from ncp_client._paths import default_socket_path
from ncp_client._protocol import DEFAULT_TIMEOUT, LOGIN_TIMEOUT, call

# `ncp-token` imports this package first, so it loads nothing beyond what printing a token needs: no
# typing, no asyncio helpers, no httpx. Those names are loaded on first use (__getattr__ below); type
# checkers see them through these imports.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from ncp_client._async import acall
    from ncp_client._auth import BrokerAuth, broker_auth_for_httpx2

__all__ = [
    "AuthServerUnreachable",
    "BrokerAuth",
    "BrokerError",
    "BrokerNotRunning",
    "InsufficientScope",
    "NeedsLogin",
    "ProtocolError",
    "ServerError",
    "Stopping",
    "UnknownServer",
    "acall",
    "aget_token",
    "alogin",
    "ascope_insufficient",
    "atoken_rejected",
    "broker_auth_for_httpx2",
    "call",
    "default_socket_path",
    "get_token",
    "login",
    "scope_insufficient",
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
    from ncp_client._async import acall

    return _token(await acall(_token_request(server, min_ttl), timeout=timeout, socket_path=socket_path))


def _rejected_request(server: str, token: str, www_authenticate: str | None) -> dict[str, Any]:
    request: dict[str, Any] = {"op": "token_rejected", "server": server, "token": token}
    if www_authenticate is not None:
        request["www_authenticate"] = www_authenticate
    return request


def token_rejected(
    server: str,
    token: str,
    *,
    www_authenticate: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    socket_path: SocketPath = None,
) -> str:
    """Tell the daemon that ``server`` answered 401 to ``token``; returns the token to retry with.

    The daemon refreshes only if ``token`` is still its current one; if another client already caused a
    refresh, the newer token comes back at once. Pass the 401's ``WWW-Authenticate`` header so the daemon
    notices a server that moved to another authorization server (then: :class:`NeedsLogin`).
    """
    request = _rejected_request(server, token, www_authenticate)
    return _token(call(request, timeout=timeout, socket_path=socket_path))


async def atoken_rejected(
    server: str,
    token: str,
    *,
    www_authenticate: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    socket_path: SocketPath = None,
) -> str:
    """:func:`token_rejected` for trio or asyncio code."""
    from ncp_client._async import acall

    request = _rejected_request(server, token, www_authenticate)
    return _token(await acall(request, timeout=timeout, socket_path=socket_path))


def _step_up_request(
    server: str, token: str | None, www_authenticate: str | None, scopes: Sequence[str]
) -> dict[str, Any]:
    request: dict[str, Any] = {"op": "scope_insufficient", "server": server, "scopes": list(scopes)}
    if token is not None:
        request["token"] = token
    if www_authenticate is not None:
        request["www_authenticate"] = www_authenticate
    return request


def scope_insufficient(
    server: str,
    token: str | None,
    *,
    www_authenticate: str | None = None,
    scopes: Sequence[str] = (),
    timeout: float = LOGIN_TIMEOUT,
    socket_path: SocketPath = None,
) -> str:
    """Step-up: ``server`` answered 403 ``insufficient_scope`` to ``token``; returns the token to retry with.

    Give the 403's ``WWW-Authenticate`` header (or the ``scopes`` it named). The daemon re-authorizes with
    the scopes it holds plus the challenged ones, opening the browser, and answers once the login is done
    (hence the login-length ``timeout``).

    Raises:
        InsufficientScope: the daemon gave up after three authorizations for that scope set.
        NeedsLogin: the daemon could not open a browser (the hint says what to run), or the login failed.
    """
    request = _step_up_request(server, token, www_authenticate, scopes)
    return _token(call(request, timeout=timeout, socket_path=socket_path))


async def ascope_insufficient(
    server: str,
    token: str | None,
    *,
    www_authenticate: str | None = None,
    scopes: Sequence[str] = (),
    timeout: float = LOGIN_TIMEOUT,
    socket_path: SocketPath = None,
) -> str:
    """:func:`scope_insufficient` for trio or asyncio code."""
    from ncp_client._async import acall

    request = _step_up_request(server, token, www_authenticate, scopes)
    return _token(await acall(request, timeout=timeout, socket_path=socket_path))


def login(
    server: str, *, open_browser: bool = True, timeout: float = LOGIN_TIMEOUT, socket_path: SocketPath = None
) -> str:
    """Log in to ``server`` through the daemon (or join the login in progress) and return the token.

    With ``open_browser`` the daemon opens the authorization URL itself; when it cannot (no display, no
    ``$BROWSER``) this raises :class:`NeedsLogin` at once, and the login stays pending for
    ``ncp-broker login SERVER`` to finish.
    """
    deadline = time.monotonic() + timeout
    start = {"op": "login", "server": server, "open_browser": open_browser}
    call(start, timeout=timeout, socket_path=socket_path)
    wait = {"op": "login_wait", "server": server}
    return _token(call(wait, timeout=max(1.0, deadline - time.monotonic()), socket_path=socket_path))


async def alogin(
    server: str, *, open_browser: bool = True, timeout: float = LOGIN_TIMEOUT, socket_path: SocketPath = None
) -> str:
    """:func:`login` for trio or asyncio code."""
    from ncp_client._async import acall

    deadline = time.monotonic() + timeout
    start = {"op": "login", "server": server, "open_browser": open_browser}
    await acall(start, timeout=timeout, socket_path=socket_path)
    wait = {"op": "login_wait", "server": server}
    return _token(await acall(wait, timeout=max(1.0, deadline - time.monotonic()), socket_path=socket_path))


_LAZY = {"acall": "_async", "BrokerAuth": "_auth", "broker_auth_for_httpx2": "_auth"}


def __getattr__(name: str) -> Any:
    """The names that load more (``acall``; ``BrokerAuth`` imports httpx), on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ncp_client' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"ncp_client.{module}"), name)
    globals()[name] = value  # later look-ups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

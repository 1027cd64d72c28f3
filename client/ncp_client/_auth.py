"""``BrokerAuth``: an HTTP client auth that takes its Bearer token from ncp-broker.

It does non-HTTP I/O (the daemon's socket), so, as httpx's docs advise, it overrides both
``sync_auth_flow`` and ``async_auth_flow`` instead of ``auth_flow``. On a 401 it tells the daemon which
token was refused and retries once with what the daemon returns — unless that is the same token, in
which case retrying cannot help and the 401 is returned to the caller.

Two classes share one flow: :class:`BrokerAuth` for ``httpx`` and :class:`BrokerAuth2` for ``httpx2``
(which the MCP Python SDK 2.x sends through; its client only accepts ``httpx2.Auth``). The flows touch
nothing but ``request.headers`` and ``response.status_code``, which both libraries share.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncGenerator, Generator
from typing import Any, Protocol

import httpx

from ncp_client import aget_token, atoken_rejected, get_token, token_rejected
from ncp_client._protocol import DEFAULT_TIMEOUT

__all__ = ["BrokerAuth", "broker_auth_for_httpx2"]


class _Request(Protocol):
    headers: Any


class _Response(Protocol):
    status_code: int


class _Flows:
    requires_request_body = True  # the body is replayed on the retry after a 401

    def __init__(
        self,
        server: str,
        *,
        min_ttl: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        socket_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.server = server
        self._min_ttl = min_ttl
        self._timeout = timeout
        self._socket_path = socket_path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.server!r})"

    @staticmethod
    def _set(request: _Request, token: str) -> None:
        request.headers["Authorization"] = f"Bearer {token}"

    def _sync(self, request: Any) -> Generator[Any, Any, None]:
        token = get_token(
            self.server, min_ttl=self._min_ttl, timeout=self._timeout, socket_path=self._socket_path
        )
        self._set(request, token)
        response: _Response = yield request
        if response.status_code == 401:
            newer = token_rejected(self.server, token, timeout=self._timeout, socket_path=self._socket_path)
            if newer != token:
                self._set(request, newer)
                yield request

    async def _async(self, request: Any) -> AsyncGenerator[Any, Any]:
        token = await aget_token(
            self.server, min_ttl=self._min_ttl, timeout=self._timeout, socket_path=self._socket_path
        )
        self._set(request, token)
        response: _Response = yield request
        if response.status_code == 401:
            newer = await atoken_rejected(
                self.server, token, timeout=self._timeout, socket_path=self._socket_path
            )
            if newer != token:
                self._set(request, newer)
                yield request


class BrokerAuth(_Flows, httpx.Auth):
    """Authenticate every request to one brokered server: ``httpx.Client(auth=BrokerAuth("name"))``."""

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        return self._sync(request)

    def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        return self._async(request)


@functools.cache
def _httpx2_class() -> type[_Flows]:
    import httpx2

    class BrokerAuth2(_Flows, httpx2.Auth):
        """``BrokerAuth`` for ``httpx2`` clients."""

        def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
            return self._sync(request)

        def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
            return self._async(request)

    return BrokerAuth2


def broker_auth_for_httpx2(
    server: str,
    *,
    min_ttl: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    socket_path: str | os.PathLike[str] | None = None,
) -> Any:
    """``BrokerAuth`` for ``httpx2`` clients, which the MCP Python SDK 2.x sends through::

    httpx2.AsyncClient(auth=ncp_client.broker_auth_for_httpx2("myserver"))
    """
    return _httpx2_class()(server, min_ttl=min_ttl, timeout=timeout, socket_path=socket_path)

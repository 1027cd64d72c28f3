"""``BrokerAuth``: an ``httpx.Auth`` that takes its Bearer token from ncp-broker.

It does non-HTTP I/O (the daemon's socket), so, as httpx's docs advise, it overrides both
``sync_auth_flow`` and ``async_auth_flow`` instead of ``auth_flow``. On a 401 it tells the daemon which
token was refused and retries once with what the daemon returns — unless that is the same token, in
which case retrying cannot help and the 401 is returned to the caller.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Generator

import httpx

from ncp_client import aget_token, atoken_rejected, get_token, token_rejected
from ncp_client._protocol import DEFAULT_TIMEOUT

__all__ = ["BrokerAuth"]


class BrokerAuth(httpx.Auth):
    """Authenticate every request to one brokered server: ``httpx.Client(auth=BrokerAuth("name"))``."""

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
        return f"BrokerAuth({self.server!r})"

    @staticmethod
    def _set(request: httpx.Request, token: str) -> None:
        request.headers["Authorization"] = f"Bearer {token}"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = get_token(
            self.server, min_ttl=self._min_ttl, timeout=self._timeout, socket_path=self._socket_path
        )
        self._set(request, token)
        response = yield request
        if response.status_code == 401:
            newer = token_rejected(self.server, token, timeout=self._timeout, socket_path=self._socket_path)
            if newer != token:
                self._set(request, newer)
                yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await aget_token(
            self.server, min_ttl=self._min_ttl, timeout=self._timeout, socket_path=self._socket_path
        )
        self._set(request, token)
        response = yield request
        if response.status_code == 401:
            newer = await atoken_rejected(
                self.server, token, timeout=self._timeout, socket_path=self._socket_path
            )
            if newer != token:
                self._set(request, newer)
                yield request

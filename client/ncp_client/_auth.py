"""``BrokerAuth``: an HTTP client auth that takes its Bearer token from ncp-broker.

It does non-HTTP I/O (the daemon's socket), so, as httpx's docs advise, it overrides both
``sync_auth_flow`` and ``async_auth_flow`` instead of ``auth_flow``. Each request is sent at most twice:

* **401**: it tells the daemon which token was refused, with the 401's ``WWW-Authenticate`` (the daemon
  refreshes, or notices that the server moved to another authorization server), and resends once with
  what the daemon returns — unless that is the same token, which cannot help: the 401 goes to the caller.
* **403 with** ``error="insufficient_scope"``: it asks the daemon to step up (re-authorize with more
  scope, which opens the browser) and resends once with the new token. The daemon gives up after three
  authorizations for the same scopes; then the 403 goes to the caller. Any other 403 goes to the caller.
* **No grant** (first use, or the grant ended): with ``login=True`` (the default) it asks the daemon to log
  in, which opens the browser, and waits for it; with ``login=False`` it raises :class:`NeedsLogin`.

Two classes share one flow: :class:`BrokerAuth` for ``httpx`` and the class that
:func:`broker_auth_for_httpx2` makes for ``httpx2`` (which the MCP Python SDK 2.x sends through; its client
only accepts ``httpx2.Auth``). The flows touch nothing but ``request.headers``, ``response.status_code``
and ``response.headers``, which both libraries share.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncGenerator, Generator
from typing import Any, Protocol

import httpx

from ncp_client import (
    aget_token,
    alogin,
    ascope_insufficient,
    atoken_rejected,
    get_token,
    login,
    scope_insufficient,
    token_rejected,
)
from ncp_client._errors import InsufficientScope, NeedsLogin
from ncp_client._protocol import DEFAULT_TIMEOUT, LOGIN_TIMEOUT

__all__ = ["BrokerAuth", "broker_auth_for_httpx2"]

log = logging.getLogger("ncp_client")


class _Request(Protocol):
    headers: Any


class _Response(Protocol):
    status_code: int
    headers: Any


def _challenge(response: _Response) -> str | None:
    """The response's ``WWW-Authenticate`` (several header lines joined, as HTTP allows)."""
    values = response.headers.get_list("www-authenticate")
    return ", ".join(values) if values else None


def _is_step_up(response: _Response, challenge: str | None) -> bool:
    # The daemon parses the challenge properly; this only keeps other 403s off the socket.
    return response.status_code == 403 and challenge is not None and "insufficient_scope" in challenge


class _Flows:
    requires_request_body = True  # the body is replayed on the retry

    def __init__(
        self,
        server: str,
        *,
        min_ttl: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        login: bool = True,
        login_timeout: float = LOGIN_TIMEOUT,
        socket_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.server = server
        self._min_ttl = min_ttl
        self._timeout = timeout
        self._login = login
        self._login_timeout = login_timeout
        self._socket_path = socket_path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.server!r})"

    @staticmethod
    def _set(request: _Request, token: str) -> None:
        request.headers["Authorization"] = f"Bearer {token}"

    def _step_up_failed(self, exc: InsufficientScope) -> None:
        log.warning("%s: %s", self.server, exc.message)

    # ---- sync ----------------------------------------------------------------------------------------

    def _login_sync(self, exc: NeedsLogin) -> str:
        if not self._login:
            raise exc
        return login(self.server, timeout=self._login_timeout, socket_path=self._socket_path)

    def _sync(self, request: Any) -> Generator[Any, Any, None]:
        try:
            token = get_token(
                self.server, min_ttl=self._min_ttl, timeout=self._timeout, socket_path=self._socket_path
            )
        except NeedsLogin as exc:
            token = self._login_sync(exc)
        self._set(request, token)
        response: _Response = yield request
        challenge = _challenge(response)
        if response.status_code == 401:
            try:
                newer = token_rejected(
                    self.server,
                    token,
                    www_authenticate=challenge,
                    timeout=self._timeout,
                    socket_path=self._socket_path,
                )
            except NeedsLogin as exc:
                newer = self._login_sync(exc)
        elif self._login and _is_step_up(response, challenge):
            try:
                newer = scope_insufficient(
                    self.server,
                    token,
                    www_authenticate=challenge,
                    timeout=self._login_timeout,
                    socket_path=self._socket_path,
                )
            except InsufficientScope as exc:
                self._step_up_failed(exc)
                return
        else:
            return
        if newer != token:
            self._set(request, newer)
            yield request

    # ---- async (the same flow) -----------------------------------------------------------------------

    async def _login_async(self, exc: NeedsLogin) -> str:
        if not self._login:
            raise exc
        return await alogin(self.server, timeout=self._login_timeout, socket_path=self._socket_path)

    async def _async(self, request: Any) -> AsyncGenerator[Any, Any]:
        try:
            token = await aget_token(
                self.server, min_ttl=self._min_ttl, timeout=self._timeout, socket_path=self._socket_path
            )
        except NeedsLogin as exc:
            token = await self._login_async(exc)
        self._set(request, token)
        response: _Response = yield request
        challenge = _challenge(response)
        if response.status_code == 401:
            try:
                newer = await atoken_rejected(
                    self.server,
                    token,
                    www_authenticate=challenge,
                    timeout=self._timeout,
                    socket_path=self._socket_path,
                )
            except NeedsLogin as exc:
                newer = await self._login_async(exc)
        elif self._login and _is_step_up(response, challenge):
            try:
                newer = await ascope_insufficient(
                    self.server,
                    token,
                    www_authenticate=challenge,
                    timeout=self._login_timeout,
                    socket_path=self._socket_path,
                )
            except InsufficientScope as exc:
                self._step_up_failed(exc)
                return
        else:
            return
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
    login: bool = True,
    login_timeout: float = LOGIN_TIMEOUT,
    socket_path: str | os.PathLike[str] | None = None,
) -> Any:
    """``BrokerAuth`` for ``httpx2`` clients, which the MCP Python SDK 2.x sends through::

    httpx2.AsyncClient(auth=ncp_client.broker_auth_for_httpx2("myserver"))
    """
    return _httpx2_class()(
        server,
        min_ttl=min_ttl,
        timeout=timeout,
        login=login,
        login_timeout=login_timeout,
        socket_path=socket_path,
    )

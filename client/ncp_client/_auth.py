"""``BrokerAuth``: an HTTP client auth that takes its token (and, for DPoP, its proof) from ncp-broker.

It does non-HTTP I/O (the daemon's socket), so, as httpx's docs advise, it overrides both
``sync_auth_flow`` and ``async_auth_flow`` instead of ``auth_flow``. Every request asks the daemon with its
method and URL: for a Bearer token the answer is the token, for a DPoP-bound one (RFC 9449) the token and a
fresh proof for that one request, sent as ``Authorization: DPoP <token>`` and ``DPoP: <proof>`` — the key
that signs proofs never leaves the daemon. A request is sent at most twice, plus once more on a DPoP nonce:

* **401 with a DPoP nonce challenge** (``WWW-Authenticate: DPoP error="use_dpop_nonce"`` and a
  ``DPoP-Nonce`` header): it asks the daemon again with that nonce (the daemon remembers it for later
  proofs) and resends once with the new proof.

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

from ncp_client import acall, alogin, ascope_insufficient, call, login, scope_insufficient
from ncp_client._credential import Credential, nonce_demanded, request_fields
from ncp_client._errors import InsufficientScope, NeedsLogin
from ncp_client._protocol import DEFAULT_TIMEOUT, LOGIN_TIMEOUT

__all__ = ["BrokerAuth", "broker_auth_for_httpx2"]

log = logging.getLogger("ncp_client")


class _Request(Protocol):
    headers: Any
    method: str
    url: Any


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


def _nonce_demanded(response: _Response, challenge: str | None) -> str | None:
    nonce = response.headers.get("dpop-nonce")
    return nonce_demanded(response.status_code, str(nonce) if nonce else None, challenge)


def _request_fields(request: _Request, nonce: str | None = None) -> dict[str, Any]:
    return request_fields(str(request.method), str(request.url), nonce)


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
    def _set(request: _Request, answer: Credential) -> None:
        request.headers.pop("DPoP", None)
        request.headers.update(answer.headers())

    def _step_up_failed(self, exc: InsufficientScope) -> None:
        log.warning("%s: %s", self.server, exc.message)

    def _get_request(self, request: _Request, nonce: str | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {
            "op": "get_token",
            "server": self.server,
            **_request_fields(request, nonce),
        }
        if self._min_ttl is not None:
            message["min_ttl"] = self._min_ttl
        return message

    def _rejected_request(self, request: _Request, token: str, response: _Response) -> dict[str, Any]:
        message: dict[str, Any] = {"op": "token_rejected", "server": self.server, "token": token}
        challenge = _challenge(response)
        if challenge is not None:
            message["www_authenticate"] = challenge
        nonce = response.headers.get("dpop-nonce")
        return {**message, **_request_fields(request, str(nonce).strip() if nonce else None)}

    # ---- sync ----------------------------------------------------------------------------------------

    def _ask(self, message: dict[str, Any]) -> Credential:
        return Credential(call(message, timeout=self._timeout, socket_path=self._socket_path))

    def _token_sync(self, request: _Request) -> Credential:
        try:
            return self._ask(self._get_request(request))
        except NeedsLogin:
            if not self._login:
                raise
        login(self.server, timeout=self._login_timeout, socket_path=self._socket_path)
        return self._ask(self._get_request(request))

    def _sync(self, request: Any) -> Generator[Any, Any, None]:
        answer = self._token_sync(request)
        self._set(request, answer)
        response: _Response = yield request
        if answer.bound and (nonce := _nonce_demanded(response, _challenge(response))) is not None:
            answer = self._ask(self._get_request(request, nonce))
            self._set(request, answer)
            response = yield request
        challenge = _challenge(response)
        if response.status_code == 401:
            try:
                newer = self._ask(self._rejected_request(request, answer.token, response))
            except NeedsLogin:
                if not self._login:
                    raise
                login(self.server, timeout=self._login_timeout, socket_path=self._socket_path)
                newer = self._ask(self._get_request(request))
        elif self._login and _is_step_up(response, challenge):
            try:
                scope_insufficient(
                    self.server,
                    answer.token,
                    www_authenticate=challenge,
                    timeout=self._login_timeout,
                    socket_path=self._socket_path,
                )
            except InsufficientScope as exc:
                self._step_up_failed(exc)
                return
            newer = self._ask(self._get_request(request))  # the stepped-up token, with its proof
        else:
            return
        if newer.token != answer.token:
            self._set(request, newer)
            yield request

    # ---- async (the same flow) -----------------------------------------------------------------------

    async def _aask(self, message: dict[str, Any]) -> Credential:
        return Credential(await acall(message, timeout=self._timeout, socket_path=self._socket_path))

    async def _token_async(self, request: _Request) -> Credential:
        try:
            return await self._aask(self._get_request(request))
        except NeedsLogin:
            if not self._login:
                raise
        await alogin(self.server, timeout=self._login_timeout, socket_path=self._socket_path)
        return await self._aask(self._get_request(request))

    async def _async(self, request: Any) -> AsyncGenerator[Any, Any]:
        answer = await self._token_async(request)
        self._set(request, answer)
        response: _Response = yield request
        if answer.bound and (nonce := _nonce_demanded(response, _challenge(response))) is not None:
            answer = await self._aask(self._get_request(request, nonce))
            self._set(request, answer)
            response = yield request
        challenge = _challenge(response)
        if response.status_code == 401:
            try:
                newer = await self._aask(self._rejected_request(request, answer.token, response))
            except NeedsLogin:
                if not self._login:
                    raise
                await alogin(self.server, timeout=self._login_timeout, socket_path=self._socket_path)
                newer = await self._aask(self._get_request(request))
        elif self._login and _is_step_up(response, challenge):
            try:
                await ascope_insufficient(
                    self.server,
                    answer.token,
                    www_authenticate=challenge,
                    timeout=self._login_timeout,
                    socket_path=self._socket_path,
                )
            except InsufficientScope as exc:
                self._step_up_failed(exc)
                return
            newer = await self._aask(self._get_request(request))  # the stepped-up token, with its proof
        else:
            return
        if newer.token != answer.token:
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

"""The proxy's side of the daemon's socket: one persistent connection, and the token for each request.

Every HTTP request the proxy sends takes its token from the daemon at that moment (``get_token``, about a
tenth of a millisecond on the open connection), and every refusal goes back to it: a 401 as
``token_rejected`` with the 401's ``WWW-Authenticate``, a 403 ``insufficient_scope`` as
``scope_insufficient`` (step-up). The proxy never holds a refresh token, keeps no token between requests
and writes no file (DESIGN.md rule 12); docs/protocol.md describes the requests.

Operations that can last minutes (``login``, ``login_wait``, ``scope_insufficient``) go on a connection of
their own, because the daemon answers one connection's requests in order and the other requests' tokens
must not wait behind a person in a browser.

When nothing listens on the socket, :class:`BrokerLink` starts the daemon once (the ``autostart``
callable, ``ncp-broker start``'s own code) unless it was told not to, and says so on stderr; a connection
that breaks (the daemon restarted) is opened again for the next request.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ncp_client._async import acall
from ncp_client._credential import Credential, request_fields
from ncp_client._errors import BrokerError, InsufficientScope, NeedsLogin, ProtocolError
from ncp_client._protocol import DEFAULT_TIMEOUT, MAX_ANSWER, encode, not_running, unwrap

__all__ = ["AUTOSTART_INTERVAL", "BrokerLink", "ServerAuth", "Target"]

AUTOSTART_INTERVAL = 30.0  # at most one start attempt this often, however many requests fail
_LONG = (
    370.0  # the daemon bounds a login to 300 s plus up to 60 s to learn its URL (ncp_client.LOGIN_TIMEOUT)
)


class BrokerLink:
    """One persistent connection to the daemon, reopened (and the daemon started) when needed."""

    def __init__(
        self,
        socket_path: Path,
        *,
        autostart: Callable[[], str] | None,
        say: Callable[[str], None],
    ) -> None:
        self.socket_path = socket_path
        self._autostart = autostart
        self._say = say
        self._stream: trio.SocketStream | None = None
        self._buffer = bytearray()
        self._lock = trio.Lock()
        self._last_start = -AUTOSTART_INTERVAL
        self._told_not_running = False

    async def call(self, request: dict[str, Any], *, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """The ``result`` of ``request`` on the persistent connection.

        Raises:
            BrokerNotRunning: nothing listens on the socket and the daemon could not be started.
            ProtocolError: no valid answer in time, or the connection broke twice.
            ServerError: the daemon's error answer (a subclass per code).
        """
        async with self._lock:
            for attempt in (1, 2):
                if self._stream is None:
                    await self._connect()
                try:
                    with trio.fail_after(timeout):
                        line = await self._exchange(encode(request))
                except trio.TooSlowError:
                    await self._drop()  # an answer may still come: the connection is out of step
                    raise ProtocolError(
                        "timeout",
                        f"ncp-broker did not answer within {timeout:g} s",
                        "see `ncp-broker status`",
                    ) from None
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, EOFError):
                    await self._drop()  # the daemon went away (restarted?): open a new connection once
                    if attempt == 2:
                        raise ProtocolError("protocol_error", "the connection to ncp-broker broke") from None
                    continue
                return unwrap(line)
        raise AssertionError("unreachable")

    async def call_alone(self, request: dict[str, Any], *, timeout: float) -> Any:
        """``request`` on a connection of its own: for requests that may wait for a person."""
        return await acall(request, timeout=timeout, socket_path=self.socket_path)

    async def aclose(self) -> None:
        await self._drop()

    async def _exchange(self, data: bytes) -> bytes:
        assert self._stream is not None
        await self._stream.send_all(data)
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > MAX_ANSWER:
                raise ProtocolError("protocol_error", "the daemon's answer is too large")
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    async def _drop(self) -> None:
        stream, self._stream = self._stream, None
        self._buffer.clear()
        if stream is not None:
            await stream.aclose()

    async def _open(self) -> trio.SocketStream:
        return await trio.open_unix_socket(os.fspath(self.socket_path))

    async def _connect(self) -> None:
        try:
            self._stream = await self._open()
            self._told_not_running = False
            return
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            why = exc.strerror or "no socket"
        now = trio.current_time()
        if self._autostart is None or now - self._last_start < AUTOSTART_INTERVAL:
            raise self._not_running(why)
        self._last_start = now
        self._say(f"ncp-broker is not running on {self.socket_path}; starting it")
        try:
            self._say(await trio.to_thread.run_sync(self._autostart))
        except Exception as exc:  # noqa: BLE001 - whatever stopped the start, the person reads why
            self._say(f"could not start ncp-broker: {exc}")
            raise self._not_running(why) from None
        try:
            self._stream = await self._open()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise self._not_running(exc.strerror or "no socket") from None

    def _not_running(self, why: str) -> BrokerError:
        error = not_running(self.socket_path, why)
        error.hint = "ncp-broker start"  # the command alone, as every other hint
        if self._autostart is None:
            error.message += " and NCP_BROKER_NO_AUTOSTART is set"
        if not self._told_not_running:  # one line per outage, not one per request
            self._told_not_running = True
            self._say(f"{error.message}; start it with: {error.hint}")
        return error


class Target:
    """The configured server the proxy speaks for, as the daemon lists it."""

    def __init__(self, name: str, url: str, kind: str) -> None:
        self.name, self.url, self.kind = name, url, kind

    @property
    def brokered(self) -> bool:
        return self.kind != "none"


class ServerAuth:
    """Tokens for one server: asked for per request, refusals reported, logins single-flight.

    ``login_timeout`` bounds how long a host's request is held while a person logs in (``None``: never
    start a login; the request is answered with the broker's hint instead).
    """

    def __init__(
        self, link: BrokerLink, target: Target, *, login_timeout: float | None, say: Callable[[str], None]
    ) -> None:
        self._link = link
        self.target = target
        self._login_timeout = login_timeout
        self._say = say
        self._login: trio.Event | None = None
        self._login_outcome: BrokerError | None = None

    async def token(self, method: str, url: str, nonce: str | None = None) -> Credential | None:
        """The credential for one request (``method`` ``url``: a DPoP proof is bound to them), or None for
        a server the broker holds nothing for. ``nonce``: the resource server demanded it (RFC 9449 §9).

        Raises:
            BrokerError: the daemon cannot give one (the hint says what to run).
        """
        if not self.target.brokered:
            return None
        request = {"op": "get_token", "server": self.target.name, **request_fields(method, url, nonce)}
        try:
            return Credential(await self._link.call(request))
        except NeedsLogin as exc:
            await self._log_in(exc)
            return Credential(await self._link.call(request))

    async def refused(
        self,
        status: int,
        challenge: str | None,
        sent: Credential | None,
        *,
        method: str,
        url: str,
        dpop_nonce: str | None = None,
    ) -> Credential | None:
        """The credential to resend with after a 401 or a step-up 403, or None: give the answer to the host.
        ``dpop_nonce``: the 401's ``DPoP-Nonce``, which the daemon keeps for the proofs it makes.

        Raises:
            BrokerError: the daemon needs a person (login failed or not allowed, scopes refused).
        """
        if sent is None:
            return None
        name = self.target.name
        fields = request_fields(method, url, dpop_nonce)
        if status == 401:
            request: dict[str, Any] = {"op": "token_rejected", "server": name, "token": sent.token, **fields}
            if challenge is not None:
                request["www_authenticate"] = challenge
            try:
                return Credential(await self._link.call(request))
            except NeedsLogin as exc:
                await self._log_in(exc)
                return await self.token(method, url)
        if status == 403 and challenge is not None and "insufficient_scope" in challenge:
            if self._login_timeout is None:
                return None
            self._say(f"{name} asks for more scope; the broker re-authorizes (a browser tab may open)")
            step_up = {
                "op": "scope_insufficient",
                "server": name,
                "token": sent.token,
                "www_authenticate": challenge,
            }
            try:
                await self._link.call_alone(step_up, timeout=_LONG)
            except InsufficientScope as exc:
                self._say(f"{name}: {exc.message}")
                return None
            return await self.token(method, url)  # the stepped-up token, with its proof for this request
        return None

    async def _log_in(self, why: NeedsLogin) -> None:
        """One login for every request that needs it: the first starts it, the others wait for it; then
        each asks for its own credential (a DPoP proof is for one request).

        Raises:
            BrokerError: the login cannot be had (not allowed, failed, timed out).
        """
        if self._login_timeout is None or why.code == "login_unavailable" or self.target.kind != "oauth":
            raise why  # an access-key server has no login: its hint says how to set the key
        if self._login is not None:
            await self._login.wait()
        else:
            self._login = trio.Event()
            self._login_outcome = None
            try:
                await self._run_login(self._login_timeout)
            except BrokerError as exc:
                self._login_outcome = exc
            finally:
                self._login.set()
                self._login = None
        if isinstance(self._login_outcome, BrokerError):
            raise self._login_outcome

    async def _run_login(self, timeout: float) -> None:
        name = self.target.name
        self._say(f"{name} needs a login: the broker opens the browser (one tab for every caller)")
        deadline = trio.current_time() + timeout
        await self._link.call_alone({"op": "login", "server": name, "open_browser": True}, timeout=_LONG)
        remaining = max(1.0, deadline - trio.current_time())
        try:
            await self._link.call_alone({"op": "login_wait", "server": name}, timeout=remaining)
        except ProtocolError as exc:
            if exc.code != "timeout":
                raise
            raise NeedsLogin(
                "needs_login",
                f"{name}: the login did not finish within {timeout:g} s",
                f"ncp-broker login {name}",
            ) from None
        self._say(f"{name}: logged in")

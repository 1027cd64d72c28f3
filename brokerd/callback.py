"""The loopback listener that receives authorization callbacks (checklist A4, A6).

The browser ends a login on ``http://127.0.0.1:<port>/callback?code=…&state=…&iss=…``. The listener:

* binds 127.0.0.1 only: the configured ``auth.oauth21.callbackPort`` (NCP's default 9876), or an ephemeral
  port (0) for dynamically registered native clients, which may redirect to any loopback port (RFC 8252);
* serves several pending logins at once, told apart by ``state``; a callback whose ``state`` no pending
  login waits for (missing, unknown, already used) gets a 400 page and reaches no one;
* is open only while a login holds it: :func:`open_callback_listener` for one owner, or
  :class:`CallbackHub`, which shares one listener per port between concurrent logins and closes it when
  the last one is done;
* waits :data:`LOGIN_TIMEOUT` (5 minutes) per login, then raises :class:`LoginTimeoutError`;
* answers only ``GET /callback`` (everything else is a 404), reads at most :data:`MAX_REQUEST` bytes of
  request head, gives each connection :data:`CONNECTION_DEADLINE` seconds, and closes it after one answer.

The page the browser lands on says what happened in plain words, HTML-escaped, without any script
(``Content-Security-Policy: default-src 'none'``, ``Cache-Control: no-store``, ``Referrer-Policy:
no-referrer``). The listener only routes the parameters; the flow checks them (state, iss, error, code).
Logs name a login by the first 6 characters of its state; the code and the query are never logged.

Errors (all :class:`~brokerd.oauth.OAuthError`, with a ``hint``)::

    CallbackListenerError ..... the listener was closed while a login waited on it
    ├── PortInUseError ........ the port cannot be bound (busy, or not permitted); names the port and
    │                           the config key auth.oauth21.callbackPort
    └── LoginTimeoutError ..... no callback for that state within the timeout
"""

from __future__ import annotations

import errno
import html
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11
import trio

from brokerd.oauth import CallbackError, OAuthError, loopback_redirect_uri, parse_callback_query
from brokerd.oauth._text import error_code, untrusted

__all__ = [
    "CALLBACK_PATH",
    "CONNECTION_DEADLINE",
    "LOGIN_TIMEOUT",
    "LOOPBACK",
    "MAX_REQUEST",
    "PORT_KEY",
    "CallbackHub",
    "CallbackListener",
    "CallbackListenerError",
    "LoginTimeoutError",
    "PortInUseError",
    "open_callback_listener",
]

log = logging.getLogger("brokerd.callback")

LOOPBACK = "127.0.0.1"
CALLBACK_PATH = "/callback"
PORT_KEY = "auth.oauth21.callbackPort"
LOGIN_TIMEOUT = 300.0
CONNECTION_DEADLINE = 10.0
MAX_REQUEST = 8 * 1024
_RECEIVE_CHUNK = 4096

_HEADERS = (
    ("content-type", "text/html; charset=utf-8"),
    ("content-security-policy", "default-src 'none'"),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("connection", "close"),
)


class CallbackListenerError(OAuthError):
    """The callback listener cannot deliver: it was closed while a login waited on it."""


class PortInUseError(CallbackListenerError):
    """The callback port cannot be bound: another program listens there, or it is not permitted.

    ``port`` is the port asked for; the message names it and the hint names ``auth.oauth21.callbackPort``.
    """

    def __init__(self, port: int, reason: str) -> None:
        super().__init__(
            f"cannot listen for the login callback on {LOOPBACK} port {port}: {reason}",
            hint=(
                f"stop the program using port {port}, or set {PORT_KEY} in this server's config entry to"
                " a free port that the authorization server accepts in http://127.0.0.1:<port>/callback"
            ),
        )
        self.port = port


class LoginTimeoutError(CallbackListenerError):
    """No callback for the login's ``state`` arrived within the timeout; the login is abandoned."""


@dataclass(eq=False)
class _Pending:
    issuer: str | None
    done: trio.Event = field(default_factory=trio.Event)
    params: Mapping[str, str] | None = None


class CallbackListener:
    """One listening socket on 127.0.0.1; get one from :func:`open_callback_listener` or
    :meth:`CallbackHub.listener`."""

    def __init__(self, port: int, *, timeout: float = LOGIN_TIMEOUT) -> None:
        self.port = port
        self.timeout = timeout
        self._pending: dict[str, _Pending] = {}
        self._closed = False

    @property
    def redirect_uri(self) -> str:
        """``http://127.0.0.1:<port>/callback``: register it and give it to the authorization flow."""
        return loopback_redirect_uri(self.port, CALLBACK_PATH)

    @property
    def pending(self) -> int:
        """How many logins are waiting for their callback."""
        return len(self._pending)

    async def expect(
        self, state: str, *, timeout: float | None = None, issuer: str | None = None
    ) -> Mapping[str, str]:
        """Wait for the callback carrying ``state``; return its query parameters (once: state is single use).

        ``timeout`` defaults to the listener's (:data:`LOGIN_TIMEOUT`). ``issuer``, when given, only
        chooses the page the browser sees: a callback whose ``iss`` differs gets a neutral page that shows
        none of its ``error`` text (A5); the parameters are delivered anyway, for the flow to reject.

        Raises:
            LoginTimeoutError: nothing arrived in time.
            CallbackListenerError: the listener closed before the callback arrived.
            ValueError: ``state`` is empty or another login already waits for it.
        """
        if not state:
            raise ValueError("state must not be empty")
        if state in self._pending:
            raise ValueError("a login with this state is already waiting")
        if self._closed:
            raise CallbackListenerError("the login callback listener is closed", hint="start the login again")
        waiting = _Pending(issuer)
        self._pending[state] = waiting
        limit = self.timeout if timeout is None else timeout
        log.debug("waiting for the login callback of state %s… on port %d", state[:6], self.port)
        try:
            with trio.move_on_after(limit):
                await waiting.done.wait()
        finally:
            if self._pending.get(state) is waiting:
                del self._pending[state]
        if waiting.params is not None:
            return waiting.params
        if waiting.done.is_set():
            raise CallbackListenerError(
                "the login callback listener closed before the browser came back",
                hint="start the login again",
            )
        log.info("no login callback for state %s… within %g s", state[:6], limit)
        raise LoginTimeoutError(
            f"the browser did not come back to {self.redirect_uri} within {_duration(limit)};"
            " the login was abandoned",
            hint="start the login again and finish it in the browser",
        )

    def _close(self) -> None:
        self._closed = True
        for waiting in self._pending.values():
            waiting.done.set()
        self._pending.clear()

    # ---- HTTP ---------------------------------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        # An exception escaping a handler would kill trio.serve_listeners: answer or drop, never raise.
        try:
            with trio.move_on_after(CONNECTION_DEADLINE):
                await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:
            log.exception("the login callback listener failed on one connection")
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        try:
            request = await _read_request(stream, conn)
        except h11.RemoteProtocolError:
            await _respond(stream, conn, 400, "Bad request", "This is not a request this page understands.")
            return
        if request is None:
            return
        status, title, message = self._route(request)
        await _respond(stream, conn, status, title, message, head=request.method == b"HEAD")

    def _route(self, request: h11.Request) -> tuple[int, str, str]:
        target = request.target.decode("ascii", "replace")
        parts = urlsplit(target)
        if request.method != b"GET" or parts.path != CALLBACK_PATH:
            return 404, "Not found", "There is nothing here."
        try:
            params = parse_callback_query(parts.query)
        except CallbackError:
            log.info("discarded a login callback with a repeated parameter")
            return 400, "Login response refused", "This login response is malformed and was ignored."
        state = params.get("state", "")
        waiting = self._pending.pop(state, None) if state else None
        if waiting is None:
            log.info("discarded a login callback for a stale or unknown state %r…", state[:6])
            return (
                400,
                "Login link not recognised",
                "This login link is stale or unknown: no login is waiting for it. Start the login again.",
            )
        waiting.params = dict(params)
        waiting.done.set()
        log.info("received the login callback of state %s…", state[:6])
        iss = params.get("iss")
        if waiting.issuer is not None and iss is not None and iss != waiting.issuer:
            return (
                400,
                "Login response refused",
                "This login response names another authorization server than the one the login went to,"
                " so it was not used. Start the login again.",
            )
        if "error" in params:
            code = error_code(params["error"]) or "an unreadable error"
            description = untrusted(params.get("error_description"), limit=300)
            detail = f"{code}: {description}" if description else code
            return 200, "Login failed", f"The authorization server did not grant access ({detail})."
        if params.get("code"):
            return (
                200,
                "Login received",
                "ncp-broker received the authorization. You can close this window.",
            )
        return 400, "Login response refused", "This login response carries neither a code nor an error."


@asynccontextmanager
async def open_callback_listener(
    port: int = 0, *, timeout: float = LOGIN_TIMEOUT
) -> AsyncIterator[CallbackListener]:
    """Listen on 127.0.0.1:``port`` (0: an ephemeral port) for as long as the block runs.

    Raises:
        PortInUseError: the port is busy or may not be bound.
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=LOOPBACK)
    except OSError as exc:
        raise _bind_error(port, exc) from None
    bound_port = int(listeners[0].socket.getsockname()[1])
    listener = CallbackListener(bound_port, timeout=timeout)
    log.debug("login callback listener open on %s:%d", LOOPBACK, bound_port)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, listener._handle, listeners)
            try:
                yield listener
            finally:
                nursery.cancel_scope.cancel()
    finally:
        listener._close()
        with trio.CancelScope(shield=True):
            for one in listeners:
                await one.aclose()
        log.debug("login callback listener on %s:%d closed", LOOPBACK, bound_port)


@dataclass(eq=False)
class _Shared:
    listener: CallbackListener
    users: int = 0
    release: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)


class CallbackHub:
    """Callback listeners shared between concurrent logins: one per port, open while any login holds it.

    ``nursery`` is a long-lived nursery of the daemon: the listeners' tasks run there, so a listener
    outlives the login that opened it while others still use it.
    """

    def __init__(self, nursery: trio.Nursery, *, timeout: float = LOGIN_TIMEOUT) -> None:
        self._nursery = nursery
        self._timeout = timeout
        self._shared: dict[int, _Shared] = {}
        self._lock = trio.Lock()

    @property
    def open_ports(self) -> tuple[int, ...]:
        """The ports listened on now."""
        return tuple(shared.listener.port for shared in self._shared.values())

    @asynccontextmanager
    async def listener(self, port: int = 0) -> AsyncIterator[CallbackListener]:
        """Hold the listener of ``port`` (0: the shared ephemeral one) for one login.

        The listener opens on first use and closes when the last holder leaves.

        Raises:
            PortInUseError: the port is busy or may not be bound.
        """
        async with self._lock:
            shared = self._shared.get(port)
            if shared is None:
                shared = await self._nursery.start(self._run, port)
                self._shared[port] = shared
            shared.users += 1
        try:
            yield shared.listener
        finally:
            shared.users -= 1
            if shared.users == 0:
                if self._shared.get(port) is shared:
                    del self._shared[port]
                shared.release.set()
                with trio.CancelScope(shield=True):
                    await shared.closed.wait()

    async def _run(
        self, port: int, *, task_status: trio.TaskStatus[_Shared] = trio.TASK_STATUS_IGNORED
    ) -> None:
        shared: _Shared | None = None
        try:
            async with open_callback_listener(port, timeout=self._timeout) as listener:
                shared = _Shared(listener)
                task_status.started(shared)
                await shared.release.wait()
        finally:
            if shared is not None:
                shared.closed.set()


def _bind_error(port: int, exc: OSError) -> PortInUseError:
    if exc.errno == errno.EADDRINUSE:
        return PortInUseError(port, "another program is listening there")
    if exc.errno == errno.EACCES:
        return PortInUseError(port, "not permitted (ports below 1024 need privileges)")
    return PortInUseError(port, exc.strerror or type(exc).__name__)


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(_RECEIVE_CHUNK))
            continue
        if isinstance(event, h11.Request):
            return event
        return None  # ConnectionClosed or PAUSED before a request


async def _respond(
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    title: str,
    message: str,
    *,
    head: bool = False,
) -> None:
    body = _page(title, message)
    headers = [*_HEADERS, ("content-length", str(len(body)))]
    try:
        data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
        if not head:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        return  # the request was too broken to answer
    await stream.send_all(data)


def _page(title: str, message: str) -> bytes:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} - ncp-broker</title></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n<p>{html.escape(message)}</p></body></html>\n"
    ).encode()


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} seconds"

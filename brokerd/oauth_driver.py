"""The trio + httpx driver of the sans-I/O OAuth core: performs the effects a flow yields.

    async with make_http_client() as http:
        discovery = await drive(discover(url, policy=policy), http=http, on_redirect=..., on_device_code=...)

=====================  ===========================================================================
Effect                 What :func:`drive` does
=====================  ===========================================================================
:class:`Fetch`         :func:`send`: the request exactly as given, redirects never followed, connect
                       timeout :data:`CONNECT_TIMEOUT`, no progress for :data:`OPERATION_TIMEOUT`, whole
                       exchange :data:`TOTAL_TIMEOUT`, body capped at :data:`MAX_BODY`; never cancelled
                       once sent (DESIGN rule 10). No HTTP answer (refused, DNS, TLS, timeout, a body over the
                       cap) becomes a :class:`TransportFailure` whose reason holds no secret.
:class:`AwaitRedirect` ``await on_redirect(effect)``: the callback's query parameters.
:class:`ShowDeviceCode` ``await on_device_code(effect)``.
:class:`Sleep`         ``await trio.sleep(seconds)``, then ``clock()`` (wall-clock seconds).
=====================  ===========================================================================

A body larger than :data:`MAX_BODY` is a :class:`TransportFailure` ("larger than 1 MiB"), not a
truncated response: a truncated document could be misread, and the core treats the failure as transient,
so a misbehaving server costs a retry with backoff, never a grant. The core refuses documents over the
same size anyway.

Requests are logged at debug level as method, URL (values of credential-like query parameters replaced
by ``<redacted>``), status and elapsed time. Bodies and headers are never logged.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from http.cookiejar import Cookie, CookieJar, CookiePolicy
from typing import TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import trio

from brokerd import __version__
from brokerd.oauth import (
    AwaitRedirect,
    Fetch,
    Flow,
    HttpRequest,
    HttpResponse,
    ShowDeviceCode,
    Sleep,
    TransportFailure,
)

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_BODY",
    "TOTAL_TIMEOUT",
    "USER_AGENT",
    "Clock",
    "DeviceCodeHandler",
    "RedirectHandler",
    "drive",
    "make_http_client",
    "redact_url",
    "send",
]

log = logging.getLogger("brokerd.oauth_driver")

_T = TypeVar("_T")

CONNECT_TIMEOUT = 5.0
# The no-progress timeout (each read, write or pool wait). Shorter would notice a server that has gone
# silent sooner, but a refresh timed out at a strict-rotation server that did process it loses the grant
# (its retry presents a spent token), so a slow answer is given 10 s. A server that drops or refuses the
# connection fails at once; only one that accepts and then says nothing costs this long.
OPERATION_TIMEOUT = 10.0
TOTAL_TIMEOUT = 15.0  # the whole exchange, body included
MAX_BODY = 1024 * 1024
USER_AGENT = f"ncp-broker/{__version__}"

Clock = Callable[[], float]
RedirectHandler = Callable[[AwaitRedirect], Awaitable[Mapping[str, str]]]
DeviceCodeHandler = Callable[[ShowDeviceCode], Awaitable[None]]

_SECRET_PARAM = re.compile(r"token|code|secret|password|assertion|key|verifier", re.IGNORECASE)


def make_http_client(*, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The daemon's HTTP client for OAuth traffic.

    Certificates are verified, the environment is ignored (``trust_env=False``: no proxy variable, netrc
    or ``SSL_CERT_FILE`` reroutes a token request), redirects are not followed, cookies are never stored
    or sent (one client serves every server: no session leaks between them), and the User-Agent is
    :data:`USER_AGENT`. ``transport`` is for tests (``httpx.MockTransport``). Use it as an async context
    manager, or ``aclose()`` it.
    """
    return httpx.AsyncClient(
        verify=True,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(OPERATION_TIMEOUT, connect=CONNECT_TIMEOUT),
        headers={"user-agent": USER_AGENT},
        cookies=CookieJar(policy=_NoCookies()),  # a jar, not httpx.Cookies: that would copy it
        transport=transport,
    )


async def drive(
    flow: Flow[_T],
    *,
    http: httpx.AsyncClient,
    on_redirect: RedirectHandler,
    on_device_code: DeviceCodeHandler,
    clock: Clock = time.time,
    keep: Callable[[_T], Awaitable[None]] | None = None,
) -> _T:
    """Run a core flow to its end, performing each effect (see the module table); return its result.

    ``keep`` is awaited with the result before this returns, in the same shield as the flow's last
    request: what an exchange bought (a code's tokens, a revocation's outcome) is persisted whatever
    happens to the caller meanwhile (DESIGN rule 10), with no checkpoint between the answer and it.

    Raises:
        OAuthError: whatever the flow raises (its subclasses say what went wrong; see ``brokerd.oauth``).
        Exception: whatever ``on_redirect`` or ``on_device_code`` raises (e.g. the callback listener's
            ``LoginTimeoutError``), unchanged; the flow is closed first.
        trio.Cancelled: the caller's cancel scope fired while the flow waited for a redirect, a device code
            or a sleep; the flow is closed. A request already sent is never aborted (see :func:`send`).
        TypeError: the flow yielded something that is not an effect (a core bug).
    """
    try:
        effect = next(flow)
        while True:
            answer: object
            match effect:
                case Fetch(request=request):
                    answer = await send(http, request, clock=clock)
                case AwaitRedirect():
                    answer = await on_redirect(effect)
                case ShowDeviceCode():
                    await on_device_code(effect)
                    answer = None
                case Sleep(seconds=seconds):
                    await trio.sleep(max(0.0, seconds))
                    answer = clock()
                case _:
                    raise TypeError(f"not an effect: {type(effect).__name__}")
            effect = flow.send(answer)
    except StopIteration as stop:
        result: _T = stop.value
        if keep is not None:
            with trio.CancelScope(shield=True):
                await keep(result)
        return result
    finally:
        flow.close()


async def send(
    http: httpx.AsyncClient, request: HttpRequest, *, clock: Clock = time.time
) -> HttpResponse | TransportFailure:
    """Send ``request`` exactly as given (its headers override the client's) and read the answer.

    Redirects are returned as they are. Response headers come back as (lower-case name, value) pairs in
    the order received, repeats kept; ``received_at`` is ``clock()`` when the body was complete.
    Never raises for a network problem: no answer within :data:`TOTAL_TIMEOUT` (or
    :data:`CONNECT_TIMEOUT` to connect), a connection, DNS or TLS error, a malformed answer, or a body
    over :data:`MAX_BODY` is a :class:`TransportFailure` naming the origin and the kind of failure only.

    Never cancelled once started (DESIGN rule 10): a cancellation of the caller takes effect when the
    exchange has ended, at the caller's next checkpoint.
    """
    shown = redact_url(request.url)
    started = trio.current_time()
    result: HttpResponse | TransportFailure = TransportFailure(
        f"no answer from {_origin(request.url)} within {TOTAL_TIMEOUT:g} s"
    )
    # DESIGN rule 10: a request once sent runs to its answer or its own timeout. Nothing else cancels it:
    # the server may act on it (rotate a refresh token, redeem a code), and an answer we walk away from
    # is a grant lost. The caller sees a cancellation only after this returns.
    with trio.CancelScope(shield=True), trio.move_on_after(TOTAL_TIMEOUT):
        result = await _exchange(http, request, clock)
    elapsed = trio.current_time() - started
    if isinstance(result, HttpResponse):
        log.debug("%s %s -> %d (%.3f s)", request.method, shown, result.status, elapsed)
    else:
        log.debug("%s %s -> no answer: %s (%.3f s)", request.method, shown, result.reason, elapsed)
    return result


async def _exchange(
    http: httpx.AsyncClient, request: HttpRequest, clock: Clock
) -> HttpResponse | TransportFailure:
    origin = _origin(request.url)
    try:
        async with http.stream(
            request.method,
            request.url,
            headers=list(request.headers),
            content=request.body or None,
            follow_redirects=False,
        ) as response:
            body = bytearray()
            async with aclosing(cast(AsyncGenerator[bytes, None], response.aiter_bytes())) as chunks:
                async for chunk in chunks:
                    body += chunk
                    if len(body) > MAX_BODY:
                        return TransportFailure(
                            f"the answer from {origin} is larger than {MAX_BODY // 1024 // 1024} MiB"
                        )
            headers = tuple(
                (name.decode("latin-1").lower(), value.decode("latin-1"))
                for name, value in response.headers.raw
            )
            return HttpResponse(response.status_code, headers, bytes(body), received_at=clock())
    except httpx.TimeoutException as exc:
        return TransportFailure(f"{_timeout_kind(exc)} {origin}")
    except httpx.HTTPError as exc:
        # The verdict is ours; httpx's text follows as detail (it is about sockets, TLS and framing, and
        # does not quote headers or bodies).
        detail = str(exc).replace(request.url, redact_url(request.url))
        return TransportFailure(f"{_failure_kind(exc)} {origin}: {detail[:200]}")
    except httpx.InvalidURL:
        return TransportFailure(f"not a usable URL for {origin}")


def _failure_kind(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "could not connect to"
    if isinstance(exc, httpx.NetworkError):
        return "the connection broke with"
    if isinstance(exc, httpx.ProtocolError):
        return "no usable HTTP answer from"
    return "the HTTP exchange failed with"


def _timeout_kind(exc: httpx.TimeoutException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"could not connect within {CONNECT_TIMEOUT:g} s to"
    if isinstance(exc, httpx.PoolTimeout):
        return "no free connection within the timeout to"
    return f"no progress within {OPERATION_TIMEOUT:g} s from"


def redact_url(url: str) -> str:
    """``url`` for a log line: values of credential-like query parameters (``code``, ``*token*``,
    ``*secret*``, ``code_verifier``, …) and any fragment replaced by ``<redacted>``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, "<redacted>" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="<>:/")
    fragment = "<redacted>" if parts.fragment else ""
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, fragment))


def _origin(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port is not None else "")


class _NoCookies(CookiePolicy):
    """Refuse every cookie: the OAuth endpoints need none, and one client talks to every server."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie: Cookie, request: object) -> bool:
        return False

    def return_ok(self, cookie: Cookie, request: object) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: object) -> bool:
        return False

    def path_return_ok(self, path: str, request: object) -> bool:
        return False

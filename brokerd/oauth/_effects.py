"""Effects: what a flow asks its driver to do, and what the driver sends back.

A flow is a generator (the shape of httpx's ``Auth.auth_flow``). Each value it yields is an effect; the
driver performs it and resumes the flow with ``flow.send(answer)``. When the flow finishes, its result is
``StopIteration.value``; when it fails, the :class:`~brokerd.oauth.OAuthError` propagates out of
``send``. A driver may abandon a flow at any point (``flow.close()``); there is nothing to clean up.

=====================  ===========================================================================
Effect                 The driver answers with
=====================  ===========================================================================
:class:`Fetch`         an :class:`HttpResponse`, or a :class:`TransportFailure` for a network error or
                       timeout. Never follow redirects: a 3xx goes back to the flow as it is.
:class:`AwaitRedirect` the callback's query parameters as a ``Mapping[str, str]`` (from the loopback
                       listener via :func:`parse_callback_query`, or from a pasted text via
                       :func:`parse_pasted_response`).
:class:`ShowDeviceCode` ``None``, once the code is shown to the user.
:class:`Sleep`         the wall-clock time (``float`` seconds since the epoch) after sleeping.
=====================  ===========================================================================

Answering an effect with the wrong type raises :class:`TypeError` inside the flow: that is a driver bug.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar
from urllib.parse import parse_qsl

__all__ = [
    "AwaitRedirect",
    "Effect",
    "Entropy",
    "Fetch",
    "Flow",
    "HttpRequest",
    "HttpResponse",
    "ShowDeviceCode",
    "Sleep",
    "TransportFailure",
    "run_sync",
]

_T = TypeVar("_T")

Entropy: TypeAlias = Callable[[int], bytes]
"""``entropy(n)`` returns ``n`` cryptographically random bytes (the driver passes ``os.urandom``)."""

Headers: TypeAlias = tuple[tuple[str, str], ...]

_SECRET_HEADERS = frozenset({"authorization"})


@dataclass(frozen=True, slots=True, repr=False)
class HttpRequest:
    """An HTTP request for the driver to send, exactly as it is.

    ``headers`` are (lower-case name, value) pairs. ``body`` is already encoded; its type is in the
    ``content-type`` header (form-urlencoded or JSON). The body and the ``authorization`` header may carry
    secrets, so ``repr`` shows neither: log requests with ``repr``, never by taking them apart.
    """

    method: Literal["GET", "POST"]
    url: str
    headers: Headers = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        return _first(self.headers, name)

    def form(self) -> dict[str, str]:
        """The form-urlencoded body as a dict (for tests and debugging; values may be secrets)."""
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    def json(self) -> Any:
        """The JSON body, decoded."""
        return json.loads(self.body)

    def __repr__(self) -> str:
        names = ", ".join(
            f"{n}: <redacted>" if n in _SECRET_HEADERS else f"{n}: {v}" for n, v in self.headers
        )
        return f"HttpRequest({self.method} {self.url}, headers={{{names}}}, body=<{len(self.body)} bytes>)"


@dataclass(frozen=True, slots=True, repr=False)
class HttpResponse:
    """An HTTP response, as the driver received it.

    ``headers`` are (lower-case name, value) pairs in the order received, repeated names kept (several
    ``WWW-Authenticate`` headers must survive). ``received_at`` is the wall-clock time it arrived: token
    expiry is computed from it.
    """

    status: int
    headers: Headers = ()
    body: bytes = b""
    received_at: float = 0.0

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        return _first(self.headers, name)

    def header_values(self, name: str) -> tuple[str, ...]:
        """Every value of header ``name`` (any case), in order."""
        wanted = name.lower()
        return tuple(v for n, v in self.headers if n.lower() == wanted)

    def __repr__(self) -> str:
        return f"HttpResponse({self.status}, body=<{len(self.body)} bytes>, received_at={self.received_at})"


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """The request got no HTTP answer: connection refused, DNS failure, TLS failure, timeout."""

    reason: str


@dataclass(frozen=True, slots=True)
class Fetch:
    """Send ``request``; answer with an :class:`HttpResponse` or a :class:`TransportFailure`."""

    request: HttpRequest


@dataclass(frozen=True, slots=True)
class AwaitRedirect:
    """Send the user to ``authorization_url`` (open a browser without a shell, or print it) and wait for
    the redirect to ``redirect_uri``; answer with the callback's query parameters. ``state`` is given so a
    loopback listener can ignore stray requests; the flow checks it again anyway."""

    authorization_url: str
    state: str
    redirect_uri: str


@dataclass(frozen=True, slots=True)
class ShowDeviceCode:
    """Show the user where to go and what code to enter (RFC 8628); answer with None."""

    verification_uri: str
    verification_uri_complete: str | None
    user_code: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Sleep:
    """Sleep ``seconds``; answer with the wall-clock time after waking."""

    seconds: float


Effect: TypeAlias = Fetch | AwaitRedirect | ShowDeviceCode | Sleep

Flow: TypeAlias = Generator[Effect, object, _T]
"""A flow yielding :data:`Effect` values, resumed with their answers, returning ``_T``."""


def run_sync(flow: Flow[_T], answer: Callable[[Effect], object]) -> _T:
    """Run ``flow`` to the end, answering each effect with ``answer(effect)``; return the flow's result.

    Raises whatever the flow raises (an :class:`~brokerd.oauth.OAuthError`) or ``answer`` raises.
    """
    try:
        effect = next(flow)
        while True:
            effect = flow.send(answer(effect))
    except StopIteration as stop:
        result: _T = stop.value
        return result


# ---- sub-flows used by the flows: one effect each, answer type checked ----------------------------


def fetch(request: HttpRequest) -> Generator[Effect, object, HttpResponse | TransportFailure]:
    answer = yield Fetch(request)
    if not isinstance(answer, HttpResponse | TransportFailure):
        raise TypeError(f"Fetch must be answered with HttpResponse or TransportFailure, not {_kind(answer)}")
    return answer


def await_redirect(
    authorization_url: str, state: str, redirect_uri: str
) -> Generator[Effect, object, Mapping[str, str]]:
    answer = yield AwaitRedirect(authorization_url, state, redirect_uri)
    if not isinstance(answer, Mapping):
        raise TypeError(f"AwaitRedirect must be answered with a Mapping[str, str], not {_kind(answer)}")
    return {str(k): v for k, v in answer.items() if isinstance(v, str)}


def show_device_code(effect: ShowDeviceCode) -> Generator[Effect, object, None]:
    answer = yield effect
    if answer is not None:
        raise TypeError(f"ShowDeviceCode must be answered with None, not {_kind(answer)}")


def sleep(seconds: float) -> Generator[Effect, object, float]:
    answer = yield Sleep(seconds)
    if isinstance(answer, bool) or not isinstance(answer, int | float):
        raise TypeError(f"Sleep must be answered with the current time as a float, not {_kind(answer)}")
    return float(answer)


def _first(headers: Headers, name: str) -> str | None:
    wanted = name.lower()
    return next((v for n, v in headers if n.lower() == wanted), None)


def _kind(value: object) -> str:
    return type(value).__name__

"""HTTP plumbing shared by the flows: building requests, reading JSON documents, classifying failures.

Classification (T5) is the same for every endpoint: a :class:`TransportFailure`, 408, 429 and 5xx are
transient; a 4xx is the server's definitive word and its ``error`` code says what kind.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar
from urllib.parse import urlencode, urljoin

import msgspec

from brokerd.oauth._effects import Effect, HttpRequest, HttpResponse, TransportFailure, fetch
from brokerd.oauth._errors import TransientError
from brokerd.oauth._text import error_code, shown_url, untrusted
from brokerd.oauth._urls import UrlPolicy
from brokerd.secret import Secret

_T = TypeVar("_T")

MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
MAX_RETRY_AFTER = 24 * 3600.0
_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_IMF_FIXDATE = re.compile(r"^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$")


def get(url: str) -> HttpRequest:
    return HttpRequest("GET", url, (("accept", _JSON),))


def post_form(
    url: str, form: Sequence[tuple[str, str]], headers: Iterable[tuple[str, str]] = ()
) -> HttpRequest:
    body = urlencode(list(form)).encode()
    return HttpRequest("POST", url, (("content-type", _FORM), ("accept", _JSON), *headers), body)


def post_json(url: str, document: object) -> HttpRequest:
    body = msgspec.json.encode(document)
    return HttpRequest("POST", url, (("content-type", _JSON), ("accept", _JSON)), body)


def is_transient(result: HttpResponse | TransportFailure) -> bool:
    return isinstance(result, TransportFailure) or result.status in (408, 429) or 500 <= result.status <= 599


def transient_error(what: str, result: HttpResponse | TransportFailure) -> TransientError:
    """The :class:`TransientError` for a transient ``result`` of a request to ``what``."""
    if isinstance(result, TransportFailure):
        return TransientError(f"could not reach {what}: {untrusted(result.reason)}")
    return TransientError(
        f"{what} answered HTTP {result.status}; try again later",
        status=result.status,
        retry_after=parse_retry_after(result.header("retry-after"), result.received_at),
    )


def parse_retry_after(value: str | None, received_at: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an IMF-fixdate), or None if unusable.

    The wait is counted from ``received_at`` and capped at a day.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(int(value)), MAX_RETRY_AFTER)
    match = _IMF_FIXDATE.match(value)
    if match is None or match.group(2).lower() not in _MONTHS:
        return None
    day, month, year, hour, minute, second = (
        int(match.group(1)),
        _MONTHS.index(match.group(2).lower()) + 1,
        int(match.group(3)),
        int(match.group(4)),
        int(match.group(5)),
        int(match.group(6)),
    )
    try:
        when = datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()
    except ValueError:
        return None
    return min(max(when - received_at, 0.0), MAX_RETRY_AFTER)


class _ErrorBody(msgspec.Struct):
    error: object = None
    error_description: object = None


def error_fields(body: bytes, secrets: Iterable[Secret | None] = ()) -> tuple[str | None, str]:
    """(``error`` code or None, cleaned ``error_description`` or '') from an OAuth error body."""
    try:
        parsed = msgspec.json.decode(body[:MAX_DOCUMENT_BYTES], type=_ErrorBody)
    except msgspec.MsgspecError:
        return None, ""
    return error_code(parsed.error), untrusted(parsed.error_description, secrets=secrets)


def describe(code: str | None, description: str) -> str:
    """``code (description)`` for messages; either part may be missing."""
    if code and description:
        return f"{code} ({description})"
    return code or description or "no error code"


def decode(body: bytes, type_: type[_T]) -> _T:
    """``body`` as JSON of ``type_``. Raises msgspec.MsgspecError (or ValueError when too big)."""
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ValueError("the document is too large")
    return msgspec.json.decode(body, type=type_)


@dataclass(frozen=True, slots=True)
class Found(Generic[_T]):
    document: _T
    url: str


@dataclass(frozen=True, slots=True)
class Missing:
    reason: str


def get_document(
    url: str, type_: type[_T], policy: UrlPolicy, what: str
) -> Generator[Effect, object, Found[_T] | Missing | TransientError]:
    """GET a JSON metadata document, following redirects that the policy allows.

    Returns :class:`Found`, :class:`Missing` (4xx, or a 200 that is not the document: many servers answer
    unknown paths with an HTML page) or a :class:`TransientError` (transport failure, 408, 429, 5xx).

    Raises:
        PolicyError: ``url`` or a redirect target is refused.
    """
    policy.check(url, what=what)
    for _ in range(MAX_REDIRECTS + 1):
        result = yield from fetch(get(url))
        if is_transient(result):
            return transient_error(what, result)
        assert isinstance(result, HttpResponse)
        location = result.header("location")
        if result.status in _REDIRECTS and location:
            url = policy.check(urljoin(url, location), what=f"a redirect from {what}")
            continue
        if result.status != 200:
            return Missing(f"HTTP {result.status} at {shown_url(url)}")
        try:
            return Found(decode(result.body, type_), url)
        except (msgspec.MsgspecError, ValueError) as exc:
            return Missing(f"not a usable document at {shown_url(url)} ({untrusted(str(exc), limit=120)})")
    return Missing(f"too many redirects from {shown_url(url)}")

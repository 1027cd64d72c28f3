"""``WWW-Authenticate`` parsing (RFC 9110 §11.6.1, RFC 6750 §3, RFC 9728 §5.1; D1).

The grammar is ambiguous in places (a comma separates both parameters and challenges), real servers bend
it (unquoted URLs, stray commas), and the input is untrusted. So the parser is a forgiving scanner: it
never raises, always advances, and returns every challenge and parameter it could make sense of.

Rules: a challenge is a scheme token followed by either a token68 or ``name=value`` parameters separated by
commas; a token that is not followed by ``=`` starts the next challenge. Values are tokens or quoted
strings (``\\`` escapes the next character; an unterminated string runs to the end). Parameter names and
scheme comparisons are case-insensitive; the first of a repeated parameter wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Challenge", "bearer_challenge", "parse_www_authenticate", "resource_challenge"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SPACE = " \t"
_MAX_HEADER = 16 * 1024


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge: ``scheme`` as sent, ``params`` as (lower-case name, value) pairs, or ``token68``."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()
    token68: str | None = None

    def param(self, name: str) -> str | None:
        """The value of parameter ``name`` (any case), or None."""
        wanted = name.lower()
        return next((v for n, v in self.params if n == wanted), None)

    @property
    def is_bearer(self) -> bool:
        return self.scheme.lower() == "bearer"

    @property
    def error(self) -> str | None:
        """``error``, e.g. ``invalid_token`` or ``insufficient_scope`` (RFC 6750 §3.1)."""
        return self.param("error")

    @property
    def error_description(self) -> str | None:
        """``error_description``, untrusted free text."""
        return self.param("error_description")

    @property
    def scope(self) -> tuple[str, ...] | None:
        """``scope`` split on spaces, or None when absent (D1, A2)."""
        value = self.param("scope")
        return None if value is None else tuple(value.split())

    @property
    def resource_metadata(self) -> str | None:
        """``resource_metadata``: where the protected-resource metadata is (RFC 9728 §5.1, D2)."""
        return self.param("resource_metadata")


def parse_www_authenticate(values: str | Iterable[str]) -> tuple[Challenge, ...]:
    """Every challenge in one ``WWW-Authenticate`` value or several (one per header line), in order.

    Never raises on bad input: what cannot be parsed is skipped.
    """
    if isinstance(values, str):
        values = (values,)
    challenges: list[Challenge] = []
    for value in values:
        if isinstance(value, str):
            challenges.extend(_parse_one(value[:_MAX_HEADER]))
    return tuple(challenges)


def bearer_challenge(values: str | Iterable[str]) -> Challenge | None:
    """The first ``Bearer`` challenge in the header value(s), or None."""
    return next((c for c in parse_www_authenticate(values) if c.is_bearer), None)


def resource_challenge(values: str | Iterable[str]) -> Challenge | None:
    """The challenge that tells how to authorize: the first ``Bearer`` one, else the first ``DPoP`` one
    (RFC 9449 §7.1; a server that takes only DPoP-bound tokens challenges with ``DPoP resource_metadata=…``).
    None when there is neither."""
    challenges = parse_www_authenticate(values)
    return next((c for c in challenges if c.is_bearer), None) or next(
        (c for c in challenges if c.scheme.lower() == "dpop"), None
    )


class _Building:
    __slots__ = ("params", "scheme", "token68")

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.params: list[tuple[str, str]] = []
        self.token68: str | None = None

    def freeze(self) -> Challenge:
        return Challenge(self.scheme, tuple(self.params), self.token68)


def _parse_one(text: str) -> list[Challenge]:
    out: list[_Building] = []
    current: _Building | None = None
    i, n = 0, len(text)
    while i < n:
        i = _skip(text, i, _SPACE + ",")
        if i >= n:
            break
        match = _TOKEN.match(text, i)
        if match is None:
            i += 1  # a character no rule accepts: skip it
            continue
        name, after = match.group(), _skip(text, match.end(), _SPACE)
        if after < n and text[after] == "=":
            value, i = _value(text, _skip(text, after + 1, _SPACE))
            if current is not None and all(p != name.lower() for p, _ in current.params):
                current.params.append((name.lower(), value))
            continue
        current = _Building(name)
        out.append(current)
        i = after
        if after > match.end():
            # Whatever follows the scheme and a space is a token68 if it ends at the end or a comma
            # ("Basic abc==", "Negotiate abc"); otherwise it is the first parameter.
            token68 = _TOKEN68.match(text, i)
            if token68 is not None:
                end = _skip(text, token68.end(), _SPACE)
                if end >= n or text[end] == ",":
                    current.token68 = token68.group()
                    i = end
    return [c.freeze() for c in out]


def _value(text: str, i: int) -> tuple[str, int]:
    n = len(text)
    if i < n and text[i] == '"':
        chars: list[str] = []
        i += 1
        while i < n:
            ch = text[i]
            if ch == "\\" and i + 1 < n:
                chars.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                return "".join(chars), i + 1
            chars.append(ch)
            i += 1
        return "".join(chars), n
    start = i
    while i < n and text[i] not in _SPACE + ",":
        i += 1
    return text[start:i], i


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i

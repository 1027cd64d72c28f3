"""Making untrusted text safe to show.

Servers put free text in ``error_description`` and similar fields. Before any of it reaches an exception
message it goes through :func:`untrusted`: every secret the request carried is blanked out (a server may
echo the refresh token it refused), control and formatting characters are removed (no terminal escapes,
no bidi tricks, no fake log lines), whitespace is collapsed, and the result is cut to a short length.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from brokerd.secret import Secret

__all__ = ["error_code", "shown_url", "untrusted"]

_REDACTED = "<redacted>"
# RFC 6749 §5.2: error codes use %x20-21 / %x23-5B / %x5D-7E.
_ERROR_CODE_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


def untrusted(value: object, *, limit: int = 200, secrets: Iterable[Secret | None] = ()) -> str:
    """``value`` as a short, printable, secret-free string ('' when it is not a string)."""
    if not isinstance(value, str):
        return ""
    plain = [s.reveal() for s in secrets if s is not None and s.reveal()]
    text = _blank(value, plain)
    text = "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in text)
    text = _blank(" ".join(text.split()), plain)
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    return text


def shown_url(url: object, *, limit: int = 120) -> str:
    """``url`` for a message, without user info, query or fragment: a server URL may carry a key there
    (``https://host/mcp?key=…``), and metadata URLs copy the server's query. A query shows as ``?…``."""
    if not isinstance(url, str):
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return untrusted(url.split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1], limit=limit)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    text = urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))
    return untrusted(text, limit=limit)


def error_code(value: object, *, limit: int = 64) -> str | None:
    """An OAuth ``error`` value if it is made of the characters RFC 6749 allows, else None."""
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    if any(ch not in _ERROR_CODE_CHARS for ch in value):
        return None
    return value


def _blank(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return text

"""How a server URL becomes a store key.

Two spellings of one server URL must land in one document, so the store names a server by its canonical URL
(:func:`canonical_url`) and files by a hash of it (:func:`server_key`). NCP names ``~/.ncp/auth/<hash>.json``
by the SHA-256 of the server URL; we do the same and keep the first 32 hex characters (128 bits): short
enough to read in ``ls``, far too long to collide by accident.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit

__all__ = ["canonical_url", "digest", "server_key"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_KEY_HEX_CHARS = 32


def canonical_url(url: str) -> str:
    """``url`` in the one spelling the store uses.

    Lower-cases the scheme and host, drops the default port (80 for http, 443 for https), drops the
    fragment, and drops a trailing slash from the path unless the path is the root (an empty path becomes
    ``/``). The query, the user part and the case of the path are kept: they can name a different resource.

    Raises:
        ValueError: ``url`` is not absolute (no scheme or no host) or its port is not a number.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = parts.hostname  # already lower-cased, brackets of an IPv6 literal removed
    if not scheme or not host:
        raise ValueError(f"not an absolute URL: {url!r}")
    try:
        port = parts.port
    except ValueError:  # urllib's words for a non-numeric or out-of-range port; ours name the URL
        raise ValueError(f"not a valid port number: {url!r}") from None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc = f"{netloc}:{port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        netloc = f"{userinfo}@{netloc}"
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def digest(text: str) -> str:
    """The first 32 hex characters of the SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()[:_KEY_HEX_CHARS]


def server_key(url: str) -> str:
    """The store key of a server: :func:`digest` of its :func:`canonical_url`.

    Raises:
        ValueError: as :func:`canonical_url`.
    """
    return digest(canonical_url(url))

"""How a server URL becomes a store key.

Two spellings of one server URL must land in one document, so the store names a server by its canonical URL
(:func:`brokerd.oauth.canonical_url`, the one function that decides whether two URLs name one
server) and files by a hash of it (:func:`server_key`). NCP names ``~/.ncp/auth/<hash>.json``
by the SHA-256 of the server URL; we do the same and keep the first 32 hex characters (128 bits): short
enough to read in ``ls``, far too long to collide by accident.
"""

from __future__ import annotations

import hashlib

from brokerd.oauth import canonical_url

__all__ = ["canonical_url", "digest", "server_key"]

_KEY_HEX_CHARS = 32


def digest(text: str) -> str:
    """The first 32 hex characters of the SHA-256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()[:_KEY_HEX_CHARS]


def server_key(url: str) -> str:
    """The store key of a server: :func:`digest` of its :func:`canonical_url`.

    Raises:
        ValueError: as :func:`canonical_url`.
    """
    return digest(canonical_url(url))

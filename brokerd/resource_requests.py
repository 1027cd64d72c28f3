"""What a caller may ask a token for: one HTTP request to the server, named by its method and URL.

``get_token`` and ``token_rejected`` may name the request the token is about to be sent with (a
:class:`ResourceRequest`), so that a DPoP-bound token's answer carries a proof for it (RFC 9449 §7;
``brokerd.grant._dpop``). Whatever the token, the daemon refuses to name a request to anywhere but the
server's own origin (scheme, host, port): a client bug that would send a token elsewhere stops here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from brokerd.wire import WireError

__all__ = ["ResourceRequest", "check_request", "resource_request"]

_METHOD = re.compile(r"^[A-Za-z]{1,20}$")
_MAX_URL = 8192
_MAX_NONCE = 1024
_NQCHAR = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "\\"}


@dataclass(frozen=True, slots=True)
class ResourceRequest:
    """The one HTTP request a token is asked for: ``method`` and ``url`` (checked to be at the server's
    origin), and ``dpop_nonce``, the resource server's ``DPoP-Nonce`` when it demanded one."""

    method: str
    url: str
    dpop_nonce: str | None = None


def resource_request(
    server_url: str, *, method: str | None, url: str | None, nonce: str | None, label: str
) -> ResourceRequest | None:
    """The request a ``get_token`` or ``token_rejected`` names, checked (see :func:`check_request`); None
    when it names none.

    Raises:
        WireError: ``bad_request``, as :func:`check_request`; a nonce without the request it is for.
    """
    check_request(server_url, method=method, url=url, nonce=nonce, label=label)
    if method is None or url is None:
        if nonce is not None:
            raise WireError("bad_request", f"{label}: dpop_nonce needs the method and url it is for")
        return None
    return ResourceRequest(method.upper(), url, nonce)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port
    default = {"https": 443, "http": 80}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), None if port == default else port


def _shown(url: str) -> str:
    """``url`` for a message: scheme, host, port and path; never a user part, a query or a fragment."""
    parts = urlsplit(url[:300])
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def check_request(
    server_url: str, *, method: str | None, url: str | None, nonce: str | None, label: str
) -> None:
    """Refuse a request named by ``method`` and ``url`` (with a DPoP ``nonce``) that is malformed or outside
    the origin of ``server_url``; ``label`` names the server in messages.

    Raises:
        WireError: ``bad_request`` naming what is wrong.
    """
    if (method is None) != (url is None):
        raise WireError(
            "bad_request", f"{label}: give both method and url, or neither", "see docs/protocol.md"
        )
    if method is not None and not _METHOD.match(method):
        raise WireError(
            "bad_request", f"{label}: {method[:30]!r} is not an HTTP method", "see docs/protocol.md"
        )
    if url is not None:
        try:
            theirs = _origin(url)
        except ValueError:
            theirs = None
        if len(url) > _MAX_URL or theirs is None or not theirs[1] or theirs != _origin(server_url):
            raise WireError(
                "bad_request",
                f"{label}: {_shown(url) if theirs else 'that URL'} is not at the server's origin"
                f" ({_shown(server_url)}); the daemon makes tokens and proofs only for requests to the server"
                " they are for",
                "send requests for this server to its own URL",
            )
    if nonce is not None and (not nonce or len(nonce) > _MAX_NONCE or any(ch not in _NQCHAR for ch in nonce)):
        raise WireError("bad_request", f"{label}: dpop_nonce is not a DPoP nonce (RFC 9449 §8.1)")

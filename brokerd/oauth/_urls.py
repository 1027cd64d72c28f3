"""URLs: the policy every server-supplied URL passes (S1, S2, A7), and the URLs the core builds.

The policy is pure: it looks at the URL text only and resolves no names. A host name that resolves to a
private address is the driver's to refuse (it sees the address it connects to); the core refuses what
it can see: schemes, plain http off loopback, literal private and link-local addresses, and numeric
host spellings (``2130706433``, ``0x7f.1``, ``010.0.0.1``) that resolvers read as addresses.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from brokerd.oauth._errors import PolicyError
from brokerd.oauth._text import shown_url, untrusted

__all__ = [
    "UrlPolicy",
    "as_metadata_urls",
    "canonical_resource",
    "canonical_url",
    "check_redirect_uri",
    "is_loopback_host",
    "loopback_redirect_uri",
    "origin",
    "prm_urls",
]

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_PRIVATE = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("fc00::/7"),
    # "this host": connecting to 0.0.0.0 or :: reaches loopback services on most systems.
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("::/128"),
)
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*$")
_INSECURE_HINT = "for a local test server only, set auth.allowInsecureLoopback to true in the server's entry"
_PRIVATE_HINT = "if this server really is on your private network, set auth.allowPrivateNetwork to true"
WELL_KNOWN_PRM = "/.well-known/oauth-protected-resource"
_WELL_KNOWN_AS = "/.well-known/oauth-authorization-server"
_WELL_KNOWN_OIDC = "/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """Which URLs from servers the core may use (S1, S2, A7).

    Every metadata URL, endpoint, issuer and authorization URL passes :meth:`check` before it is used:
    ``https`` only; ``http`` only to a loopback host (127.0.0.0/8, ::1, ``localhost``) and only when
    ``allow_insecure_loopback``; literal private (10/8, 172.16/12, 192.168/16, fc00::/7) and link-local
    (169.254/16, fe80::/10) addresses only when ``allow_private_network``. Every other scheme
    (``javascript:``, ``data:``, ``file:``, …) is refused.
    """

    allow_insecure_loopback: bool = False
    allow_private_network: bool = False

    def check(self, url: str, *, what: str) -> str:
        """Return ``url`` unchanged if the policy allows it.

        ``what`` names the URL in the error ("the token endpoint").

        Raises:
            PolicyError: the URL is refused; the message says why, the hint which setting would allow it.
        """
        shown = shown_url(url)
        if not isinstance(url, str) or not url:
            raise PolicyError(f"{what} is empty")
        if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url) or len(url) > 8192:
            raise PolicyError(f"{what} contains spaces or control characters: {shown}")
        try:
            parts = urlsplit(url)
            host = parts.hostname
            _ = parts.port
        except ValueError:
            raise PolicyError(f"{what} is not a valid URL: {shown}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise PolicyError(
                f"{what} uses the {untrusted(scheme, limit=20)!r} scheme; only https is allowed"
            )
        if not host:
            raise PolicyError(f"{what} has no host: {shown}")
        if parts.username is not None or parts.password is not None:
            raise PolicyError(f"{what} carries credentials in the URL: {shown}")
        host = host.rstrip(".")
        if scheme == "http":
            if not is_loopback_host(host):
                raise PolicyError(f"{what} uses plain http to a non-loopback host: {shown}")
            if not self.allow_insecure_loopback:
                raise PolicyError(f"{what} uses plain http: {shown}", hint=_INSECURE_HINT)
            return url
        address = _address(host)
        if address is None:
            if _NUMERIC_HOST.match(host):
                raise PolicyError(f"{what} spells its host as an ambiguous number: {shown}")
            return url
        if not self.allow_private_network:
            if any(address in net for net in _LINK_LOCAL):
                raise PolicyError(f"{what} points at a link-local address: {shown}", hint=_PRIVATE_HINT)
            if any(address in net for net in _PRIVATE):
                raise PolicyError(f"{what} points at a private address: {shown}", hint=_PRIVATE_HINT)
        return url


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and literal loopback addresses (127.0.0.0/8, ::1)."""
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    address = _address(host)
    return address is not None and address.is_loopback


def _address(host: str) -> _IPAddress | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _split(url: str) -> SplitResult:
    return urlsplit(url)


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, as written."""
    parts = _split(url)
    return f"{parts.scheme}://{parts.netloc}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_url(url: str) -> str:
    """The one spelling of a server URL: two URLs name the same server exactly when this agrees
    (DESIGN rule 11). The store keys records by it, the config groups aliases by it, and the NCP import
    and the client's URL lookup match by it.

    Lower-cases the scheme and host, drops the default port (80 for http, 443 for https), drops the
    fragment, and drops trailing slashes from the path unless the path is the root (an empty path becomes
    ``/``). The query, the user part and the case of the path are kept: they can name another resource.

    Raises:
        ValueError: ``url`` is not absolute (no scheme or no host) or its port is not a number.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = parts.hostname  # already lower-cased, brackets of an IPv6 literal removed
    if not scheme or not host:
        raise ValueError(f"not an absolute URL: {shown_url(url)!r}")
    try:
        port = parts.port
    except ValueError:  # urllib's words for a non-numeric or out-of-range port; ours name the URL
        raise ValueError(f"not a valid port number: {shown_url(url)!r}") from None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc = f"{netloc}:{port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        netloc = f"{userinfo}@{netloc}"
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def canonical_resource(url: str) -> str:
    """The canonical form of an MCP server URL as a resource indicator (A3): :func:`canonical_url` without
    the trailing slash of a root path. Used as ``resource`` only when the server publishes no
    protected-resource metadata.

    Raises:
        ValueError: as :func:`canonical_url`.
    """
    canonical = canonical_url(url)
    parts = urlsplit(canonical)
    if parts.path == "/":
        return urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))
    return canonical


def prm_urls(server_url: str) -> list[tuple[str, str]]:
    """Where to look for protected-resource metadata (RFC 9728 §3.1, D2), in order.

    Each entry is (metadata URL, the resource URL the well-known suffix was inserted into). A server with
    a path is tried at ``/.well-known/oauth-protected-resource/<path>`` and then at the root form; a server
    at the root only at the root form. A trailing ``/`` of the path is dropped before inserting.
    """
    parts = _split(server_url)
    base = origin(server_url)
    path = parts.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    urls = []
    if path:
        urls.append((f"{base}{WELL_KNOWN_PRM}{path}{query}", f"{base}{path}{query}"))
    urls.append((f"{base}{WELL_KNOWN_PRM}", base))
    return urls


def as_metadata_urls(issuer: str) -> list[str]:
    """Where to look for an issuer's authorization-server metadata (RFC 8414 §3.1, OIDC, D4), in order.

    Issuer with a path ``/t1``: ``/.well-known/oauth-authorization-server/t1``,
    ``/.well-known/openid-configuration/t1``, ``/t1/.well-known/openid-configuration``. Issuer without a
    path: ``/.well-known/oauth-authorization-server``, ``/.well-known/openid-configuration``. The root
    forms are never used for an issuer with a path.
    """
    base = origin(issuer)
    path = _split(issuer).path.rstrip("/")
    if path:
        return [
            f"{base}{_WELL_KNOWN_AS}{path}",
            f"{base}{_WELL_KNOWN_OIDC}{path}",
            f"{base}{path}{_WELL_KNOWN_OIDC}",
        ]
    return [f"{base}{_WELL_KNOWN_AS}", f"{base}{_WELL_KNOWN_OIDC}"]


def loopback_redirect_uri(port: int, path: str = "/callback") -> str:
    """The redirect URI of a loopback listener on ``port`` (A6): ``http://127.0.0.1:<port>/callback``."""
    if not 0 < port < 65536:
        raise ValueError(f"not a port number: {port}")
    if not path.startswith("/"):
        raise ValueError("the path must start with '/'")
    return f"http://127.0.0.1:{port}{path}"


def check_redirect_uri(uri: str) -> str:
    """Return ``uri`` if it is a loopback redirect URI with an explicit port (A6).

    Raises:
        PolicyError: another scheme or host, no port, a fragment or credentials.
    """
    try:
        parts = _split(uri)
        port = parts.port
    except ValueError:
        port = None
        parts = _split("")
    if (
        parts.scheme != "http"
        or parts.hostname not in ("127.0.0.1", "::1")
        or port is None
        or parts.fragment
        or parts.username is not None
    ):
        raise PolicyError(
            f"the redirect URI must be http://127.0.0.1:<port>/<path> (loopback only), not {untrusted(uri)}",
            hint="use loopback_redirect_uri(port) for the callback listener",
        )
    return uri

"""DPoP (RFC 9449, SEP-1932, E3): proofs, nonces, the choice to use it, and how a bound token is sent.

A proof is a JWT signed with the grant's key, ``typ: dpop+jwt``, the public ``jwk`` in its header, and the
claims ``jti`` (fresh per proof), ``htm``, ``htu`` (the URL without query or fragment), ``iat``, plus
``nonce`` when a server demanded one and ``ath`` (the access token's hash) on a resource request.

Nonces: an authorization server that wants one answers a token request with 400 ``use_dpop_nonce`` and a
``DPoP-Nonce`` header (§8); a resource server with 401 and ``WWW-Authenticate: DPoP
error="use_dpop_nonce"`` (§9). Either may send a fresh ``DPoP-Nonce`` on any answer. The request is made
again once with the nonce; the latest nonce is remembered for the next request to the same server.

When to use DPoP (``dpop`` setting): ``off`` never. ``auto`` when the authorization server lists ES256 in
``dpop_signing_alg_values_supported`` *and* the MCP server shows it can check proofs — a ``DPoP`` challenge
in its 401, or ``dpop_signing_alg_values_supported`` / ``dpop_bound_access_tokens_required`` in its
protected-resource metadata. Many authorization servers (oidc-provider's defaults among them) offer DPoP
while the MCP server in front only accepts ``Bearer``; a bound token would be refused there. ``required``
whenever the authorization server offers ES256, and refuses it when it does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from brokerd.oauth._challenge import Challenge, parse_www_authenticate
from brokerd.oauth._discovery import Discovery
from brokerd.oauth._effects import Entropy, HttpResponse, TransportFailure
from brokerd.oauth._errors import PolicyError
from brokerd.oauth._http import error_fields
from brokerd.oauth._jose import JwsSigner, access_token_hash, b64url, compact_jws
from brokerd.secret import Secret

__all__ = [
    "DPOP_ALG",
    "DpopMode",
    "dpop_header",
    "dpop_proof",
    "htu",
    "nonce_challenge",
    "response_nonce",
    "wants_dpop",
]

DPOP_ALG = "ES256"
DpopMode = Literal["auto", "required", "off"]
USE_DPOP_NONCE = "use_dpop_nonce"
_JTI_BYTES = 16
_MAX_NONCE = 1024
# RFC 9449 §8.1: nonce = 1*NQCHAR, NQCHAR = %x21 / %x23-5B / %x5D-7E
_NQCHAR = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "\\"}


def htu(url: str) -> str:
    """The ``htu`` of a request to ``url``: scheme, authority and path, no query, no fragment (§4.2)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def dpop_proof(
    key: JwsSigner,
    *,
    method: str,
    url: str,
    now: float,
    entropy: Entropy,
    nonce: str | None = None,
    access_token: Secret | None = None,
) -> str:
    """A fresh DPoP proof for ``method url`` at ``now``; with ``access_token`` it carries ``ath`` (a resource
    request, §7), with ``nonce`` the server's nonce.

    Raises:
        ValueError: ``key`` has no public JWK, or ``entropy`` misbehaves.
    """
    if not key.public_jwk:
        raise ValueError("a DPoP key needs its public JWK")
    jti = entropy(_JTI_BYTES)
    if not isinstance(jti, bytes) or len(jti) != _JTI_BYTES:
        raise ValueError(f"entropy({_JTI_BYTES}) must return exactly {_JTI_BYTES} bytes")
    claims: dict[str, object] = {"jti": b64url(jti), "htm": method.upper(), "htu": htu(url), "iat": int(now)}
    if nonce is not None:
        claims["nonce"] = nonce
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token.reveal())
    header = {"typ": "dpop+jwt", "jwk": dict(key.public_jwk)}
    return compact_jws(header, claims, key)


def dpop_header(proof: str) -> tuple[str, str]:
    """The request header that carries ``proof``."""
    return "dpop", proof


def response_nonce(result: HttpResponse | TransportFailure) -> str | None:
    """The ``DPoP-Nonce`` an answer carries, if it is a well-formed nonce (§8.1), else None."""
    if not isinstance(result, HttpResponse):
        return None
    value = result.header("dpop-nonce")
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > _MAX_NONCE or any(ch not in _NQCHAR for ch in value):
        return None
    return value


def nonce_challenge(result: HttpResponse | TransportFailure) -> str | None:
    """The nonce to retry with when ``result`` demands one: an authorization server's 400 with error
    ``use_dpop_nonce`` (§8), or a resource server's 401 whose ``DPoP`` challenge says ``use_dpop_nonce``
    (§9), each with a ``DPoP-Nonce`` header. None for any other answer."""
    nonce = response_nonce(result)
    if nonce is None or not isinstance(result, HttpResponse):
        return None
    if result.status == 400 and error_fields(result.body)[0] == USE_DPOP_NONCE:
        return nonce
    if result.status == 401 and any(
        c.scheme.lower() == "dpop" and c.error == USE_DPOP_NONCE
        for c in parse_www_authenticate(result.header_values("www-authenticate"))
    ):
        return nonce
    return None


def wants_dpop(mode: DpopMode, discovery: Discovery, challenges: Iterable[Challenge] = ()) -> bool:
    """Whether a new grant at ``discovery``'s authorization server should be DPoP-bound (see the module
    docstring). ``challenges`` are those of the MCP server's 401 (``parse_www_authenticate``).

    Raises:
        PolicyError: ``required``, and the authorization server does not offer DPoP with ES256.
    """
    if mode == "off":
        return False
    offered = DPOP_ALG in (discovery.dpop_signing_alg_values_supported or ())
    if mode == "required":
        if not offered:
            listed = discovery.dpop_signing_alg_values_supported
            why = "does not offer DPoP" if not listed else f"offers DPoP only with {', '.join(listed)[:80]}"
            raise PolicyError(
                f"the authorization server {discovery.issuer} {why}, and this server's config requires"
                f" DPoP with {DPOP_ALG}",
                hint='set auth.oauth21.dpop to "auto" to accept Bearer tokens from it',
            )
        return True
    return offered and _resource_checks_proofs(discovery, challenges)


def _resource_checks_proofs(discovery: Discovery, challenges: Iterable[Challenge]) -> bool:
    if discovery.resource_dpop_bound_access_tokens_required:
        return True
    if DPOP_ALG in (discovery.resource_dpop_signing_alg_values_supported or ()):
        return True
    return any(c.scheme.lower() == "dpop" for c in challenges)

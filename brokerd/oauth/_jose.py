"""JOSE composition for the flows that sign: compact JWS (RFC 7515), base64url, JWK thumbprints (RFC 7638).

The core builds JWTs but never holds a private key: a :class:`JwsSigner` carries the algorithm name, the
public JWK (for DPoP proofs, which embed it) and a ``sign`` callable that the edge (``brokerd/keys.py``)
makes from a key it keeps. ``sign`` receives the JWS signing input (``BASE64URL(header) "."
BASE64URL(payload)``) and returns the JWS signature bytes — for ES256 the 64-byte ``R || S`` of RFC 7518
§3.4, not DER. Nothing here verifies a signature: the broker only makes JWTs and passes other parties'
JWTs on unopened (:func:`unverified_claims` reads one for scheduling, never for trust).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

__all__ = [
    "JwsSigner",
    "access_token_hash",
    "b64url",
    "b64url_decode",
    "compact_jws",
    "jwk_thumbprint",
    "unverified_claims",
]

# RFC 7638 §3.2: the required members of each key type, the only ones the thumbprint covers.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
# Members that only a private JWK has (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2): never embedded in a header.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MAX_JWT = 16 * 1024


@dataclass(frozen=True, slots=True, repr=False)
class JwsSigner:
    """A signing key as the core sees it: ``alg`` (e.g. ``ES256``), the public JWK, an optional ``kid``, and
    ``sign(signing_input) -> signature``. The private key stays with whoever made ``sign``.

    Raises ValueError at construction when ``public_jwk`` holds a private member (``d``, …) or is not a
    key type RFC 7638 covers.
    """

    alg: str
    sign: Callable[[bytes], bytes] = field(compare=False)
    public_jwk: Mapping[str, str] = field(default_factory=dict)
    kid: str | None = None

    def __post_init__(self) -> None:
        if _PRIVATE_MEMBERS & set(self.public_jwk):
            raise ValueError("public_jwk holds private key members")
        if self.public_jwk:
            jwk_thumbprint(self.public_jwk)  # validates the members

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint of the public JWK (DPoP's ``jkt``)."""
        return jwk_thumbprint(self.public_jwk)

    def __repr__(self) -> str:
        shown = f", jkt={self.thumbprint}" if self.public_jwk else ""
        return f"JwsSigner({self.alg}{shown})"


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """The bytes of unpadded (or padded) base64url text.

    Raises:
        ValueError: characters outside the base64url alphabet, or an impossible length.
    """
    if not text.isascii() or any(c in text for c in "+/ \t\r\n"):
        raise ValueError("not base64url text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url text") from None


def compact_jws(header: Mapping[str, Any], claims: Mapping[str, Any], signer: JwsSigner) -> str:
    """A compact JWS: ``header`` (``alg`` and ``kid`` come from ``signer``) over the JSON ``claims``.

    Raises:
        ValueError: ``signer.sign`` returned something that is not bytes.
    """
    protected = {**header, "alg": signer.alg}
    if signer.kid is not None and "kid" not in protected:
        protected["kid"] = signer.kid
    signing_input = f"{b64url(msgspec.json.encode(protected))}.{b64url(msgspec.json.encode(claims))}"
    signature = signer.sign(signing_input.encode("ascii"))
    if not isinstance(signature, bytes) or not signature:
        raise ValueError("the signer returned no signature bytes")
    return f"{signing_input}.{b64url(signature)}"


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 JWK thumbprint with SHA-256: base64url of the hash of the required members, in
    lexicographic order, as JSON without whitespace.

    Raises:
        ValueError: an unknown ``kty``, or a required member missing or not a string.
    """
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None:
        raise ValueError(f"no thumbprint for key type {str(jwk.get('kty'))[:10]!r}")
    required = {}
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"the JWK lacks its {name!r} member")
        required[name] = value
    return b64url(hashlib.sha256(msgspec.json.encode(required)).digest())


def access_token_hash(access_token: str) -> str:
    """DPoP's ``ath`` (RFC 9449 §4.2): base64url of the SHA-256 of the ASCII access token."""
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


def unverified_claims(jwt: str) -> dict[str, Any]:
    """The payload of a compact JWS, *without* verifying anything. For reading a token's ``exp`` to plan a
    renewal, never for deciding whom to trust.

    Raises:
        ValueError: not three dot-separated base64url parts, too long, or a payload that is not a JSON object.
    """
    parts = jwt.split(".")
    if len(jwt) > _MAX_JWT or len(parts) != 3:
        raise ValueError("not a compact JWS")
    try:
        claims = msgspec.json.decode(b64url_decode(parts[1]))
    except msgspec.DecodeError:
        raise ValueError("the JWT payload is not JSON") from None
    if not isinstance(claims, dict):
        raise ValueError("the JWT payload is not a JSON object")
    return claims

"""PKCE (RFC 7636) with S256 only, and the random values of a login (A1, A4)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Literal

from brokerd.oauth._discovery import Discovery
from brokerd.oauth._effects import Entropy
from brokerd.oauth._errors import PolicyError
from brokerd.secret import Secret

__all__ = ["Pkce", "make_pkce", "random_string", "require_s256"]

_RANDOM_BYTES = 32


@dataclass(frozen=True, slots=True)
class Pkce:
    """A PKCE pair: the secret ``verifier`` (sent with the code) and its S256 ``challenge``."""

    verifier: Secret
    challenge: str
    method: Literal["S256"] = "S256"


def random_string(entropy: Entropy, n: int = _RANDOM_BYTES) -> str:
    """``n`` bytes from ``entropy`` as unpadded base64url (43 characters for 32 bytes)."""
    data = entropy(n)
    if not isinstance(data, bytes) or len(data) != n:
        raise ValueError(f"entropy({n}) must return exactly {n} bytes")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_pkce(entropy: Entropy) -> Pkce:
    """A fresh verifier of 32 random bytes, base64url, and its S256 challenge (A1)."""
    verifier = random_string(entropy)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return Pkce(Secret(verifier), challenge)


def require_s256(discovery: Discovery) -> None:
    """Refuse an authorization server that does not advertise S256 (A1).

    The one exception is a 2025-03-26 server without any metadata (``source == "legacy_defaults"``): there
    is nothing to advertise with, and that revision required PKCE S256 of every server.

    Raises:
        PolicyError: ``code_challenge_methods_supported`` is absent or lacks ``S256``.
    """
    if discovery.source == "legacy_defaults":
        return
    methods = discovery.code_challenge_methods_supported
    if methods is None or "S256" not in methods:
        listed = (
            "does not list code_challenge_methods_supported" if methods is None else "does not offer S256"
        )
        raise PolicyError(
            f"the authorization server {discovery.issuer} {listed} for PKCE; refusing to log in without it",
            hint="the authorization server must support PKCE with S256 (OAuth 2.1); ask its operator",
        )

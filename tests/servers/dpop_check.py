"""A resource server's DPoP checks (RFC 9449 §7, §9) for the test MCP server (tests/servers/mcp_server.py).

Modes: ``off`` (Bearer only, the default), ``required`` (only ``Authorization: DPoP`` with a valid proof;
a request without one gets ``401 WWW-Authenticate: DPoP algs="ES256", resource_metadata="…"``), ``nonce``
(``required``, and every proof must carry the server's current nonce: a proof without it, or with an old
one, gets ``401 DPoP error="use_dpop_nonce"`` and a ``DPoP-Nonce`` header).

A proof is checked the way a careful resource server would: exactly one ``DPoP`` header; a JWS with
``typ: dpop+jwt``, an asymmetric ``alg`` and a public ``jwk`` (no private part) that verifies it; ``htm`` =
the request's method, ``htu`` = the request's URL without query or fragment, ``iat`` within five minutes,
a ``jti`` never seen before (a replay is refused), ``ath`` = base64url(SHA-256(access token)), and the
access token's ``cnf.jkt`` = the RFC 7638 thumbprint of the proof's key. The access token itself is then
verified by the SDK's verifier as any token is (signature, issuer, audience, expiry).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import jwt

__all__ = ["DpopChecker", "Refusal", "thumbprint"]

_ASYMMETRIC = ("ES256", "ES384", "ES512", "RS256", "PS256", "EdDSA")
_IAT_WINDOW = 300
_JWK_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK."""
    members = {k: jwk[k] for k in _JWK_MEMBERS[str(jwk["kty"])]}
    return _b64url(
        hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    )


@dataclass
class Refusal:
    """Why a request was refused: the ``WWW-Authenticate`` to answer with, and headers to add."""

    reason: str
    challenge: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class DpopChecker:
    """The DPoP state of one resource server: its mode, its current nonce, the ``jti`` values it has seen."""

    def __init__(self, mode: str, metadata_url: str) -> None:
        if mode not in ("off", "required", "nonce"):
            raise ValueError(f"unknown dpop mode {mode!r}")
        self.mode = mode
        self.metadata_url = metadata_url
        self.nonce = f"rs-nonce-{secrets.token_urlsafe(12)}"
        self._seen_jti: set[str] = set()
        self.counts: Counter[str] = Counter()

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def rotate_nonce(self) -> str:
        self.nonce = f"rs-nonce-{secrets.token_urlsafe(12)}"
        return self.nonce

    def _refuse(self, reason: str, error: str = "invalid_dpop_proof") -> Refusal:
        self.counts[f"refused:{reason}"] += 1
        description = reason.replace('"', "'")
        return Refusal(
            reason,
            f'DPoP error="{error}", error_description="{description}", algs="ES256", '
            f'resource_metadata="{self.metadata_url}"',
        )

    def missing(self) -> Refusal:
        """The answer to a request without a DPoP-bound token."""
        self.counts["no_dpop"] += 1
        return Refusal("no DPoP token", f'DPoP algs="ES256", resource_metadata="{self.metadata_url}"')

    def check(self, *, method: str, url: str, scheme: str, token: str, proofs: list[str]) -> Refusal | None:
        """None when the request's token and proof are good, else the refusal to answer with. ``url`` is the
        request's URL without query or fragment (the resource's own)."""
        if scheme.lower() != "dpop":
            return self._refuse("a Bearer token where DPoP is required", "invalid_token")
        if len(proofs) != 1:
            return self._refuse(f"{len(proofs)} DPoP headers")
        proof = proofs[0]
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.PyJWTError:
            return self._refuse("the proof is not a JWS")
        jwk = header.get("jwk")
        if (
            header.get("typ") != "dpop+jwt"
            or header.get("alg") not in _ASYMMETRIC
            or not isinstance(jwk, dict)
        ):
            return self._refuse("bad proof header (typ, alg or jwk)")
        if "d" in jwk:
            return self._refuse("the proof's jwk holds a private key")
        try:
            key = jwt.PyJWK(jwk, algorithm=str(header["alg"])).key
            claims: dict[str, Any] = jwt.decode(
                proof, key, algorithms=[str(header["alg"])], options={"verify_aud": False}
            )
        except (jwt.PyJWTError, KeyError, ValueError) as exc:
            return self._refuse(f"the proof does not verify ({type(exc).__name__})")
        if claims.get("htm") != method or claims.get("htu") != url:
            return self._refuse(f"htm/htu {claims.get('htm')} {claims.get('htu')} are not {method} {url}")
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or abs(time.time() - iat) > _IAT_WINDOW:
            return self._refuse("iat is missing or not recent")
        ath = _b64url(hashlib.sha256(token.encode()).digest())
        if claims.get("ath") != ath:
            return self._refuse("ath is not the access token's hash")
        try:
            token_claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return self._refuse("the access token is not a JWT", "invalid_token")
        cnf = token_claims.get("cnf")
        if not isinstance(cnf, dict) or cnf.get("jkt") != thumbprint(jwk):
            return self._refuse("the token is not bound to the proof's key (cnf.jkt)", "invalid_token")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or jti in self._seen_jti:
            self.counts["replays"] += 1
            return self._refuse("the proof's jti was seen before (a replay)")
        self._seen_jti.add(jti)
        if self.mode == "nonce" and claims.get("nonce") != self.nonce:
            self.counts["nonce_challenges"] += 1
            refusal = self._refuse("a fresh nonce is needed", "use_dpop_nonce")
            refusal.headers.append((b"dpop-nonce", self.nonce.encode()))
            return refusal
        self.counts["accepted"] += 1
        return None

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, **dict(self.counts)}

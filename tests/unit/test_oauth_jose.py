"""JOSE composition (E1, E3): base64url, compact JWS around a signing callable, RFC 7638 thumbprints.

The signer here is a stand-in (SHA-256 of the signing input): the core only composes; real ES256 signatures
are checked in test_keys.py and against oidc-provider in the integration tests.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from brokerd.oauth import (
    JwsSigner,
    access_token_hash,
    b64url,
    b64url_decode,
    compact_jws,
    jwk_thumbprint,
    unverified_claims,
)

# RFC 9449 §4.1's example key (public part) and the jkt that §6.1 binds to it.
RFC9449_JWK = {
    "kty": "EC",
    "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
    "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    "crv": "P-256",
}
RFC9449_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
# RFC 7638 §3.1's example RSA key and its thumbprint.
RFC7638_JWK = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWK"
        "RXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMic"
        "AtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3"
        "XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def fake_signer(**changes: Any) -> JwsSigner:
    fields: dict[str, Any] = {"alg": "ES256", "sign": lambda data: hashlib.sha256(data).digest()}
    fields["public_jwk"] = RFC9449_JWK
    fields.update(changes)
    return JwsSigner(**fields)


def decode_part(part: str) -> Any:
    return json.loads(b64url_decode(part))


@pytest.mark.parametrize(
    ("data", "text"),
    [(b"", ""), (b"\xfb", "-w"), (b"\xff\xff", "__8"), (b"abc", "YWJj"), (bytes(range(5)), "AAECAwQ")],
)
def test_b64url_round_trip(data: bytes, text: str) -> None:
    """RFC 7515 §2: base64url without padding, '-' and '_' for '+' and '/'; decoding takes it back."""
    assert b64url(data) == text
    assert b64url_decode(text) == data


@pytest.mark.parametrize("text", ["a+b", "a/b", "ab c", "abcde", "é"])
def test_b64url_decode_refuses_other_alphabets(text: str) -> None:
    """Standard base64, spaces, an impossible length or non-ASCII are not base64url."""
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode(text)


@pytest.mark.parametrize(
    ("jwk", "thumbprint"),
    [(RFC9449_JWK, RFC9449_JKT), (RFC7638_JWK, RFC7638_THUMBPRINT)],
    ids=["rfc9449-ec", "rfc7638-rsa"],
)
def test_thumbprint_matches_the_rfc_examples(jwk: dict[str, str], thumbprint: str) -> None:
    """RFC 7638: SHA-256 over the required members in order; extra members (alg, kid) do not count."""
    assert jwk_thumbprint(jwk) == thumbprint


@pytest.mark.parametrize(
    ("jwk", "problem"),
    [
        ({"kty": "oct", "k": "c2VjcmV0"}, "no thumbprint"),
        ({"kty": "EC", "crv": "P-256", "x": "abc"}, "'y'"),
        ({"kty": "EC", "crv": "P-256", "x": "abc", "y": 5}, "'y'"),
        ({"crv": "P-256", "x": "a", "y": "b"}, "no thumbprint"),
    ],
)
def test_thumbprint_refuses_unusable_keys(jwk: dict[str, Any], problem: str) -> None:
    """A symmetric key, a missing or non-string member, or no kty has no thumbprint."""
    with pytest.raises(ValueError, match=problem):
        jwk_thumbprint(jwk)


def test_compact_jws_signs_the_signing_input() -> None:
    """RFC 7515 §7.1: header.payload.signature; the signer gets exactly header.payload; its alg is used."""
    seen: list[bytes] = []

    def sign(data: bytes) -> bytes:
        seen.append(data)
        return b"\x01\x02"

    jws = compact_jws({"typ": "JWT"}, {"sub": "me", "n": 1}, JwsSigner("ES256", sign, kid="k1"))
    header, payload, signature = jws.split(".")
    assert seen == [f"{header}.{payload}".encode()]
    assert decode_part(header) == {"typ": "JWT", "alg": "ES256", "kid": "k1"}
    assert decode_part(payload) == {"sub": "me", "n": 1}
    assert signature == "AQI"


def test_compact_jws_refuses_a_signer_that_returns_nothing() -> None:
    """A signing callable that returns no bytes is a bug at the edge, reported as such."""
    with pytest.raises(ValueError, match="no signature"):
        compact_jws({}, {}, JwsSigner("ES256", lambda data: b""))


def test_signer_refuses_a_private_jwk_and_never_shows_its_callable() -> None:
    """A JWK with 'd' is a private key: never accepted as the public JWK; repr shows alg and jkt only."""
    with pytest.raises(ValueError, match="private"):
        fake_signer(public_jwk={**RFC9449_JWK, "d": "secret-scalar"})
    signer = fake_signer()
    assert repr(signer) == f"JwsSigner(ES256, jkt={RFC9449_JKT})"
    assert signer.thumbprint == RFC9449_JKT


def test_access_token_hash_matches_rfc9449() -> None:
    """RFC 9449 §7.1's example: the ath of its access token."""
    token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
    assert access_token_hash(token) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_unverified_claims_reads_a_payload() -> None:
    """The payload of a JWT we made, read back without verification."""
    jws = compact_jws({}, {"exp": 123, "sub": "x"}, fake_signer())
    assert unverified_claims(jws) == {"exp": 123, "sub": "x"}


@pytest.mark.parametrize(
    "jwt",
    ["", "a.b", "a.b.c.d", "e30.W10.x", f"e30.{b64url(b'not json')}.x", "e30." + "A" * 20000 + ".x"],
    ids=["empty", "two-parts", "four-parts", "array", "not-json", "huge"],
)
def test_unverified_claims_refuses_what_is_not_a_jwt(jwt: str) -> None:
    """Wrong part count, a payload that is not a JSON object, or an oversized token: ValueError."""
    with pytest.raises(ValueError, match="J"):
        unverified_claims(jwt)

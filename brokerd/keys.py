"""Private keys at the edge: a DPoP key per grant (E3) and a client's key for ``private_key_jwt`` (E1).

The OAuth core never holds a private key. It gets a :class:`~brokerd.oauth.JwsSigner` from
:meth:`PrivateKey.signer`, whose ``sign`` is a method of the :class:`PrivateKey` here; the key object itself
prints as ``PrivateKey(ES256, jkt=…)`` and refuses to be pickled, so a key that strays into a log line, an
exception or a status answer shows nothing (DESIGN.md rule 8). The only way out of the process is
:meth:`PrivateKey.to_secret` — PKCS #8 PEM wrapped in a :class:`~brokerd.secret.Secret`, for the token store.

Key files (``auth.oauth21.privateKey.file``) must be regular files of mode 0600 (or stricter) owned by the
user the daemon runs as, unencrypted PEM (PKCS #8 or the traditional EC/RSA forms); anything else is
refused with the command that fixes it. Supported: EC P-256/P-384/P-521 (ES256/384/512), RSA of 2048 bits or
more (RS256), Ed25519 (EdDSA). New DPoP keys are EC P-256 (ES256), which every DPoP server must accept.

``cryptography`` is imported on first use, so the daemon's start and ``ncp-token`` do not pay for it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brokerd.oauth import JwsSigner, b64url, jwk_thumbprint
from brokerd.secret import Secret

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = [
    "MAX_KEY_FILE",
    "KeyFileError",
    "PrivateKey",
    "load_key_file",
    "load_key_pem",
    "new_dpop_key",
]

MAX_KEY_FILE = 64 * 1024
_MIN_RSA_BITS = 2048
_EC_ALGS = {"secp256r1": ("ES256", "P-256"), "secp384r1": ("ES384", "P-384"), "secp521r1": ("ES512", "P-521")}


class KeyFileError(Exception):
    """A private key cannot be used: the file is missing, readable by others, owned by someone else, not a
    PEM key, encrypted, or of a kind this client does not sign with. ``hint`` says what to run or change.
    The message never contains key material."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class PrivateKey:
    """A private signing key that never prints itself. ``alg`` is its JWS algorithm, ``public_jwk`` its
    public half (the only part that is ever sent), ``thumbprint`` the RFC 7638 thumbprint of that."""

    __slots__ = ("_key", "alg", "public_jwk")
    _key: Any
    alg: str
    public_jwk: dict[str, str]

    def __init__(self, key: PrivateKeyTypes) -> None:
        alg, jwk = _describe(key)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "alg", alg)
        object.__setattr__(self, "public_jwk", jwk)

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint of the public key (DPoP's ``jkt``)."""
        return jwk_thumbprint(self.public_jwk)

    def signer(self, *, kid: str | None = None) -> JwsSigner:
        """The :class:`~brokerd.oauth.JwsSigner` the OAuth core signs with; ``kid`` for a client key the
        server knows by key ID (none for DPoP keys: the proof carries the key itself)."""
        return JwsSigner(self.alg, self.sign, dict(self.public_jwk), kid)

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS signature of ``signing_input`` (RFC 7518 §3: ``R || S`` for ECDSA, not DER)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            digest = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "ES512": hashes.SHA512()}[self.alg]
            r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(digest)))
            size = (key.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key.sign(signing_input)

    def to_secret(self) -> Secret:
        """The key as unencrypted PKCS #8 PEM in a :class:`~brokerd.secret.Secret` (token store only)."""
        from cryptography.hazmat.primitives import serialization

        pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return Secret(pem.decode("ascii"))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PrivateKey is immutable")

    def __repr__(self) -> str:
        return f"PrivateKey({self.alg}, jkt={self.thumbprint})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> Any:
        raise TypeError("PrivateKey refuses to be pickled")


def new_dpop_key() -> PrivateKey:
    """A fresh EC P-256 key for one grant's DPoP proofs (ES256)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return PrivateKey(ec.generate_private_key(ec.SECP256R1()))


def load_key_pem(pem: Secret, *, what: str = "the private key") -> PrivateKey:
    """A key from PEM text (a stored DPoP key, or a client key kept in the keyring).

    Raises:
        KeyFileError: not an unencrypted PEM private key of a supported kind.
    """
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(pem.reveal().encode("utf-8"), password=None)
    except TypeError:
        raise KeyFileError(
            f"{what} is encrypted with a passphrase; ncp-broker needs it unencrypted",
            hint="keep it in a file of mode 0600 instead: openssl pkey -in KEY.pem -out NEW.pem",
        ) from None
    except (ValueError, UnicodeError):
        # cryptography's message says only that the data could not be parsed; ours says the same.
        raise KeyFileError(
            f"{what} is not a PEM private key",
            hint="give a PEM file that starts with -----BEGIN PRIVATE KEY-----",
        ) from None
    return PrivateKey(key)


def load_key_file(path: Path) -> PrivateKey:
    """The client's private key from ``path`` (``~`` is expanded), after checking who may read the file.

    Raises:
        KeyFileError: missing or unreadable, not a regular file, readable or writable by group or others
            (the hint is ``chmod 600 PATH``), owned by another user, too big, not a usable PEM key.
    """
    path = path.expanduser()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise KeyFileError(
            f"cannot open the private key file {path}: {exc.strerror}",
            hint="check auth.oauth21.privateKey.file in the config",
        ) from None
    try:
        _check_owner_and_mode(path, os.fstat(fd))
        with os.fdopen(os.dup(fd), "rb") as file:
            data = file.read(MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(f"the private key file {path} is larger than {MAX_KEY_FILE // 1024} KiB")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(
            f"the private key file {path} is not PEM text",
            hint="convert it: openssl pkey -in KEY -out KEY.pem",
        ) from None
    return load_key_pem(Secret(text), what=f"the private key in {path}")


def _check_owner_and_mode(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"the private key file {path} is not a regular file")
    if st.st_uid != os.getuid():
        raise KeyFileError(
            f"the private key file {path} belongs to another user (uid {st.st_uid})",
            hint=f"make it yours and private: chown {os.getuid()} {path} && chmod 600 {path}",
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise KeyFileError(
            f"the private key file {path} is readable or writable by other users"
            f" (mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it",
            hint=f"chmod 600 {path}",
        )


def _describe(key: object) -> tuple[str, dict[str, str]]:
    """(JWS alg, public JWK) of a supported private key; KeyFileError for any other."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        found = _EC_ALGS.get(key.curve.name)
        if found is None:
            raise KeyFileError(f"EC keys on {key.curve.name} cannot sign JWTs; use P-256")
        alg, crv = found
        numbers = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8
        return alg, {
            "kty": "EC",
            "crv": crv,
            "x": b64url(numbers.x.to_bytes(size, "big")),
            "y": b64url(numbers.y.to_bytes(size, "big")),
        }
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < _MIN_RSA_BITS:
            raise KeyFileError(f"RSA keys need at least {_MIN_RSA_BITS} bits, this one has {key.key_size}")
        public = key.public_key().public_numbers()
        return "RS256", {
            "kty": "RSA",
            "n": b64url(public.n.to_bytes((public.n.bit_length() + 7) // 8, "big")),
            "e": b64url(public.e.to_bytes((public.e.bit_length() + 7) // 8, "big")),
        }
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "EdDSA", {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    raise KeyFileError(
        f"{type(key).__name__.removeprefix('_')} keys are not supported; use EC P-256, RSA or Ed25519",
        hint="make one: openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out client.pem",
    )

"""brokerd/keys.py (E1, E3): keys that sign real JWTs, key files checked like credentials, never printed."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from brokerd.keys import KeyFileError, PrivateKey, load_key_file, load_key_pem, new_dpop_key
from brokerd.oauth import (
    Registration,
    b64url_decode,
    client_assertion,
    dpop_proof,
    jwk_thumbprint,
)
from brokerd.oauth.testing import counter_entropy
from brokerd.secret import Secret

NOW = 1_700_000_000.0


def pem(key: Any, password: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))


def key_file(tmp_path: Path, data: bytes, mode: int = 0o600, name: str = "client.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


def header_of(token: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(token.split(".", maxsplit=1)[0])))


def test_dpop_key_signs_proofs_a_jose_library_accepts() -> None:
    """E3: a new DPoP key is EC P-256; the core's proof verifies with PyJWT against the jwk it embeds."""
    key = new_dpop_key()
    assert key.alg == "ES256"
    assert set(key.public_jwk) == {"kty", "crv", "x", "y"}
    proof = dpop_proof(
        key.signer(), method="POST", url="https://as.example/token", now=NOW, entropy=counter_entropy()
    )
    header = header_of(proof)
    assert header["jwk"] == key.public_jwk
    assert jwk_thumbprint(header["jwk"]) == key.thumbprint
    claims = jwt.decode(
        proof, jwt.PyJWK(header["jwk"]).key, algorithms=["ES256"], options={"verify_iat": False}
    )
    assert claims["htu"] == "https://as.example/token"


def test_es256_signature_is_raw_r_and_s() -> None:
    """RFC 7518 §3.4: the signature is the 64 bytes R || S, which re-encoded as DER verifies."""
    key = new_dpop_key()
    signature = key.sign(b"input")
    assert len(signature) == 64
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    public = serialization.load_pem_private_key(key.to_secret().reveal().encode(), None).public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(der, b"input", ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize(
    ("make", "alg"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "ES512"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
    ],
    ids=["p256", "p384", "p521", "rsa2048", "ed25519"],
)
def test_client_key_files_sign_assertions(tmp_path: Path, make: Any, alg: str) -> None:
    """E1: a 0600 key file of each supported kind signs a client assertion that its public JWK verifies."""
    key = load_key_file(key_file(tmp_path, pem(make())))
    assert key.alg == alg
    registration = Registration(
        issuer="https://as.example", client_id="ci", token_endpoint_auth_method="private_key_jwt"
    )
    assertion = client_assertion(registration, key.signer(kid="k1"), now=NOW, entropy=counter_entropy())
    assert header_of(assertion.reveal())["kid"] == "k1"
    claims = jwt.decode(
        assertion.reveal(),
        jwt.PyJWK({**key.public_jwk, "alg": alg}).key,
        algorithms=[alg],
        audience="https://as.example",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert (claims["iss"], claims["sub"]) == ("ci", "ci")


def test_a_stored_dpop_key_comes_back_the_same() -> None:
    """E3: to_secret → load_key_pem gives the same key back (a grant's DPoP key in the store)."""
    key = new_dpop_key()
    stored = key.to_secret()
    assert isinstance(stored, Secret)
    assert load_key_pem(stored).thumbprint == key.thumbprint


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """E1: a key file that group or others can read or write is refused; the hint is chmod 600 PATH."""
    path = key_file(tmp_path, pem(ec.generate_private_key(ec.SECP256R1())), mode)
    with pytest.raises(KeyFileError) as err:
        load_key_file(path)
    assert "other users" in err.value.message
    assert err.value.hint == f"chmod 600 {path}"


def test_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    """E1: a key file owned by another user is refused (only root can make one to test with)."""
    if os.getuid() != 0:
        pytest.skip("needs root to give a file to another user")
    path = key_file(tmp_path, pem(ec.generate_private_key(ec.SECP256R1())))
    os.chown(path, 65534, -1)
    with pytest.raises(KeyFileError) as err:
        load_key_file(path)
    assert "another user" in err.value.message
    assert err.value.hint is not None
    assert f"chmod 600 {path}" in err.value.hint


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (lambda: pem(ec.generate_private_key(ec.SECP256R1()), b"pass"), "encrypted"),
        (lambda: b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n", "not a PEM"),
        (lambda: b"\x30\x82\x01\x02binary DER", "not PEM text"),
        (lambda: b"A" * (64 * 1024 + 1), "larger than"),
        (lambda: pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "at least 2048"),  # noqa: S505 - refused on purpose
        (lambda: pem(dsa.generate_private_key(key_size=2048)), "not supported"),
        (lambda: pem(ec.generate_private_key(ec.SECP256K1())), "cannot sign JWTs"),
    ],
    ids=["encrypted", "garbage", "der", "huge", "rsa1024", "dsa", "secp256k1"],
)
def test_unusable_key_files(tmp_path: Path, data: Any, problem: str) -> None:
    """E1: encrypted, unparsable, binary, oversized keys and unsupported kinds each get their own message."""
    with pytest.raises(KeyFileError, match=problem):
        load_key_file(key_file(tmp_path, data()))


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_key_path_that_is_not_a_file(tmp_path: Path, kind: str) -> None:
    """E1: a missing path or a directory is refused with the config key to check."""
    path = tmp_path / "nope.pem"
    if kind == "directory":
        path.mkdir(mode=0o700)
    with pytest.raises(KeyFileError) as err:
        load_key_file(path)
    assert str(path) in err.value.message


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """E1: privateKey.file may be written with ~ (the config is per user)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    key_file(tmp_path, pem(ec.generate_private_key(ec.SECP256R1())))
    assert load_key_file(Path("~/client.pem")).alg == "ES256"


def test_private_key_never_prints(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Rule 8: the key is in no repr, str, format, log line, exception or pickle; only to_secret has it."""
    raw = ec.generate_private_key(ec.SECP256R1())
    scalar = raw.private_numbers().private_value.to_bytes(32, "big")
    pem_text = pem(raw).decode()
    key = PrivateKey(raw)
    signer = key.signer()
    shown = [
        repr(key),
        str(key),
        f"{key}",
        f"{key:>40}",
        repr(signer),
        str(signer),
        repr(signer.sign),
        repr(vars_or_none(key)),
    ]
    caplog.set_level(logging.DEBUG)
    logging.getLogger("brokerd.test").debug("key %s signer %r sign %r", key, signer, signer.sign)
    logging.getLogger("brokerd.test").debug("formatted %s", {"key": key, "list": [signer]})
    shown.append(caplog.text)
    with pytest.raises(TypeError, match="pickled") as err:
        pickle.dumps(key)
    shown.append(str(err.value))
    # A key file others can read: the refusal names the file, never what is in it.
    with pytest.raises(KeyFileError) as refused:
        load_key_file(key_file(tmp_path, pem_text.encode(), 0o644))
    shown.extend([refused.value.message, refused.value.hint or ""])
    body = "".join(line for line in pem_text.splitlines() if not line.startswith("-----"))
    secret_forms = [body[i : i + 24] for i in range(0, len(body) - 24, 24)]
    secret_forms += [scalar.hex(), jwt_b64(scalar)]
    for text in shown:
        for form in secret_forms:
            assert form not in text
    assert body[:40] in key.to_secret().reveal().replace("\n", "")


def vars_or_none(obj: object) -> object:
    try:
        return vars(obj)
    except TypeError:
        return None


def jwt_b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_private_key_is_immutable() -> None:
    """A PrivateKey cannot be altered after it is made (no swapping the key under a signer)."""
    key = new_dpop_key()
    with pytest.raises(AttributeError):
        key.alg = "none"


def test_cryptography_is_loaded_only_when_a_key_is_used() -> None:
    """Importing brokerd.keys, brokerd.config or brokerd.oauth does not import cryptography."""
    code = (
        "import sys, brokerd.keys, brokerd.config, brokerd.oauth\n"
        "print('cryptography' in sys.modules)\n"
        "brokerd.keys.new_dpop_key()\n"
        "print('cryptography' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["False", "True"]

"""Secret hygiene of a test run (issue 5, DESIGN.md rule 8): no secret in a log, a status or an error text.

Every secret issued or configured while the tests run is collected, every daemon log and CLI output is kept,
and at the end of the session the outputs are searched for the secrets. The session fixture in
tests/conftest.py points ``$NCP_TEST_SECRETS_DIR`` at a private directory that holds:

    issued-<pid>.jsonl   from tests/servers/oidc_server.mjs: the access, refresh and ID tokens, authorization
                         and device codes, client secrets and registration access tokens it issued, and the
                         PKCE code verifiers it was shown
    configured.jsonl     from :func:`record_secret`: access keys and client secrets the tests configured
    outputs/<test>/      from ``Env`` (tests/harness/installation.py): the daemon logs and CLI output of
                         each test

Each ``.jsonl`` line is ``{"kind": ..., "value": ...}``. A report names the place and the kind of secret,
never its value. Values shorter than :data:`MIN_LENGTH` are ignored: they would match by chance.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "MIN_LENGTH",
    "OUTPUTS",
    "SECRETS_DIR_VAR",
    "Leak",
    "find_leaks",
    "json_secrets",
    "load_secrets",
    "private_key_secrets",
    "record_secret",
    "report",
    "scan_session",
    "secrets_dir",
]

SECRETS_DIR_VAR = "NCP_TEST_SECRETS_DIR"
MIN_LENGTH = 8
OUTPUTS = "outputs"

#: Fields of the config file (NCP's format) and of the store's documents that hold a secret, by kind.
SECRET_FIELDS = {
    "clientSecret": "client_secret",
    "client_secret": "client_secret",
    "token": "access_key",  # a bearer server's key written in the config (auth.token)
    "password": "password",
    "access_key": "access_key",
    "access_token": "access_token",
    "refresh_token": "refresh_token",
    "registration_access_token": "registration_access_token",
    "id_token": "id_token",
    "dpop_key": "dpop_key",  # a grant's DPoP private key (PEM) in the store's document
}

# A run of characters that are not whitespace, quotes, brackets or separators. Secrets (base64url, JWTs, the
# tests' keys) are one such run, so where one occurs in a text it lies inside one of the text's runs.
_RUN = re.compile(r"[^\s\"'<>()\[\]{},;\\]+")


class Leak(NamedTuple):
    where: str
    kind: str


def secrets_dir() -> Path | None:
    value = os.environ.get(SECRETS_DIR_VAR)
    return Path(value) if value else None


def record_secret(kind: str, value: object) -> None:
    """Remember a secret a test configured (an access key, a client secret) for the session's scan."""
    directory = secrets_dir()
    if directory is None or not isinstance(value, str) or len(value.strip()) < MIN_LENGTH:
        return
    fd = os.open(directory / "configured.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(json.dumps({"kind": kind, "value": value.strip()}) + "\n")


def private_key_secrets(pem: str) -> Iterator[tuple[str, str]]:
    """``(kind, value)`` for a private key's material: its PEM body (the base64 lines, which is what a
    log line that printed it would hold) and its private JWK parameter ``d`` (base64url, as a JWK would
    show it). Nothing for text that is not a PEM private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return
    body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
    yield "private_key_pem", body
    for line in pem.strip().splitlines():
        if not line.startswith("-----"):
            yield "private_key_pem", line
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        d = key.private_numbers().private_value.to_bytes(size, "big")
        yield "private_key_d", base64.urlsafe_b64encode(d).rstrip(b"=").decode()


def json_secrets(doc: Any) -> Iterator[tuple[str, str]]:
    """``(kind, value)`` for every secret field (:data:`SECRET_FIELDS`) in a config or store document."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if isinstance(value, str) and key in SECRET_FIELDS:
                yield SECRET_FIELDS[key], value
                if key == "dpop_key":
                    yield from private_key_secrets(value)
            else:
                yield from json_secrets(value)
    elif isinstance(doc, list):
        for item in doc:
            yield from json_secrets(item)


def load_secrets(directory: Path) -> dict[str, str]:
    """Every collected secret of at least :data:`MIN_LENGTH` characters, mapped to its kind."""
    secrets: dict[str, str] = {}
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a killed process
            value = entry.get("value") if isinstance(entry, dict) else None
            if isinstance(value, str) and len(value) >= MIN_LENGTH:
                secrets.setdefault(value, str(entry.get("kind", "secret")))
    return secrets


def find_leaks(secrets: Mapping[str, str], texts: Iterable[tuple[str, str]]) -> list[Leak]:
    """Every ``(where, kind)`` such that a secret of that kind occurs in the text named ``where``.

    ``secrets`` maps each value to its kind. To stay cheap with thousands of secrets and files, each secret is
    first looked for once, in the deduplicated runs of all texts; only the few found there are looked for
    text by text.
    """
    named = list(texts)
    pool = "\n".join({run for _, text in named for run in _RUN.findall(text) if len(run) >= MIN_LENGTH})
    leaks: set[Leak] = set()
    for value, kind in secrets.items():
        if len(value) < MIN_LENGTH:
            continue
        if value in pool or not _RUN.fullmatch(value):
            leaks.update(Leak(where, kind) for where, text in named if value in text)
    return sorted(leaks)


def _session_texts(directory: Path) -> Iterator[tuple[str, str]]:
    outputs = directory / OUTPUTS
    for path in sorted(outputs.rglob("*")):
        if path.is_file():
            yield str(path.relative_to(outputs)), path.read_text(errors="replace")


def scan_session(directory: Path) -> list[Leak]:
    """Search everything kept under ``outputs/`` for every secret collected in ``directory``."""
    return find_leaks(load_secrets(directory), _session_texts(directory))


def report(leaks: Iterable[Leak]) -> str:
    """One line per leak: where, and the kind of secret (never the value)."""
    lines = [f"  {leak.where}: a {leak.kind}" for leak in leaks]
    return "secrets leaked (DESIGN.md rule 8):\n" + "\n".join(lines)

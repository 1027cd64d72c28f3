"""Tokens that someone else issues, read each time they are needed: a workload's JWT (E4) or an enterprise
IdP's ID token kept by a sign-in helper (E2). Config: ``{"file": PATH}`` or ``{"command": [ARGV…]}``.

* A **file** is re-read when it changes (its inode, size or modification time): platforms rotate projected
  tokens in place. Its mode is not checked (they are mounted 0644 under a private directory, and live
  minutes); its content is.
* A **command** is run without a shell, its standard input closed, for at most :data:`COMMAND_TIMEOUT`
  seconds; its standard output, stripped, is the token (at most :data:`MAX_TOKEN` bytes). Its standard error
  is never read into a message or a log: a helper may print a token there.

What comes out is a :class:`~brokerd.secret.Secret` or a :class:`CredentialError` whose message names the
source and the fix. A JWT past its ``exp`` is refused here, before it is sent. After the authorization server
refuses a token (:meth:`TokenSource.note_refused`), the same token is never offered again: a new one must
appear first (the conformance suite counts a retry after a refusal as a fault, and so would an IdP's alarms).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import trio

from brokerd import config, oauth
from brokerd.secret import Secret

__all__ = ["COMMAND_TIMEOUT", "MAX_TOKEN", "CredentialError", "FileState", "TokenSource", "file_state"]

log = logging.getLogger("brokerd.grant")

COMMAND_TIMEOUT = 20.0
MAX_TOKEN = 64 * 1024
EXPIRY_SKEW = 5.0  # a JWT with less life than this left is as good as expired by the time it arrives


class CredentialError(Exception):
    """This daemon cannot present the grant's credentials: a key or token source is missing, unreadable,
    empty or failing, or the authorization server refused what it holds and nothing new has appeared.
    Nothing was sent. ``hint`` says what to run or change; the message never holds a secret."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class FileState:
    """What a file looks like, without reading it: a change of any of these may mean new content, a new
    mode (``chmod 600``) or a new file in its place."""

    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int
    uid: int


async def file_state(path: Path) -> FileState | None:
    """``path``'s :class:`FileState`, or None when it cannot be looked at (missing, no permission)."""
    try:
        return await trio.to_thread.run_sync(_stat, path)
    except OSError:
        return None


def _digest(value: Secret) -> str:
    return hashlib.sha256(value.reveal().encode()).hexdigest()


class TokenSource:
    """One ``workloadToken`` or ``enterprise.idToken``; ``what`` names it in messages (``the workload
    token``), ``key`` is its config key (``auth.oauth21.workloadToken``), ``server`` the config name for
    hints."""

    def __init__(self, source: config.TokenSource, *, what: str, key: str, server: str) -> None:
        self.source = source
        self.what = what
        self.key = key
        self.server = server
        self._cached: tuple[FileState, Secret] | None = None
        self._refused: str | None = None  # the digest of the token the authorization server refused

    @property
    def where(self) -> str:
        if self.source.file is not None:
            return f"{self.what} in {self.source.file}"
        argv = self.source.command or ()
        return f"{self.what} from the command {argv[0] if argv else '?'}"

    async def read(self, *, now: float) -> Secret:
        """The token to present now.

        Raises:
            CredentialError: the file is missing, unreadable, empty or too big; the command failed, timed
                out or printed nothing; the JWT has expired; it is the one the authorization server refused.
        """
        if self.source.file is not None:
            token = await self._read_file(self.source.file.expanduser())
        else:
            token = await self._run(self.source.command or ())
        self._check_expiry(token, now)
        if self._refused is not None and _digest(token) == self._refused:
            raise CredentialError(
                f"the authorization server refused {self.where}, and no new one has appeared since;"
                " it is not sent again",
                hint=f"make the platform issue a new one ({self.key}), then: ncp-broker login {self.server}",
            )
        return token

    def note_refused(self, token: Secret) -> None:
        """The authorization server refused ``token``: never offer it again."""
        self._refused = _digest(token)

    async def _read_file(self, path: Path) -> Secret:
        try:
            seen = await trio.to_thread.run_sync(_stat, path)
            if self._cached is not None and self._cached[0] == seen:
                return self._cached[1]
            data = await trio.to_thread.run_sync(_read_capped, path)
        except FileNotFoundError:
            raise CredentialError(
                f"{self.what} file {path} does not exist",
                hint=f"check {self.key}.file in the config (the platform may not have written it yet)",
            ) from None
        except OSError as exc:
            raise CredentialError(
                f"cannot read {self.what} file {path}: {exc.strerror or type(exc).__name__}",
                hint=f"check {self.key}.file in the config and the file's permissions",
            ) from None
        if len(data) > MAX_TOKEN:
            raise CredentialError(
                f"{self.what} file {path} is larger than {MAX_TOKEN // 1024} KiB",
                hint=f"check {self.key}.file in the config",
            )
        token = _as_token(data)
        if token is None:
            raise CredentialError(
                f"{self.what} file {path} holds no token (it is empty or not text)",
                hint=f"check {self.key}.file in the config",
            )
        self._cached = (seen, token)
        return token

    async def _run(self, argv: tuple[str, ...]) -> Secret:
        name = argv[0] if argv else "?"
        hint = f"run it yourself to see what it says, then fix {self.key}.command in the config"
        try:
            status, data = await _run_capped(argv)
        except FileNotFoundError:
            raise CredentialError(f"{self.what} command {name!r} was not found", hint=hint) from None
        except PermissionError:
            raise CredentialError(
                f"{self.what} command {name!r} cannot be run (permission denied)", hint=hint
            ) from None
        except OSError as exc:
            raise CredentialError(
                f"{self.what} command {name!r} cannot be run: {exc.strerror or type(exc).__name__}", hint=hint
            ) from None
        if status is None:
            raise CredentialError(
                f"{self.what} command {name!r} did not finish within {COMMAND_TIMEOUT:g} s; it was stopped",
                hint=hint,
            )
        # Too much output first: a command we stopped reading dies of SIGPIPE, which is not its fault.
        if len(data) > MAX_TOKEN:
            raise CredentialError(
                f"{self.what} command {name!r} printed more than {MAX_TOKEN // 1024} KiB", hint=hint
            )
        if status != 0:
            raise CredentialError(f"{self.what} command {name!r} failed (exit status {status})", hint=hint)
        token = _as_token(data)
        if token is None:
            raise CredentialError(f"{self.what} command {name!r} printed nothing", hint=hint)
        return token

    def _check_expiry(self, token: Secret, now: float) -> None:
        try:
            exp = oauth.unverified_claims(token.reveal()).get("exp")
        except ValueError:
            return  # not a JWT we can read: the authorization server judges it
        if not isinstance(exp, int | float) or isinstance(exp, bool) or not math.isfinite(exp):
            return
        if exp - EXPIRY_SKEW <= now:
            raise CredentialError(
                f"{self.where} expired at {_ctime(float(exp))}; it is not sent",
                hint="whatever writes it should have renewed it: check the token projection or helper",
            )


def _stat(path: Path) -> FileState:
    st = os.stat(path.expanduser())
    return FileState(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid)


def _read_capped(path: Path) -> bytes:
    with open(path, "rb") as file:
        return file.read(MAX_TOKEN + 1)


def _as_token(data: bytes) -> Secret | None:
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if not text or any(ch.isspace() for ch in text):
        return None
    return Secret(text)


def _ctime(at: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


async def _run_capped(argv: tuple[str, ...]) -> tuple[int | None, bytes]:
    """Run ``argv`` (no shell), reading at most MAX_TOKEN + 1 bytes of its output: (exit status, output),
    or (None, b"") when it did not finish within COMMAND_TIMEOUT (it is killed)."""
    process = await trio.lowlevel.open_process(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    data = bytearray()
    assert process.stdout is not None
    try:
        with trio.move_on_after(COMMAND_TIMEOUT) as scope:
            async with process.stdout:
                while len(data) <= MAX_TOKEN:
                    chunk = await process.stdout.receive_some(65536)
                    if not chunk:
                        break
                    data += chunk
            status = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    if scope.cancelled_caught:
        return None, b""
    return status, bytes(data)

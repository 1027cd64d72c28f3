"""The store's interface, its results and its errors.

Exception tree::

    StoreError                  anything the store reports; never carries a secret value
    ├── StoreReadError          a stored document cannot be used (corrupt, from a newer version, unreadable,
    │                           or its secrets live in a keyring this store does not use)
    ├── StoreWriteError         a save or delete did not reach the disk; the previous file is intact
    └── StoreUnavailable        the OS keyring errored or did not answer in time: try again later
        └── NoUsableKeyring     ``"store": "keyring"`` was asked for but keyring has no usable backend

``ValueError`` (not a StoreError) means the caller passed a server URL that is not absolute.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from brokerd.secret import Secret
from brokerd.store.records import ServerRecord

__all__ = [
    "LoadReport",
    "NoUsableKeyring",
    "Store",
    "StoreError",
    "StoreInfo",
    "StoreProblem",
    "StoreReadError",
    "StoreUnavailable",
    "StoreWriteError",
]


@dataclass(frozen=True)
class StoreProblem:
    """Something wrong with one stored server, found while loading.

    ``moved_to`` is set when a corrupt document was renamed aside. ``transient`` means the document is
    fine but its secrets could not be fetched now (the keyring is unavailable): load it again later
    rather than treating the server as logged out.
    """

    path: Path
    message: str
    server_url: str | None = None
    moved_to: Path | None = None
    transient: bool = False

    def __str__(self) -> str:
        return self.message


class StoreError(Exception):
    """Base of every error the store raises. Messages name files and backends, never secret values."""


class StoreReadError(StoreError):
    """A stored document exists but cannot be used; ``problem`` says which file and why.

    A corrupt or truncated document has already been moved aside (``problem.moved_to``) when this is raised,
    so loading the same server again returns None. Documents from a newer version, or whose secrets are
    in the OS keyring, are left where they are.
    """

    def __init__(self, problem: StoreProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class StoreWriteError(StoreError):
    """A save or delete failed (full disk, read-only file system, permissions); the old file is intact."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"could not write {path}: {reason}")
        self.path = path
        self.reason = reason


class StoreUnavailable(StoreError):
    """The keyring backend failed or did not answer within the timeout. Nothing was lost; retry later."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"keyring backend {backend}: {reason}")
        self.backend = backend
        self.reason = reason


class NoUsableKeyring(StoreUnavailable):
    """``"store": "keyring"`` was configured, but keyring resolves to no usable (recommended) backend."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(backend, reason)
        self.args = (
            f'"store": "keyring" is configured, but {reason}. Install an OS keyring backend (GNOME '
            "Keyring or KWallet with D-Bus, macOS Keychain, Windows Credential Locker) or set "
            '"store": "file"',
        )


@dataclass(frozen=True)
class StoreInfo:
    """Which backend is in use and why, for ``status``."""

    backend: Literal["file", "keyring"]
    reason: str
    data_dir: Path
    #: Dotted class name of the keyring backend, when ``backend == "keyring"``.
    keyring_backend: str | None = None

    def __str__(self) -> str:
        return f"{self.backend} ({self.reason})"


@dataclass
class LoadReport:
    """Every server that loaded, plus every problem found; one bad document never hides the others."""

    records: list[ServerRecord] = field(default_factory=list)
    problems: list[StoreProblem] = field(default_factory=list)


class Store(Protocol):
    """A credential store. Only the server's actor calls it for that server (DESIGN.md rule 2)."""

    async def load(self, server_url: str) -> ServerRecord | None:
        """The record of ``server_url`` (any spelling of it), or None if nothing is stored.

        Raises:
            StoreReadError: the document is unusable (a corrupt one has been moved aside).
            StoreUnavailable: the keyring did not answer.
            ValueError: ``server_url`` is not an absolute URL.
        """
        ...

    async def save(self, record: ServerRecord) -> None:
        """Persist ``record`` durably before returning (DESIGN.md rule 3).

        Raises:
            StoreWriteError: the file was not written; the previous one is intact.
            StoreUnavailable: the keyring did not take the secrets; the previous file is intact.
            ValueError: ``record.server_url`` is not an absolute URL.
        """
        ...

    async def delete(self, server_url: str) -> None:
        """Remove everything stored for ``server_url``, including corrupt copies moved aside.

        Deleting a server with nothing stored is not an error.

        Raises:
            StoreWriteError: a file could not be removed.
            StoreUnavailable: a keyring entry could not be removed; the document is kept so a retry
                finds the entries again.
            ValueError: ``server_url`` is not an absolute URL.
        """
        ...

    async def load_all(self) -> LoadReport:
        """Every stored server; unusable documents become problems, never exceptions.

        Raises:
            StoreReadError: the directory itself cannot be listed.
        """
        ...

    def describe(self) -> StoreInfo:
        """The backend in use and why it was chosen."""
        ...

    async def load_access_key(self, server_url: str) -> Secret | None:
        """The static access key stored for ``server_url``, if any.

        Raises:
            StoreReadError, StoreUnavailable, ValueError: as :meth:`load`.
        """
        ...

    async def save_access_key(self, server_url: str, key: Secret | None) -> None:
        """Store (or with None, remove) the static access key of ``server_url``, keeping the rest.

        An unusable existing document is replaced by one holding just the key.

        Raises:
            StoreWriteError, StoreUnavailable, ValueError: as :meth:`save`.
        """
        ...


class _StoreBase(abc.ABC):
    """What every backend shares: the access-key shortcuts, written in terms of load and save."""

    @abc.abstractmethod
    async def load(self, server_url: str) -> ServerRecord | None: ...

    @abc.abstractmethod
    async def save(self, record: ServerRecord) -> None: ...

    async def load_access_key(self, server_url: str) -> Secret | None:
        """See :meth:`Store.load_access_key`."""
        record = await self.load(server_url)
        return None if record is None else record.access_key

    async def save_access_key(self, server_url: str, key: Secret | None) -> None:
        """See :meth:`Store.save_access_key`."""
        try:
            record = await self.load(server_url)
        except StoreReadError:
            record = None  # reported by load_all; a fresh document replaces it
        if record is None:
            record = ServerRecord(server_url=server_url)
        record.access_key = key
        await self.save(record)

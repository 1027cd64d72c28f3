"""The keyring backend: secrets in the OS keyring, everything else in the file store.

Layout: every secret is one keyring entry under the service ``ncp-broker``, with the username
``<server_key>:<entry>``, where ``<entry>`` is one of

    access_key
    access_token
    refresh_token
    id_token
    dpop_key
    registration:<issuer digest>:client_secret
    registration:<issuer digest>:registration_access_token

(``<issuer digest>`` is :func:`~brokerd.store._naming.digest` of the issuer identifier). The server's JSON
document keeps the non-secret fields, with the secret fields null, and lists the entries it owns in
``keyring_entries`` so that load knows what to fetch and delete knows what to remove.

Every keyring call runs in a worker thread under ``trio.fail_after``, abandoned on timeout, so a hung
Secret Service turns into :class:`StoreUnavailable` for that call instead of stalling the daemon. Calls are
serialised through a limiter of one: an abandoned call still holds it until its thread returns, which keeps
writes in order and bounds a hung backend to one thread.

Order of a save: secrets into the keyring, then the document, then stale entries out. A crash between the
steps leaves a document whose listed entries all exist, holding values at least as new as the document.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

from brokerd.secret import Secret
from brokerd.store._base import (
    LoadReport,
    StoreInfo,
    StoreProblem,
    StoreReadError,
    StoreUnavailable,
    _StoreBase,
)
from brokerd.store._file import _Document, _Documents
from brokerd.store._naming import canonical_url, server_key
from brokerd.store.records import ServerRecord

__all__ = ["KEYRING_SERVICE", "KeyringStore", "backend_name"]

KEYRING_SERVICE = "ncp-broker"
_FIXED_ENTRIES = ("access_key", "access_token", "refresh_token", "id_token", "dpop_key")
_T = TypeVar("_T")


def backend_name(backend: KeyringBackend) -> str:
    """The dotted class name of a keyring backend, e.g. ``keyring.backends.SecretService.Keyring``."""
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def _delete_quietly(backend: KeyringBackend, service: str, username: str) -> None:
    with contextlib.suppress(PasswordDeleteError):  # already gone: that is what we wanted
        backend.delete_password(service, username)


class KeyringStore(_StoreBase):
    """Secrets in the OS keyring, metadata in ``data_dir``. See the module docstring."""

    def __init__(self, data_dir: Path, backend: KeyringBackend, *, reason: str, timeout: float = 5.0) -> None:
        self._documents = _Documents(data_dir)
        self._backend = backend
        self._name = backend_name(backend)
        self._reason = reason
        self._timeout = timeout
        # One keyring call at a time, in order. A call abandoned on timeout keeps its token until its thread
        # really returns, so a late write of an old refresh token can never land after a newer one, and a
        # hung backend holds at most one thread.
        self._limiter = trio.CapacityLimiter(1)

    async def _call(self, what: str, fn: Callable[..., _T], *args: object, hide: str | None = None) -> _T:
        """Run one keyring call off the event loop, within the timeout.

        Raises:
            StoreUnavailable: the backend raised, or did not answer within the timeout.
        """
        try:
            with trio.fail_after(self._timeout):
                return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True, limiter=self._limiter)
        except trio.TooSlowError:
            raise StoreUnavailable(self._name, f"{what} did not answer within {self._timeout:g} s") from None
        except Exception as exc:  # backends raise anything: D-Bus errors, RuntimeError, …
            detail = f"{type(exc).__name__}: {exc}"
            if hide and hide in detail:  # never echo a secret a backend put into its message
                raise StoreUnavailable(self._name, f"{what} failed ({type(exc).__name__})") from None
            raise StoreUnavailable(self._name, f"{what} failed ({detail})") from exc

    async def _get(self, key: str, entry: str) -> Secret | None:
        value = await self._call(
            f"reading {entry}", self._backend.get_password, KEYRING_SERVICE, f"{key}:{entry}"
        )
        return None if value is None else Secret(value)

    async def _fetch(self, doc: _Document) -> tuple[ServerRecord, list[str]]:
        """The record of ``doc`` with its keyring secrets filled in, and the entries that were missing."""
        key = server_key(doc.server_url)
        found: dict[str, Secret] = {}
        missing = []
        for entry in doc.keyring_entries:
            value = await self._get(key, entry)
            if value is None:
                missing.append(entry)
            else:
                found[entry] = value
        return doc.record(found), missing

    async def load(self, server_url: str) -> ServerRecord | None:
        """See :meth:`Store.load`. A keyring entry that has vanished loads as a missing secret."""
        url = canonical_url(server_url)
        doc = await trio.to_thread.run_sync(self._documents.read, url)
        if doc is None:
            return None
        record, _missing = await self._fetch(doc)
        return record

    async def save(self, record: ServerRecord) -> None:
        """See :meth:`Store.save`. Secrets stored earlier in a file move into the keyring here."""
        url = canonical_url(record.server_url)
        key = server_key(url)
        try:
            old = await trio.to_thread.run_sync(self._documents.read, url)
        except StoreReadError:
            old = None  # unreadable: it is about to be replaced anyway
        doc, secrets = _Document.of(record, keep_secrets=False)
        for entry, value in secrets.items():
            await self._call(
                f"storing {entry}",
                self._backend.set_password,
                KEYRING_SERVICE,
                f"{key}:{entry}",
                value.reveal(),
                hide=value.reveal(),
            )
        await trio.to_thread.run_sync(self._documents.write, doc)
        for entry in sorted(set(old.keyring_entries if old else ()) - secrets.keys()):
            await self._delete_entry(key, entry)

    async def _delete_entry(self, key: str, entry: str) -> None:
        await self._call(
            f"deleting {entry}", _delete_quietly, self._backend, KEYRING_SERVICE, f"{key}:{entry}"
        )

    async def delete(self, server_url: str) -> None:
        """See :meth:`Store.delete`. Keyring entries go first, so a failure leaves the list to retry with."""
        url = canonical_url(server_url)
        key = server_key(url)
        try:
            old = await trio.to_thread.run_sync(
                functools.partial(self._documents.read, url, move_aside=False)
            )
        except StoreReadError:
            old = None
        entries = set(_FIXED_ENTRIES) if old is None else set(old.keyring_entries)
        for entry in sorted(entries):
            await self._delete_entry(key, entry)
        await trio.to_thread.run_sync(self._documents.remove, url)

    async def load_all(self) -> LoadReport:
        """See :meth:`Store.load_all`.

        Once the keyring fails, the remaining servers that need it are reported as transient problems
        without asking it again, so a hung backend costs one timeout, not one per server.
        """
        docs, problems = await trio.to_thread.run_sync(self._documents.scan)
        report = LoadReport(problems=problems)
        down: StoreUnavailable | None = None
        for doc in docs:
            path = self._documents.path(server_key(doc.server_url))
            if doc.keyring_entries and down is not None:
                report.problems.append(StoreProblem(path, str(down), doc.server_url, transient=True))
                continue
            try:
                record, missing = await self._fetch(doc)
            except StoreUnavailable as exc:
                down = exc
                report.problems.append(StoreProblem(path, str(exc), doc.server_url, transient=True))
                continue
            if missing:
                message = (
                    f"{doc.server_url}: keyring entries {', '.join(missing)} are missing from {self._name}; "
                    "those secrets are gone (a login may be needed)"
                )
                report.problems.append(StoreProblem(path, message, doc.server_url))
            report.records.append(record)
        return report

    def describe(self) -> StoreInfo:
        """See :meth:`Store.describe`."""
        return StoreInfo("keyring", self._reason, self._documents.directory, keyring_backend=self._name)

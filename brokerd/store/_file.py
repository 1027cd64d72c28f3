"""The file backend: one JSON document per server, mode 0600, in a 0700 directory.

``<data_dir>/<server_key>.json`` holds a :class:`ServerRecord` plus ``version`` and ``keyring_entries``
(the secrets of that document that live in the OS keyring instead; empty for the file backend). Writes go
through :func:`brokerd.fsutil.atomic_write`. A document that does not decode is renamed to
``<name>.corrupt-<UTC timestamp>`` and reported; it never stops the other servers from loading.

All file I/O runs in a worker thread: fsync can block for a long time on a busy disk, and the event loop
serves every other server meanwhile. Those threads are not abandoned on cancellation, so a write that has
started always finishes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import trio

from brokerd.fsutil import atomic_write, ensure_private_dir, fsync_dir
from brokerd.oauth import Registration, TokenSet
from brokerd.secret import Secret, dec_hook, enc_hook
from brokerd.store._base import (
    LoadReport,
    StoreInfo,
    StoreProblem,
    StoreReadError,
    StoreWriteError,
    _StoreBase,
)
from brokerd.store._naming import canonical_url, digest, server_key
from brokerd.store.records import DOCUMENT_VERSION, RefreshSent, ServerRecord

__all__ = ["FileStore"]

_DOC_NAME = re.compile(r"^[0-9a-f]{32}\.json$")
_TOKEN_SECRETS = ("access_token", "refresh_token", "id_token")
_REGISTRATION_SECRETS = ("client_secret", "registration_access_token")


def registration_entry(issuer: str, name: str) -> str:
    """The keyring entry name of a registration's secret ``name`` (see ``_keyring.py``)."""
    return f"registration:{digest(issuer)}:{name}"


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    # A null stands for "not given": older documents wrote nulls where the record type has a default, and
    # the keyring backend leaves its secrets' places empty.
    return {k: v for k, v in fields.items() if v is not None}


class _Document(msgspec.Struct, kw_only=True):
    """The stored form of a :class:`ServerRecord`: its tokens and registrations as the JSON objects the
    core's types encode to (so that a backend can keep their secrets elsewhere, and older documents with
    fields nobody reads still load), plus bookkeeping."""

    server_url: str
    version: int = DOCUMENT_VERSION
    #: Names of the secrets kept in the OS keyring for this server (see ``_keyring.py``).
    keyring_entries: list[str] = msgspec.field(default_factory=list)
    access_key: Secret | None = None
    tokens: dict[str, Any] | None = None
    registrations: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    refresh_sent: RefreshSent | None = None
    dpop_key: Secret | None = None

    def record(self, secrets: Mapping[str, Secret] | None = None) -> ServerRecord:
        """The record, with ``secrets`` (by keyring entry name) put back in their places. A token set
        whose access token is missing (its keyring entry is gone) loads as no tokens.

        Raises:
            msgspec.ValidationError: a field has the wrong type, or a required one is missing.
        """
        found = secrets or {}
        tokens = None
        if self.tokens is not None:
            fields = _present(self.tokens)
            fields.update({n: found[n].reveal() for n in _TOKEN_SECRETS if n in found})
            if fields.get("access_token"):
                tokens = msgspec.convert(fields, TokenSet, dec_hook=dec_hook)
        registrations = {}
        for issuer, stored in self.registrations.items():
            fields = {**_present(stored), "issuer": issuer}
            for name in _REGISTRATION_SECRETS:
                if (entry := registration_entry(issuer, name)) in found:
                    fields[name] = found[entry].reveal()
            registrations[issuer] = msgspec.convert(fields, Registration, dec_hook=dec_hook)
        return ServerRecord(
            server_url=self.server_url,
            access_key=found.get("access_key", self.access_key),
            tokens=tokens,
            registrations=registrations,
            refresh_sent=self.refresh_sent,
            dpop_key=found.get("dpop_key", self.dpop_key),
        )

    @classmethod
    def of(cls, record: ServerRecord, *, keep_secrets: bool = True) -> tuple[_Document, dict[str, Secret]]:
        """The document of ``record``; with ``keep_secrets=False`` its secrets are taken out and returned
        by keyring entry name (and listed in ``keyring_entries``)."""
        moved: dict[str, Secret] = {}

        def take(fields: dict[str, Any], names: Sequence[str], entry: Callable[[str], str]) -> dict[str, Any]:
            for name in names:
                value = fields.get(name)
                if not keep_secrets and value is not None:
                    moved[entry(name)] = Secret(value)
                    fields[name] = None
            return fields

        tokens = None
        if record.tokens is not None:
            tokens = take(msgspec.to_builtins(record.tokens, enc_hook=enc_hook), _TOKEN_SECRETS, str)
        registrations = {
            issuer: take(
                msgspec.to_builtins(reg, enc_hook=enc_hook),
                _REGISTRATION_SECRETS,
                functools.partial(registration_entry, issuer),
            )
            for issuer, reg in record.registrations.items()
        }
        access_key, dpop_key = record.access_key, record.dpop_key
        if not keep_secrets and access_key is not None:
            moved["access_key"], access_key = access_key, None
        if not keep_secrets and dpop_key is not None:
            moved["dpop_key"], dpop_key = dpop_key, None
        doc = cls(
            server_url=canonical_url(record.server_url),
            keyring_entries=sorted(moved),
            access_key=access_key,
            tokens=tokens,
            registrations=registrations,
            refresh_sent=record.refresh_sent,
            dpop_key=dpop_key,
        )
        return doc, moved


class _Version(msgspec.Struct):
    """Just enough of a document to decide whether this code may read the rest."""

    version: int = DOCUMENT_VERSION


_decode_version = msgspec.json.Decoder(_Version).decode
_decode_document = msgspec.json.Decoder(_Document, dec_hook=dec_hook).decode
_encode = msgspec.json.Encoder(enc_hook=enc_hook).encode


class _Documents:
    """Synchronous document I/O; every method is meant to run in a worker thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def read(self, url: str, *, move_aside: bool = True) -> _Document | None:
        """The document of canonical ``url``, or None.

        Raises:
            StoreReadError: unreadable, corrupt (moved aside if ``move_aside``), or from a newer version.
        """
        path = self.path(server_key(url))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreReadError(StoreProblem(path, f"cannot read {path}: {exc.strerror}", url)) from None
        return self._parse(path, data, url, move_aside=move_aside)

    def _parse(self, path: Path, data: bytes, url: str | None, *, move_aside: bool) -> _Document:
        try:
            version = _decode_version(data).version
        except msgspec.DecodeError as exc:
            raise self._corrupt(path, url, f"not a JSON object ({exc})", move_aside=move_aside) from None
        if version > DOCUMENT_VERSION:
            message = (
                f"{path} was written by a newer ncp-broker (format version {version}, this one reads up to "
                f"{DOCUMENT_VERSION}); left untouched"
            )
            raise StoreReadError(StoreProblem(path, message, url))
        try:
            doc = _decode_document(data)
            stored_url = canonical_url(doc.server_url)
            doc.record({entry: Secret("-") for entry in doc.keyring_entries})  # the shape, checked now
        except (msgspec.DecodeError, ValueError) as exc:
            raise self._corrupt(
                path, url, f"not a valid server record ({exc})", move_aside=move_aside
            ) from None
        if path.name != f"{server_key(stored_url)}.json":
            reason = f"holds {stored_url!r}, which is not the server this file name stands for"
            raise self._corrupt(path, url, reason, move_aside=move_aside)
        doc.server_url = stored_url
        return doc

    def _corrupt(self, path: Path, url: str | None, reason: str, *, move_aside: bool) -> StoreReadError:
        moved_to = None
        message = f"{path}: {reason}"
        if move_aside:
            try:
                moved_to = self._move_aside(path)
            except OSError as exc:
                message += f"; could not move it aside: {exc.strerror}"
            else:
                message += f"; moved aside to {moved_to.name}"
        return StoreReadError(StoreProblem(path, message, url, moved_to=moved_to))

    @staticmethod
    def _move_aside(path: Path) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 0
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        path.rename(target)
        fsync_dir(path.parent)
        return target

    def write(self, doc: _Document) -> None:
        """Replace the document of ``doc.server_url`` durably.

        Raises:
            StoreWriteError: nothing was replaced.
        """
        path = self.path(server_key(doc.server_url))
        try:
            ensure_private_dir(self.directory)
            atomic_write(path, msgspec.json.format(_encode(doc), indent=2) + b"\n")
        except OSError as exc:
            raise StoreWriteError(path, _reason(exc)) from exc

    def remove(self, url: str) -> None:
        """Delete the document of ``url`` and any corrupt copies of it moved aside.

        Raises:
            StoreWriteError: a file could not be removed.
        """
        path = self.path(server_key(url))
        try:
            victims = [path, *self.directory.glob(f"{path.name}.corrupt-*")]
            for victim in victims:
                with contextlib.suppress(FileNotFoundError):
                    victim.unlink()
            fsync_dir(self.directory)
        except FileNotFoundError:
            pass  # no directory: nothing was stored
        except OSError as exc:
            raise StoreWriteError(path, _reason(exc)) from exc

    def scan(self) -> tuple[list[_Document], list[StoreProblem]]:
        """Every document in the directory; corrupt ones are moved aside and reported.

        Raises:
            StoreReadError: the directory cannot be listed.
        """
        try:
            names = sorted(name for name in os.listdir(self.directory) if _DOC_NAME.match(name))
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            problem = StoreProblem(self.directory, f"cannot list {self.directory}: {exc.strerror}")
            raise StoreReadError(problem) from None
        docs: list[_Document] = []
        problems: list[StoreProblem] = []
        for name in names:
            path = self.directory / name
            try:
                docs.append(self._parse(path, path.read_bytes(), None, move_aside=True))
            except FileNotFoundError:
                continue  # deleted since the listing
            except OSError as exc:
                problems.append(StoreProblem(path, f"cannot read {path}: {exc.strerror}"))
            except StoreReadError as exc:
                problems.append(exc.problem)
        return docs, problems


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _in_keyring_problem(documents: _Documents, doc: _Document) -> StoreProblem:
    path = documents.path(server_key(doc.server_url))
    message = (
        f"{path}: the secrets of {doc.server_url} are in the OS keyring, and this store does not use it; "
        'set "store": "keyring" (or "auto" with a working keyring) to use them, or log in again'
    )
    return StoreProblem(path, message, doc.server_url)


class FileStore(_StoreBase):
    """Secrets and metadata together in one 0600 JSON file per server. See the module docstring."""

    def __init__(self, data_dir: Path, *, reason: str = 'configured: "store": "file"') -> None:
        self._documents = _Documents(data_dir)
        self._reason = reason

    async def load(self, server_url: str) -> ServerRecord | None:
        """See :meth:`Store.load`; a document whose secrets are in the keyring raises StoreReadError."""
        url = canonical_url(server_url)
        doc = await trio.to_thread.run_sync(self._documents.read, url)
        if doc is None:
            return None
        if doc.keyring_entries:
            raise StoreReadError(_in_keyring_problem(self._documents, doc))
        return doc.record()

    async def save(self, record: ServerRecord) -> None:
        """See :meth:`Store.save`."""
        doc, _ = _Document.of(record)
        await trio.to_thread.run_sync(self._documents.write, doc)

    async def delete(self, server_url: str) -> None:
        """See :meth:`Store.delete`."""
        await trio.to_thread.run_sync(self._documents.remove, canonical_url(server_url))

    async def load_all(self) -> LoadReport:
        """See :meth:`Store.load_all`."""
        docs, problems = await trio.to_thread.run_sync(self._documents.scan)
        report = LoadReport(problems=problems)
        for doc in docs:
            if doc.keyring_entries:
                report.problems.append(_in_keyring_problem(self._documents, doc))
            else:
                report.records.append(doc.record())
        return report

    def describe(self) -> StoreInfo:
        """See :meth:`Store.describe`."""
        return StoreInfo("file", self._reason, self._documents.directory)

"""The credential store: the same behaviour over the file and keyring backends, then what is backend-specific.

Keyring backends used here take a constructor argument on purpose: keyring instantiates every registered
backend class it can build without arguments when it detects the real backend, and these must never be
picked by the real ``auto`` test.
"""

from __future__ import annotations

import base64
import configparser
import errno
import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import keyring
import msgspec
import pytest
import trio
from keyring.backend import KeyringBackend
from keyring.backends import chainer, fail
from keyring.errors import PasswordDeleteError
from keyrings.alt.file import PlaintextKeyring

from brokerd.fsutil import UnsafePathError
from brokerd.oauth import Registration, TokenSet
from brokerd.secret import Secret
from brokerd.store import (
    KEYRING_SERVICE,
    FileStore,
    NoUsableKeyring,
    RefreshSent,
    ServerRecord,
    Store,
    StoreReadError,
    StoreUnavailable,
    StoreWriteError,
    canonical_url,
    open_store,
    server_key,
)

URL_A = "https://mcp.example.com/api"
URL_B = "https://other.example.net/mcp"
ISSUER = "https://auth.example.com"
SECRETS = (
    "sk-access-key-0001",
    "at-access-token-0002",
    "rt-refresh-token-0003",
    "cs-client-secret-0004",
    "rat-registration-token-0005",
    "idt-id-token-0006",
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAdpop-key-0007\n-----END PRIVATE KEY-----\n",
)


def full_record(url: str = URL_A, tag: str = "") -> ServerRecord:
    """A record with every kind of secret filled in (``tag`` makes the values distinct per call)."""
    ak, at, rt, cs, rat, idt, dk = (s + tag for s in SECRETS)
    return ServerRecord(
        server_url=url,
        access_key=Secret(ak),
        tokens=TokenSet(
            access_token=Secret(at),
            refresh_token=Secret(rt),
            expires_at=1_900_000_000.0,
            scopes=("read", "write"),
            token_endpoint=f"{ISSUER}/token",
            issuer=ISSUER,
            client_id="client-123",
            resource=url,
            obtained_at=1_899_996_400.0,
            id_token=Secret(idt),
        ),
        registrations={
            ISSUER: Registration(
                issuer=ISSUER,
                client_id="client-123",
                client_secret=Secret(cs),
                token_endpoint_auth_method="client_secret_basic",
                redirect_uris=("http://127.0.0.1:9876/callback",),
                registered_at=1_800_000_000.0,
                registration_client_uri=f"{ISSUER}/register/client-123",
                registration_access_token=Secret(rat),
                client_secret_expires_at=0.0,
            )
        },
        refresh_sent=RefreshSent(token_digest="0123456789abcdef", sent_at=1_899_999_000.0),
        dpop_key=Secret(dk),
    )


def plain_record(url: str = URL_B) -> ServerRecord:
    """A record without any secret: nothing of it goes to the keyring."""
    return ServerRecord(server_url=url)


class MemoryKeyring(KeyringBackend):
    """A recommended keyring that keeps entries in a dict."""

    priority = 5

    def __init__(self, entries: dict[tuple[str, str], str]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # keyring's base __init__ is unannotated
        self.entries = entries

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.entries.pop((service, username), None) is None:
            raise PasswordDeleteError("not found")


class HangingKeyring(MemoryKeyring):
    """A keyring whose reads block, like a Secret Service that stopped answering, once ``hang`` is set."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__({})
        self.release = release
        self.hang = False

    def get_password(self, service: str, username: str) -> str | None:
        if self.hang:
            self.release.wait()
        return super().get_password(service, username)


class LeakyKeyring(MemoryKeyring):
    """A keyring that fails every write with an error message quoting the password."""

    def set_password(self, service: str, username: str, password: str) -> None:
        raise RuntimeError(f"cannot store {password!r}")


class RecommendedPlaintext(PlaintextKeyring):  # type: ignore[misc]
    """keyrings.alt's plaintext file keyring, in a test directory, promoted so the store accepts it."""

    priority = 5

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.file_path = str(path)


class SlowToDetectKeyring(MemoryKeyring):
    """A keyring whose priority probe blocks, like SecretService's D-Bus check on a hung bus."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__({})
        self.release = release

    @property
    def priority(self) -> float:  # type: ignore[override]
        self.release.wait()
        return 5


@dataclass
class Backend:
    """One way to open the store under test."""

    name: str
    keyring: KeyringBackend | None

    def open(self, data_dir: Path) -> Store:
        if self.keyring is None:
            return open_store("file", data_dir)
        return open_store("keyring", data_dir, keyring_backend=self.keyring)

    def keyring_values(self) -> list[str]:
        """Every value the keyring holds for the broker (empty for the file backend)."""
        if isinstance(self.keyring, MemoryKeyring):
            return list(self.keyring.entries.values())
        if isinstance(self.keyring, RecommendedPlaintext):
            config = configparser.RawConfigParser()
            config.read(self.keyring.file_path, encoding="utf-8")
            return [
                base64.b64decode(value).decode()
                for section in config.sections()
                for _, value in config.items(section)
            ]
        return []


@pytest.fixture(params=["file", "memory-keyring", "plaintext-keyring"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each backend in turn."""
    if request.param == "file":
        return Backend("file", None)
    if request.param == "memory-keyring":
        return Backend("keyring", MemoryKeyring({}))
    return Backend("keyring", RecommendedPlaintext(tmp_path / "alt" / "keyring_pass.cfg"))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Where the store under test keeps its documents."""
    return tmp_path / "data"


@pytest.fixture
def store(backend: Backend, data_dir: Path) -> Store:
    """The store under test, opened on an empty directory."""
    return backend.open(data_dir)


def doc_path(data_dir: Path, url: str) -> Path:
    """The document of ``url``."""
    return data_dir / f"{server_key(url)}.json"


# --- the shared suite -----------------------------------------------------------------------------------


async def test_round_trip(store: Store) -> None:
    """A saved record loads back equal, secrets included."""
    record = full_record()
    await store.save(record)
    assert await store.load(URL_A) == record


async def test_any_spelling_finds_the_record(store: Store) -> None:
    """The record is stored under the canonical URL and found by any spelling of it."""
    await store.save(full_record("HTTPS://MCP.Example.COM:443/api/#frag"))
    loaded = await store.load("https://mcp.example.com/api")
    assert loaded is not None
    assert loaded.server_url == URL_A


async def test_missing_server_loads_as_none(store: Store) -> None:
    """Loading a server that was never saved returns None."""
    assert await store.load(URL_A) is None


async def test_save_replaces_and_drops_removed_secrets(store: Store, backend: Backend) -> None:
    """A second save replaces the first; a secret set to None is gone from files and keyring."""
    await store.save(full_record(tag="-old"))
    newer = full_record(tag="-new")
    assert newer.tokens is not None
    newer.tokens = msgspec.structs.replace(newer.tokens, refresh_token=None)
    newer.access_key = None
    await store.save(newer)
    assert await store.load(URL_A) == newer
    leftovers = [v for v in backend.keyring_values() if "-old" in v or "refresh" in v or "access-key" in v]
    assert leftovers == []


async def test_delete_removes_everything(store: Store, backend: Backend, data_dir: Path) -> None:
    """Delete removes the document and every keyring entry; deleting again is fine."""
    await store.save(full_record())
    await store.save(plain_record())
    await store.delete(URL_A)
    await store.delete(URL_A)
    assert await store.load(URL_A) is None
    assert not doc_path(data_dir, URL_A).exists()
    assert not any(secret in value for value in backend.keyring_values() for secret in SECRETS)
    assert await store.load(URL_B) == plain_record()


async def test_load_all_returns_every_server(store: Store) -> None:
    """load_all returns each stored server and no problems."""
    await store.save(full_record())
    await store.save(plain_record())
    report = await store.load_all()
    assert sorted(report.records, key=lambda r: r.server_url) == [full_record(), plain_record()]
    assert report.problems == []


async def test_load_all_on_missing_directory_is_empty(backend: Backend, data_dir: Path) -> None:
    """A data directory removed after opening reads as an empty store, not an error."""
    store = backend.open(data_dir)
    await trio.Path(data_dir).rmdir()
    report = await store.load_all()
    assert (report.records, report.problems) == ([], [])


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: b"\x00\xff garbage", id="garbage"),
        pytest.param(lambda data: b'{"server_url": 42}', id="wrong-type"),
        pytest.param(lambda data: b"[1, 2, 3]", id="not-an-object"),
    ],
)
async def test_corrupt_document_is_moved_aside_and_reported(
    store: Store, data_dir: Path, damage: Callable[[bytes], bytes]
) -> None:
    """A damaged document is named in a problem, moved aside, and the other servers still load."""
    await store.save(full_record())
    await store.save(plain_record())
    path = doc_path(data_dir, URL_A)
    path.write_bytes(damage(path.read_bytes()))
    report = await store.load_all()
    assert report.records == [plain_record()]
    [problem] = report.problems
    assert problem.path == path
    assert path.name in problem.message
    assert problem.moved_to is not None
    assert problem.moved_to.name.startswith(f"{path.name}.corrupt-")
    assert problem.moved_to.exists()
    assert not path.exists()
    assert await store.load(URL_A) is None


async def test_load_of_corrupt_document_raises_and_moves_it(store: Store, data_dir: Path) -> None:
    """load raises StoreReadError naming the file, after moving it aside; the next load finds nothing."""
    await store.save(full_record())
    path = doc_path(data_dir, URL_A)
    path.write_bytes(b"{")
    with pytest.raises(StoreReadError) as caught:
        await store.load(URL_A)
    assert str(path) in str(caught.value)
    assert caught.value.problem.moved_to is not None
    assert await store.load(URL_A) is None


async def test_document_of_another_server_is_rejected(store: Store, data_dir: Path) -> None:
    """A document whose server does not match its file name is reported, not served for the wrong server."""
    await store.save(plain_record(URL_B))
    doc_path(data_dir, URL_B).rename(doc_path(data_dir, URL_A))
    with pytest.raises(StoreReadError, match="not the server"):
        await store.load(URL_A)


async def test_delete_removes_corrupt_copies(store: Store, data_dir: Path) -> None:
    """Delete also removes copies of the server's document that were moved aside as corrupt."""
    await store.save(full_record())
    doc_path(data_dir, URL_A).write_bytes(b"{")
    with pytest.raises(StoreReadError):
        await store.load(URL_A)
    await store.delete(URL_A)
    assert list(await trio.Path(data_dir).iterdir()) == []


async def test_newer_document_version_is_left_alone(store: Store, data_dir: Path) -> None:
    """A document from a newer format version is reported and left in place, not moved aside."""
    path = doc_path(data_dir, URL_A)
    path.write_bytes(msgspec.json.encode({"version": 99, "server_url": URL_A, "shape": "new"}))
    with pytest.raises(StoreReadError, match="newer"):
        await store.load(URL_A)
    assert path.exists()


async def test_unknown_fields_are_tolerated(store: Store, data_dir: Path) -> None:
    """A document with fields this version does not know still loads."""
    await store.save(plain_record(URL_A))
    path = doc_path(data_dir, URL_A)
    doc = msgspec.json.decode(path.read_bytes())
    doc["added_in_a_later_release"] = {"x": 1}
    path.write_bytes(msgspec.json.encode(doc))
    assert await store.load(URL_A) == plain_record(URL_A)


async def test_failed_write_keeps_old_document(
    store: Store, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails at the rename raises StoreWriteError without secrets and keeps the old file."""
    await store.save(full_record(tag="-old"))
    path = doc_path(data_dir, URL_A)
    before = path.read_bytes()

    def no_space(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(StoreWriteError) as caught:
        await store.save(full_record(tag="-new"))
    monkeypatch.undo()
    message = str(caught.value)
    assert path.name in message
    assert os.strerror(errno.ENOSPC) in message  # the injected error, passed on
    assert not any(secret in message for secret in SECRETS)
    assert path.read_bytes() == before
    leftovers = await trio.Path(data_dir).iterdir()
    assert sorted(p.name for p in leftovers) == [path.name]  # no temporary file left behind


async def test_modes_are_private_whatever_the_umask(backend: Backend, tmp_path: Path) -> None:
    """With umask 0 the data directory is 0700 and every document 0600."""
    data_dir = tmp_path / "loose"
    old = os.umask(0)
    try:
        store = backend.open(data_dir)
        await store.save(full_record())
        await store.save(plain_record())
    finally:
        os.umask(old)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data_dir.iterdir()}
    assert len(modes) == 2
    assert set(modes.values()) == {0o600}


def test_existing_loose_directory_is_refused(backend: Backend, tmp_path: Path) -> None:
    """An existing data directory open to others is refused with the chmod to run, and left as it is."""
    data_dir = tmp_path / "loose"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    with pytest.raises(UnsafePathError, match="chmod 700"):
        backend.open(data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o755


async def test_access_key_shortcuts_keep_the_rest(store: Store) -> None:
    """save_access_key sets or clears only the access key; load_access_key reads it back."""
    assert await store.load_access_key(URL_A) is None
    await store.save_access_key(URL_B, Secret("key-1"))
    assert await store.load_access_key(URL_B) == Secret("key-1")
    await store.save(full_record())
    await store.save_access_key(URL_A, Secret("key-2"))
    expected = full_record()
    expected.access_key = Secret("key-2")
    assert await store.load(URL_A) == expected
    await store.save_access_key(URL_A, None)
    assert await store.load_access_key(URL_A) is None


# --- secrets hygiene ------------------------------------------------------------------------------------


def test_record_repr_and_str_hide_secrets() -> None:
    """repr and str of a record, its tokens and its registrations never show a secret value."""
    record = full_record()
    assert record.tokens is not None
    shown = [repr(record), str(record), repr(record.tokens), str(record.registrations), f"{record}"]
    assert not any(secret in text for text in shown for secret in SECRETS)
    assert "<redacted>" in repr(record)


@pytest.mark.parametrize("backend", ["memory-keyring", "plaintext-keyring"], indirect=True)
async def test_keyring_backend_keeps_secrets_out_of_files(
    store: Store, backend: Backend, data_dir: Path
) -> None:
    """With a keyring, the documents hold no secret value and list the entries kept in the keyring."""
    await store.save(full_record())
    text = doc_path(data_dir, URL_A).read_text()
    assert not any(secret in text for secret in SECRETS)
    assert sorted(msgspec.json.decode(text)["keyring_entries"]) == sorted(
        [
            "access_key",
            "access_token",
            "dpop_key",
            "id_token",
            "refresh_token",
            f"registration:{hashlib.sha256(ISSUER.encode()).hexdigest()[:32]}:client_secret",
            f"registration:{hashlib.sha256(ISSUER.encode()).hexdigest()[:32]}:registration_access_token",
        ]
    )
    held = " ".join(backend.keyring_values())
    assert all(secret in held for secret in SECRETS)


async def test_keyring_layout(data_dir: Path) -> None:
    """Keyring entries use service ncp-broker and username <server key>:<entry>."""
    entries: dict[tuple[str, str], str] = {}
    store = open_store("keyring", data_dir, keyring_backend=MemoryKeyring(entries))
    await store.save(full_record())
    key = server_key(URL_A)
    assert entries[(KEYRING_SERVICE, f"{key}:refresh_token")] == SECRETS[2]
    assert entries[(KEYRING_SERVICE, f"{key}:access_key")] == SECRETS[0]
    assert entries[(KEYRING_SERVICE, f"{key}:dpop_key")] == SECRETS[6]  # the DPoP key, out of the file too


async def test_keyring_error_never_echoes_the_secret(data_dir: Path) -> None:
    """A backend error quoting the password becomes StoreUnavailable naming the backend, without the value."""
    store = open_store("keyring", data_dir, keyring_backend=LeakyKeyring({}))
    with pytest.raises(StoreUnavailable) as caught:
        await store.save(full_record())
    assert "LeakyKeyring" in str(caught.value)
    assert caught.value.__cause__ is None
    assert not any(secret in str(caught.value) for secret in SECRETS)
    assert not doc_path(data_dir, URL_A).exists()


# --- a hung keyring -------------------------------------------------------------------------------------


async def test_hung_keyring_times_out_without_stalling_others(data_dir: Path) -> None:
    """A keyring read that never returns raises StoreUnavailable, while another server's calls complete."""
    release = threading.Event()
    kr = HangingKeyring(release)
    store = open_store("keyring", data_dir, keyring_backend=kr, keyring_timeout=0.2)
    await store.save(full_record())
    kr.hang = True
    outcomes: dict[str, object] = {}

    async def load_hung() -> None:
        try:
            await store.load(URL_A)
        except StoreUnavailable as exc:
            outcomes["hung"] = exc

    async def use_other() -> None:
        await store.save(plain_record())
        outcomes["other"] = await store.load(URL_B)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load_hung)
            nursery.start_soon(use_other)
    finally:
        release.set()
    assert outcomes["other"] == plain_record()
    assert isinstance(outcomes["hung"], StoreUnavailable)
    assert "HangingKeyring" in str(outcomes["hung"])
    assert "did not answer" in str(outcomes["hung"])


async def test_load_all_with_hung_keyring_reports_transient_problem(data_dir: Path) -> None:
    """load_all returns servers that need no keyring and reports the others as transient."""
    release = threading.Event()
    kr = HangingKeyring(release)
    store = open_store("keyring", data_dir, keyring_backend=kr, keyring_timeout=0.2)
    await store.save(full_record(URL_A))
    await store.save(full_record("https://third.example.org/"))
    await store.save(plain_record())
    kr.hang = True
    try:
        report = await store.load_all()
    finally:
        release.set()
    assert report.records == [plain_record()]
    assert len(report.problems) == 2
    assert all(p.transient for p in report.problems)
    assert {p.server_url for p in report.problems} == {URL_A, "https://third.example.org/"}


async def test_vanished_keyring_entry_loads_as_missing_secret(data_dir: Path) -> None:
    """A keyring entry deleted behind the broker's back loads as None and load_all says so."""
    entries: dict[tuple[str, str], str] = {}
    store = open_store("keyring", data_dir, keyring_backend=MemoryKeyring(entries))
    await store.save(full_record())
    del entries[(KEYRING_SERVICE, f"{server_key(URL_A)}:refresh_token")]
    loaded = await store.load(URL_A)
    assert loaded is not None
    assert loaded.tokens is not None
    assert loaded.tokens.refresh_token is None
    assert loaded.tokens.access_token == Secret(SECRETS[1])
    [problem] = (await store.load_all()).problems
    assert "refresh_token" in problem.message
    assert not problem.transient


# --- switching backends ---------------------------------------------------------------------------------


async def test_file_secrets_move_into_keyring_on_save(data_dir: Path) -> None:
    """A keyring store reads secrets a file store wrote, and its next save moves them into the keyring."""
    await open_store("file", data_dir).save(full_record())
    store = open_store("keyring", data_dir, keyring_backend=MemoryKeyring({}))
    record = await store.load(URL_A)
    assert record == full_record()
    await store.save(record)
    text = doc_path(data_dir, URL_A).read_text()
    assert not any(secret in text for secret in SECRETS)
    assert await store.load(URL_A) == full_record()


async def test_file_store_reports_secrets_kept_in_keyring(data_dir: Path) -> None:
    """A file store meeting a document whose secrets are in the keyring says so instead of loading it."""
    store = open_store("keyring", data_dir, keyring_backend=MemoryKeyring({}))
    await store.save(full_record())
    await store.save(plain_record())
    files = open_store("file", data_dir)
    with pytest.raises(StoreReadError, match="keyring"):
        await files.load(URL_A)
    report = await files.load_all()
    assert report.records == [plain_record()]
    assert [p.server_url for p in report.problems] == [URL_A]
    assert doc_path(data_dir, URL_A).exists()


# --- choosing a backend ---------------------------------------------------------------------------------


def test_auto_on_this_headless_machine_is_file(data_dir: Path) -> None:
    """auto with keyring's real choice on this machine (no OS keyring) picks the file store and says why."""
    store = open_store("auto", data_dir)
    info = store.describe()
    assert isinstance(store, FileStore)
    assert info.backend == "file"
    assert info.reason.startswith("auto: keyring has no usable backend: ")
    real = type(keyring.get_keyring())
    assert f"{real.__module__}.{real.__qualname__}" in info.reason
    assert str(info).startswith("file (auto: ")


@pytest.mark.parametrize(
    ("make", "shown"),
    [
        pytest.param(fail.Keyring, "keyring.backends.fail.Keyring", id="fail"),
        pytest.param(chainer.ChainerBackend, "nothing recommended to chain", id="empty-chainer"),
        pytest.param(
            PlaintextKeyring, "keyrings.alt.file.PlaintextKeyring is not recommended", id="plaintext"
        ),
    ],
)
def test_auto_falls_back_to_file(data_dir: Path, make: Callable[[], KeyringBackend], shown: str) -> None:
    """auto with an unusable backend uses the file store and names the backend in its reason."""
    store = open_store("auto", data_dir, keyring_backend=make())
    assert store.describe().backend == "file"
    assert shown in store.describe().reason


def test_auto_uses_a_recommended_keyring(data_dir: Path) -> None:
    """auto with a recommended backend uses the keyring and names it."""
    store = open_store("auto", data_dir, keyring_backend=MemoryKeyring({}))
    info = store.describe()
    assert info.backend == "keyring"
    assert info.keyring_backend is not None
    assert info.keyring_backend.endswith("MemoryKeyring")
    assert "priority 5" in info.reason


def test_keyring_without_usable_backend_says_what_to_do(data_dir: Path) -> None:
    """Explicit keyring with no usable backend raises NoUsableKeyring pointing at "store": "file"."""
    with pytest.raises(NoUsableKeyring, match='set "store": "file"') as caught:
        open_store("keyring", data_dir, keyring_backend=fail.Keyring())  # type: ignore[no-untyped-call]
    assert caught.value.backend == "keyring.backends.fail.Keyring"


@pytest.mark.parametrize("kind", ["auto", "keyring"])
def test_hung_detection_is_bounded(data_dir: Path, kind: Literal["auto", "keyring"]) -> None:
    """Hung backend detection falls back to file under auto and raises StoreUnavailable under keyring."""
    release = threading.Event()
    try:
        if kind == "auto":
            store = open_store(
                kind, data_dir, keyring_backend=SlowToDetectKeyring(release), keyring_timeout=0.2
            )
            assert store.describe().backend == "file"
            assert "did not answer" in store.describe().reason
        else:
            with pytest.raises(StoreUnavailable, match="did not answer"):
                open_store(kind, data_dir, keyring_backend=SlowToDetectKeyring(release), keyring_timeout=0.2)
    finally:
        release.set()


def test_file_never_asks_keyring(data_dir: Path) -> None:
    """Explicit file uses the file store even when a recommended keyring exists."""
    store = open_store("file", data_dir, keyring_backend=MemoryKeyring({}))
    assert store.describe().backend == "file"
    assert store.describe().reason == 'configured: "store": "file"'


# --- naming ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("https://mcp.example.com/api", "https://mcp.example.com/api"),
        ("HTTPS://MCP.Example.COM/api/", "https://mcp.example.com/api"),
        ("https://mcp.example.com:443/api", "https://mcp.example.com/api"),
        ("http://localhost:80/mcp", "http://localhost/mcp"),
        ("http://localhost:8080/mcp/", "http://localhost:8080/mcp"),
        ("https://mcp.example.com", "https://mcp.example.com/"),
        ("https://mcp.example.com/", "https://mcp.example.com/"),
        ("https://mcp.example.com/api#section", "https://mcp.example.com/api"),
        ("https://mcp.example.com/API?tenant=X", "https://mcp.example.com/API?tenant=X"),
        ("https://[::1]:443/mcp", "https://[::1]/mcp"),
    ],
)
def test_canonical_url(given: str, canonical: str) -> None:
    """canonical_url lower-cases scheme and host, drops default port, fragment and trailing slash."""
    assert canonical_url(given) == canonical


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("mcp.example.com/api", "not an absolute URL"),
        ("/relative", "not an absolute URL"),
        ("https://host:notaport/", "not a valid port number"),
        ("https://host:70000/", "not a valid port number"),
    ],
)
def test_canonical_url_rejects_non_absolute(bad: str, problem: str) -> None:
    """canonical_url raises ValueError for a URL without scheme and host, or with a bad port."""
    with pytest.raises(ValueError, match=f"^{problem}: {re.escape(repr(bad))}$"):
        canonical_url(bad)


def test_server_key_is_truncated_sha256_of_canonical_url() -> None:
    """server_key is the first 32 hex characters of SHA-256 of the canonical URL."""
    expected = hashlib.sha256(URL_A.encode()).hexdigest()[:32]
    assert server_key("HTTPS://mcp.example.com:443/api/") == expected


# --- documents written by ncp-broker 0.1.0 (tests/unit/data, made with that release's own store) ------

DATA = Path(__file__).parent / "data"
OLD_ISSUER = "https://auth.example.com"
OLD_URL = "https://mcp.example.com/api"


def _old_release_record() -> ServerRecord:
    """What 0.1.0 was given to save, in today's model (its issued_lifetime and client_id_issued_at are
    fields nobody read, now dropped; a null registered_at is "not given")."""
    return ServerRecord(
        server_url=OLD_URL,
        tokens=TokenSet(
            access_token=Secret("at-old-release"),
            refresh_token=Secret("rt-old-release"),
            expires_at=1_900_000_000.0,
            scopes=("read", "write"),
            token_endpoint=f"{OLD_ISSUER}/token",
            issuer=OLD_ISSUER,
            client_id="client-123",
            resource=OLD_URL,
            obtained_at=1_899_996_400.0,
            revocation_endpoint=f"{OLD_ISSUER}/revoke",
        ),
        registrations={
            OLD_ISSUER: Registration(
                issuer=OLD_ISSUER,
                client_id="client-123",
                client_secret=Secret("cs-old-release"),
                token_endpoint_auth_method="client_secret_basic",
                redirect_uris=("http://127.0.0.1:9876/callback",),
                registration_client_uri=f"{OLD_ISSUER}/register/client-123",
                registration_access_token=Secret("rat-old-release"),
                client_secret_expires_at=0.0,
                grant_types=("authorization_code", "refresh_token"),
            )
        },
    )


def _install_old_document(data_dir: Path, name: str) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = doc_path(data_dir, OLD_URL)
    path.write_bytes((DATA / name).read_bytes())
    path.chmod(0o600)
    return path


async def test_a_file_document_of_the_previous_release_loads(data_dir: Path) -> None:
    """Item 7 of "nothing loses a grant": the store now keeps the core's TokenSet and Registration, and
    a document 0.1.0 wrote (TokenRecord/RegistrationRecord, issued_lifetime, discovery) still loads."""
    _install_old_document(data_dir, "store-0.1.0-file.json")
    store = open_store("file", data_dir)
    assert await store.load(OLD_URL) == _old_release_record()
    assert (await store.load_all()).problems == []


async def test_a_keyring_document_of_the_previous_release_loads(data_dir: Path) -> None:
    """The same for the keyring backend: the document's secret fields are null, the secrets in entries."""
    _install_old_document(data_dir, "store-0.1.0-keyring.json")
    entries = json.loads((DATA / "store-0.1.0-keyring-entries.json").read_text())
    backend = MemoryKeyring({(KEYRING_SERVICE, user): value for user, value in entries.items()})
    store = open_store("keyring", data_dir, keyring_backend=backend)
    assert await store.load(OLD_URL) == _old_release_record()
    await store.save(await store.load(OLD_URL) or plain_record())  # written back in today's format
    assert await store.load(OLD_URL) == _old_release_record()


async def test_a_saved_document_holds_no_dropped_fields(data_dir: Path) -> None:
    """Fields nobody reads (issued_lifetime, lifetime, discovery, client_id_issued_at) are not written."""
    store = open_store("file", data_dir)
    await store.save(full_record())
    text = doc_path(data_dir, URL_A).read_text()
    for dropped in ("issued_lifetime", '"lifetime"', '"discovery"', "client_id_issued_at"):
        assert dropped not in text

"""The credential store: one record per server, in files or in the OS keyring.

Open one with :func:`open_store` and talk to it through the :class:`Store` protocol. ``docs/storage.md``
describes the layout on disk and in the keyring, how ``auto`` chooses, and what happens on corruption and
on a failed write.
"""

from brokerd.store._base import (
    LoadReport,
    NoUsableKeyring,
    Store,
    StoreError,
    StoreInfo,
    StoreProblem,
    StoreReadError,
    StoreUnavailable,
    StoreWriteError,
)
from brokerd.store._file import FileStore
from brokerd.store._keyring import KEYRING_SERVICE, KeyringStore
from brokerd.store._naming import canonical_url, server_key
from brokerd.store._open import DEFAULT_KEYRING_TIMEOUT, open_store
from brokerd.store.records import DOCUMENT_VERSION, RefreshSent, ServerRecord

__all__ = [
    "DEFAULT_KEYRING_TIMEOUT",
    "DOCUMENT_VERSION",
    "KEYRING_SERVICE",
    "FileStore",
    "KeyringStore",
    "LoadReport",
    "NoUsableKeyring",
    "RefreshSent",
    "ServerRecord",
    "Store",
    "StoreError",
    "StoreInfo",
    "StoreProblem",
    "StoreReadError",
    "StoreUnavailable",
    "StoreWriteError",
    "canonical_url",
    "open_store",
    "server_key",
]

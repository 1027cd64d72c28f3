"""Fakes of the daemon's edges for trio tests: an in-memory store, and redirect / device-code handlers for
flows that must not ask for either.

Fake only at the edge under test's boundary, never the thing under test (STYLE.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from brokerd.store import LoadReport, ServerRecord, StoreInfo, StoreWriteError, canonical_url, server_key

if TYPE_CHECKING:
    from brokerd.oauth import AwaitRedirect, ShowDeviceCode
    from brokerd.secret import Secret
    from brokerd.store import Store

__all__ = ["MemoryStore", "no_device_code", "no_redirect"]

FULL_DISK = "[Errno 28] No space left on device"


class MemoryStore:
    """The ``brokerd.store.Store`` protocol in memory, with no threads (so MockClock's autojump sees only
    the actor's sleeps).

    It keeps whatever ``ServerRecord`` it is given, by the record's canonical server URL (as the real
    stores do: any spelling of a URL finds it). ``records`` is the stored state, ``saves`` counts successful
    saves, and ``full = True`` makes every save fail as on a full disk (deleting still works, as it does
    there).
    """

    def __init__(self) -> None:
        self.records: dict[str, ServerRecord] = {}
        self.saves = 0
        self.full = False
        self.data_dir = Path("/nonexistent")

    async def load(self, server_url: str) -> ServerRecord | None:
        """The record of ``server_url`` (any spelling); ValueError if it is not absolute."""
        return self.records.get(canonical_url(server_url))

    async def save(self, record: ServerRecord) -> None:
        """Keep ``record``; StoreWriteError when ``full``; ValueError if its URL is not absolute."""
        key = canonical_url(record.server_url)
        if self.full:
            raise StoreWriteError(self.data_dir / f"{server_key(key)}.json", FULL_DISK)
        self.saves += 1
        self.records[key] = record

    async def delete(self, server_url: str) -> None:
        """Forget ``server_url`` (nothing stored is not an error); ValueError if it is not absolute."""
        self.records.pop(canonical_url(server_url), None)

    async def load_all(self) -> LoadReport:
        """Every record kept, and no problems."""
        return LoadReport(records=list(self.records.values()), problems=[])

    def describe(self) -> StoreInfo:
        return StoreInfo(backend="file", reason="in memory, for tests", data_dir=self.data_dir)

    async def load_access_key(self, server_url: str) -> Secret | None:
        """The record's access key, as the real stores read it."""
        record = await self.load(server_url)
        return None if record is None else record.access_key

    async def save_access_key(self, server_url: str, key: Secret | None) -> None:
        """Set (None: remove) the record's access key, keeping the rest; a new record if there is none."""
        record = await self.load(server_url) or ServerRecord(server_url=server_url)
        record.access_key = key
        await self.save(record)


async def no_redirect(effect: AwaitRedirect) -> Mapping[str, str]:
    """``on_redirect`` for flows that must not ask for a browser redirect.

    Raises:
        AssertionError: always, naming the effect.
    """
    raise AssertionError(f"this flow must not ask for a redirect: {effect}")


async def no_device_code(effect: ShowDeviceCode) -> None:
    """``on_device_code`` for flows that must not show a device code.

    Raises:
        AssertionError: always, naming the effect.
    """
    raise AssertionError(f"this flow must not show a device code: {effect}")


if TYPE_CHECKING:
    _checked: Store = MemoryStore()  # mypy holds the fake to the whole protocol

"""The test harness's own promises: a wait returns what it waited for, or fails saying what and what it saw;
the in-memory store finds a record by any spelling of its URL, as the real stores do."""

from __future__ import annotations

import itertools

import pytest

from brokerd.store import ServerRecord, StoreWriteError
from tests.fakes import MemoryStore
from tests.harness import WaitTimeout, wait_until


def test_wait_until_returns_the_first_truthy_value() -> None:
    """The predicate is polled until truthy, and that value is returned."""
    counter = itertools.count()
    got = wait_until(lambda: next(counter) >= 3 and "ready", 5, interval=0.001, message="three polls")
    assert got == "ready"


def test_wait_until_fails_naming_what_was_awaited_and_the_last_value() -> None:
    """A predicate that stays falsy fails the test (an AssertionError) with the message and the last value."""
    with pytest.raises(WaitTimeout) as failed:
        wait_until(lambda: 0, 0.05, interval=0.01, message="the impossible")
    assert isinstance(failed.value, AssertionError)
    assert "the impossible" in str(failed.value)
    assert "last value seen: 0" in str(failed.value)


def test_wait_until_polls_at_least_once_with_no_time_left() -> None:
    """A zero timeout still calls the predicate once (a condition that already holds is not a failure)."""
    assert wait_until(lambda: True, 0, message="now") is True


async def test_memory_store_keys_by_canonical_url_and_can_be_full() -> None:
    """Any spelling of a server URL finds its record; a full store refuses saves with StoreWriteError."""
    store = MemoryStore()
    await store.save(ServerRecord(server_url="HTTP://Example.com:80/mcp/"))
    assert await store.load("http://example.com/mcp") is not None
    store.full = True
    with pytest.raises(StoreWriteError):
        await store.save(ServerRecord(server_url="http://example.com/other"))
    await store.delete("http://example.com/mcp/")
    assert store.records == {}

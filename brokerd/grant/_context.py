"""What every OAuth actor shares: the HTTP client, the callback listeners, the work nursery, the timer."""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import trio

from brokerd.callback import CallbackHub
from brokerd.schedule import Schedule

__all__ = ["OAuthContext", "Scheduler"]

Due = Callable[[], Awaitable[None]]


class Scheduler:
    """Proactive renewal: one task sleeps until the earliest deadline of any grant (no polling).

    Deadlines are wall-clock, like token expiry; the sleep converts them with the context's clock. A grant
    is known by its key (its canonical server URL, DESIGN rule 11), so aliases share one deadline.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._schedule = Schedule()
        self._due: dict[str, Due] = {}
        self._wake = trio.Event()

    def set(self, key: str, deadline: float | None, due: Due) -> None:
        """Call ``due()`` (in the work nursery) at ``deadline``; None cancels what was planned for ``key``."""
        self._due[key] = due
        self._schedule.set(key, deadline)
        self._wake.set()

    def next_deadline(self, key: str) -> float | None:
        return self._schedule.get(key)

    async def run(self, nursery: trio.Nursery) -> None:
        while True:
            self._wake = trio.Event()
            for key in self._schedule.pop_due(self._clock()):
                nursery.start_soon(self._due[key])
            deadline = self._schedule.next_deadline()
            with trio.move_on_after(math.inf if deadline is None else max(0.0, deadline - self._clock())):
                await self._wake.wait()


@dataclass
class OAuthContext:
    """What every OAuth actor shares.

    ``nursery`` is the daemon's *work* nursery: renewals and logins run there, not in the task of the
    caller who asked, so a caller hanging up cancels nothing. A stop cancels it only after every grant is
    closed; exchanges already sent are shielded (DESIGN rule 10) and finish first.
    """

    http: httpx.AsyncClient
    hub: CallbackHub
    nursery: trio.Nursery
    clock: Callable[[], float] = time.time
    entropy: Callable[[int], bytes] = os.urandom
    jitter: Callable[[], float] = random.random
    scheduler: Scheduler = field(init=False)

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.clock)

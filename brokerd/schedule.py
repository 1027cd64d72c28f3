"""Deadlines by key, for the one timer task of the daemon (``brokerd.grant.Scheduler``).

*When* a grant is due is decided by the renewal machine (``brokerd.renewal.wakeup``); this only keeps the
deadlines so that one task can sleep until exactly the next one, with no polling when nothing is due.
Nothing here reads a clock.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

__all__ = ["Schedule"]


@dataclass
class Schedule:
    """Deadlines by key (a server name). Setting a key replaces its deadline; None removes it.

    ``next_deadline`` lets one task sleep until exactly the next thing is due — no polling when nothing is.
    """

    _deadlines: dict[str, float] = field(default_factory=dict)
    _heap: list[tuple[float, str]] = field(default_factory=list)

    def set(self, key: str, deadline: float | None) -> None:
        if deadline is None:
            self._deadlines.pop(key, None)
            return
        self._deadlines[key] = deadline
        heapq.heappush(self._heap, (deadline, key))

    def get(self, key: str) -> float | None:
        return self._deadlines.get(key)

    def _prune(self) -> None:
        while self._heap and self._deadlines.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # stale entry: the key was rescheduled or removed

    def next_deadline(self) -> float | None:
        self._prune()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[str]:
        """Keys whose deadline is at or before ``now``, earliest first; they are removed."""
        due = []
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, key = heapq.heappop(self._heap)
            del self._deadlines[key]
            due.append(key)
        return due

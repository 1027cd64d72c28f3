"""The refresh schedule, as pure functions of time: when to refresh, whether a token is good enough.

Rules (DESIGN.md rules 5, 7, 9; issue "one refresh chain per server"):

* A token is refreshed at about two thirds of its *issued* lifetime, plus up to a tenth of the lifetime of
  jitter (so many servers issued at once do not refresh at once), and never later than ``margin`` seconds
  before expiry — a margin capped at a third of the lifetime, so a 5-second token is refreshed after about
  3.3 s, not before it was issued.
* A caller's ``min_ttl`` is capped at a third of the issued lifetime: asking for 30 s of a 5-second token
  means "a fresh one", not "refresh on every request".
* A token is handed out with ``min_ttl`` plus :data:`EXPIRY_SKEW` left (authorization servers issue whole
  seconds and resource servers check ``exp`` strictly, so a token can be refused a second early) — capped
  at a third of its lifetime, so a 3-second token is still served until its refresh point at 2 s.
* Transient failures back off exponentially from 1 s to 5 min with full jitter, and a server's
  ``Retry-After`` is honoured (within the same ceiling).

Nothing here reads a clock or draws randomness: ``now`` and ``jitter`` (a float in [0, 1)) come in.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "DEFAULT_LIFETIME",
    "EXPIRY_SKEW",
    "Schedule",
    "backoff_delay",
    "effective_min_ttl",
    "is_usable",
    "refresh_at",
]

REFRESH_FRACTION = 2 / 3
JITTER_FRACTION = 0.1
DEFAULT_MARGIN = 60.0
EXPIRY_SKEW = 1.0
DEFAULT_LIFETIME = 3600.0  # a token response without expires_in is treated as living this long
BACKOFF_MIN = 1.0
BACKOFF_MAX = 300.0


def refresh_at(
    obtained_at: float, expires_at: float | None, *, jitter: float, margin: float = DEFAULT_MARGIN
) -> float | None:
    """When a token obtained at ``obtained_at`` that expires at ``expires_at`` should be refreshed.

    None for a token without an expiry (nothing to schedule).
    """
    if expires_at is None:
        return None
    lifetime = max(0.0, expires_at - obtained_at)
    planned = obtained_at + lifetime * (REFRESH_FRACTION + JITTER_FRACTION * min(max(jitter, 0.0), 1.0))
    latest = expires_at - min(margin, lifetime / 3)
    return min(planned, latest)


def effective_min_ttl(min_ttl: float, obtained_at: float, expires_at: float | None) -> float:
    """``min_ttl`` capped at a third of the issued lifetime (DESIGN.md rule 9)."""
    if expires_at is None:
        return min_ttl
    return min(min_ttl, max(0.0, expires_at - obtained_at) / 3)


def is_usable(now: float, obtained_at: float, expires_at: float | None, min_ttl: float) -> bool:
    """Whether a token may be handed to a caller who needs it for ``min_ttl`` more seconds.

    The need is ``min_ttl`` plus :data:`EXPIRY_SKEW`, capped at a third of the issued lifetime — the
    proactive refresh point — so that requests never refresh a token earlier than the schedule would.
    """
    if expires_at is None:
        return True
    lifetime = max(0.0, expires_at - obtained_at)
    return expires_at - now >= min(min_ttl + EXPIRY_SKEW, lifetime / 3)


def backoff_delay(attempt: int, *, jitter: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based) after a transient failure.

    Full jitter between :data:`BACKOFF_MIN` and the exponential ceiling; ``Retry-After``, when the server
    sent one, is a floor (capped at :data:`BACKOFF_MAX`).
    """
    ceiling = min(BACKOFF_MAX, BACKOFF_MIN * 2.0 ** min(max(0, attempt - 1), 64))
    delay = BACKOFF_MIN + (ceiling - BACKOFF_MIN) * min(max(jitter, 0.0), 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, BACKOFF_MAX))
    return delay


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

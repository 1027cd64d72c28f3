"""The pure refresh schedule: exact deadlines, capped min_ttl, backoff (T3, DESIGN.md rules 7 and 9)."""

from __future__ import annotations

import pytest

from brokerd import schedule
from brokerd.schedule import Schedule, backoff_delay, effective_min_ttl, is_usable, refresh_at


@pytest.mark.parametrize(
    ("obtained", "expires", "jitter", "expected"),
    [
        (0, 3600, 0.0, 2400),  # two thirds of an hour
        (0, 3600, 0.5, 2580),  # plus half the jitter span (a tenth of the lifetime)
        (0, 3600, 0.999999, 2759.99964),
        (0, 120, 0.0, 80),  # 2/3 of 120 = 80, margin 60 would say 60 but is capped at a third: 80
        (0, 150, 0.9, 100),  # planned 113.5, but never later than expiry - min(60, 50) = 100
        (100, 103, 0.0, 102),  # a 3-second token: after 2 s
        (0, 5, 0.0, 5 * 2 / 3),  # rule 9: a 5-second token refreshes about every 3.3 s
        (0, None, 0.3, None),
    ],
)
def test_refresh_at(obtained: float, expires: float | None, jitter: float, expected: float | None) -> None:
    """Refresh at two thirds of the issued lifetime plus jitter, never after the margin before expiry (T3)."""
    got = refresh_at(obtained, expires, jitter=jitter)
    assert got == (None if expected is None else pytest.approx(expected))


def test_refresh_is_always_before_expiry() -> None:
    """Whatever the jitter and lifetime, the refresh comes before expiry."""
    for lifetime in (1, 2, 3, 5, 60, 61, 3600, 86400):
        for jitter in (0.0, 0.5, 1.0, 7.0, -3.0):
            at = refresh_at(10, 10 + lifetime, jitter=jitter)
            assert at is not None
            assert 10 < at < 10 + lifetime


@pytest.mark.parametrize(
    ("min_ttl", "obtained", "expires", "expected"),
    [(30, 0, 3600, 30), (30, 0, 5, 5 / 3), (30, 0, None, 30), (0, 0, 60, 0)],
)
def test_min_ttl_is_capped_at_a_third_of_lifetime(
    min_ttl: float, obtained: float, expires: float | None, expected: float
) -> None:
    """A caller's min_ttl never exceeds a third of the issued lifetime (DESIGN.md rule 9)."""
    assert effective_min_ttl(min_ttl, obtained, expires) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("now", "expected"),
    [(0, True), (3568, True), (3569.5, False), (3599.5, False), (4000, False)],
)
def test_is_usable_keeps_min_ttl_and_a_second_of_skew(now: float, expected: bool) -> None:
    """A token is handed out only with min_ttl (30 s) plus a second of skew left."""
    assert is_usable(now, 0, 3600, 30) is expected


def test_short_token_is_usable_until_its_refresh_point() -> None:
    """A 3-second token with min_ttl 30 is served until a third of its life remains, not refreshed sooner."""
    assert is_usable(1.0, 0, 3, 30)
    assert is_usable(2.0, 0, 3, 30)
    assert not is_usable(2.01, 0, 3, 30)


@pytest.mark.parametrize(
    ("attempt", "jitter", "retry_after", "expected"),
    [
        (1, 0.0, None, 1.0),
        (1, 1.0, None, 1.0),
        (2, 1.0, None, 2.0),
        (4, 1.0, None, 8.0),
        (4, 0.5, None, 4.5),
        (20, 1.0, None, schedule.BACKOFF_MAX),
        (20, 0.0, None, 1.0),
        (1, 0.0, 30.0, 30.0),
        (1, 0.0, 10_000.0, schedule.BACKOFF_MAX),
    ],
)
def test_backoff(attempt: int, jitter: float, retry_after: float | None, expected: float) -> None:
    """Backoff grows from 1 s to 5 min with full jitter and honours Retry-After (T5)."""
    assert backoff_delay(attempt, jitter=jitter, retry_after=retry_after) == pytest.approx(expected)


def test_schedule_orders_replaces_and_removes() -> None:
    """The schedule yields due keys in order; rescheduling and removal leave no stale entries."""
    s = Schedule()
    s.set("a", 30)
    s.set("b", 10)
    s.set("c", 20)
    s.set("a", 5)  # rescheduled earlier
    s.set("c", None)  # removed
    assert s.next_deadline() == 5
    assert s.pop_due(4) == []
    assert s.pop_due(10) == ["a", "b"]
    assert s.next_deadline() is None
    assert s.get("a") is None


def test_schedule_is_empty_means_no_deadline() -> None:
    """With nothing scheduled there is no deadline to wake up for (no polling)."""
    assert Schedule().next_deadline() is None

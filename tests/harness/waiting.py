"""Bounded waiting: the one polling loop of the test suite, and sleeping past a wall-clock instant.

Every wait in a test has a deadline and, when it passes, fails saying what was awaited and what was last
seen, instead of hanging or failing with a bare ``assert``. Timing bounds here are generous limits against
hanging, never performance assertions (those live in bench/).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "sleep_past", "wait_until"]

T = TypeVar("T")

#: How much of the last value a failure message shows.
_SHOWN = 600


class WaitTimeout(AssertionError):
    """``wait_until``'s predicate stayed falsy until the deadline; the message says what and what was seen.

    An AssertionError, so a test fails (not errors) when what it waits for never happens.
    """


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.05,
    message: str | Callable[[], str],
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value, and return that value
    (a predicate typed ``X | None`` gives an ``X``).

    ``predicate`` is called at least once, and once more at the deadline, so a slow machine never fails a
    wait whose condition holds by then. ``message`` names what is awaited (a callable is asked only on
    failure, e.g. to add a log). Predicates that could return a secret (a token) should return a bool,
    since the last value is shown in the failure message.

    Raises:
        WaitTimeout: the predicate was still falsy after ``timeout`` seconds; the message has ``message``,
            the timeout and the repr of the last value seen.
        Whatever ``predicate`` raises, at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(interval, left))
    what = message() if callable(message) else message
    shown = repr(value)
    if len(shown) > _SHOWN:
        shown = f"{shown[:_SHOWN]}… ({len(shown)} characters)"
    raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}; last value seen: {shown}")


def sleep_past(when: float, margin: float = 0.0) -> None:
    """Sleep until the wall clock (``time.time()``) is ``margin`` seconds past ``when`` (e.g. a token's
    ``exp``); return at once if it already is."""
    time.sleep(max(0.0, when + margin - time.time()))

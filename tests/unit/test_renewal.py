"""The renewal machine (brokerd.renewal): the schedule as functions of time, every transition, every
decision (T3-T5, DESIGN.md rules 4, 7, 9, 10, 13). Plain numbers in, plain answers out."""

from __future__ import annotations

import pytest

from brokerd import renewal
from brokerd.renewal import backoff_delay, effective_min_ttl, is_usable, refresh_at
from brokerd.schedule import Schedule


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
        (20, 1.0, None, renewal.BACKOFF_MAX),
        (20, 0.0, None, 1.0),
        (1, 0.0, 30.0, 30.0),
        (1, 0.0, 10_000.0, renewal.BACKOFF_MAX),
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


# ---- the machine: transitions -------------------------------------------------------------------------

P = renewal.Phase
A = renewal.Action
HOUR = renewal.Held(obtained_at=0.0, expires_at=3600.0, renewable=True)
SHORT = renewal.Held(obtained_at=100.0, expires_at=103.0, renewable=True)
NO_REFRESH = renewal.Held(obtained_at=0.0, expires_at=3600.0, renewable=False)

EVENTS: dict[str, renewal.Event] = {
    "LoggedIn": renewal.LoggedIn(HOUR, jitter=0.0),
    "Sent": renewal.Sent(now=10.0),
    "Renewed": renewal.Renewed(HOUR, jitter=0.0),
    "Failed": renewal.Failed(now=10.0, jitter=0.0),
    "Ended": renewal.Ended(),
    "Settled": renewal.Settled(),
    "Forgotten": renewal.Forgotten(),
    "Closed": renewal.Closed(),
    "Unattended": renewal.Unattended(),
    "Retry": renewal.Retry(),
}
STATES = {
    P.NO_GRANT: renewal.State(),
    P.IDLE: renewal.State(phase=P.IDLE, held=HOUR, planned_at=2400.0),
    P.IN_FLIGHT: renewal.State(phase=P.IN_FLIGHT, held=HOUR, last_attempt=10.0),
    P.BACKING_OFF: renewal.State(
        phase=P.BACKING_OFF, held=HOUR, failures=1, retry_at=11.0, last_attempt=10.0
    ),
}
# Every (phase, event) pair: the phase it leads to, or None where it cannot happen (an actor bug).
EXPECTED: dict[tuple[renewal.Phase, str], renewal.Phase | None] = {
    (P.NO_GRANT, "LoggedIn"): P.IDLE,
    (P.NO_GRANT, "Sent"): None,  # nothing to renew (unattended grants may: see below)
    (P.NO_GRANT, "Renewed"): None,
    (P.NO_GRANT, "Failed"): None,
    (P.NO_GRANT, "Ended"): None,
    (P.NO_GRANT, "Settled"): None,
    (P.NO_GRANT, "Forgotten"): P.NO_GRANT,
    (P.NO_GRANT, "Closed"): P.NO_GRANT,
    (P.IDLE, "LoggedIn"): P.IDLE,
    (P.IDLE, "Sent"): P.IN_FLIGHT,
    (P.IDLE, "Renewed"): None,  # no renewal was out
    (P.IDLE, "Failed"): None,
    (P.IDLE, "Ended"): None,
    (P.IDLE, "Settled"): None,
    (P.IDLE, "Forgotten"): P.NO_GRANT,
    (P.IDLE, "Closed"): P.IDLE,
    (P.IN_FLIGHT, "LoggedIn"): P.IN_FLIGHT,  # the exchange is still out; it ends Settled
    (P.IN_FLIGHT, "Sent"): None,  # single flight (T4)
    (P.IN_FLIGHT, "Renewed"): P.IDLE,
    (P.IN_FLIGHT, "Failed"): P.BACKING_OFF,
    (P.IN_FLIGHT, "Ended"): P.NO_GRANT,
    (P.IN_FLIGHT, "Settled"): P.IDLE,
    (P.IN_FLIGHT, "Forgotten"): None,  # logout and invalidate wait for the renewal first
    (P.IN_FLIGHT, "Closed"): P.IN_FLIGHT,  # a stop lets it finish (rule 10)
    (P.BACKING_OFF, "LoggedIn"): P.IDLE,
    (P.BACKING_OFF, "Sent"): P.IN_FLIGHT,
    (P.BACKING_OFF, "Renewed"): None,
    (P.BACKING_OFF, "Failed"): None,
    (P.BACKING_OFF, "Ended"): None,
    (P.BACKING_OFF, "Settled"): None,
    (P.BACKING_OFF, "Forgotten"): P.NO_GRANT,
    (P.BACKING_OFF, "Closed"): P.BACKING_OFF,
    **{(phase, "Unattended"): phase for phase in P},
    **{(phase, "Retry"): phase for phase in P},
}


@pytest.mark.parametrize(("phase", "event"), sorted(EXPECTED, key=str), ids=lambda x: getattr(x, "value", x))
def test_every_transition(phase: renewal.Phase, event: str) -> None:
    """Each event leads where the table says, and the ones that cannot happen are refused."""
    expected = EXPECTED[(phase, event)]
    if expected is None:
        with pytest.raises(ValueError, match="cannot happen"):
            renewal.step(STATES[phase], EVENTS[event])
        kind = type(EVENTS[event])
        assert kind not in renewal.TRANSITIONS[phase] or (phase, kind) in renewal.UNATTENDED_ONLY
    else:
        assert renewal.step(STATES[phase], EVENTS[event]).phase is expected
        assert renewal.TRANSITIONS[phase][type(EVENTS[event])] is expected


def test_new_tokens_reset_the_failure_state_and_plan_the_next_renewal() -> None:
    """A renewal or a login clears failures, the backoff timer and Retry-After, and plans at 2/3 of life."""
    failing = renewal.step(
        renewal.step(STATES[P.IN_FLIGHT], renewal.Failed(now=10.0, jitter=0.0, retry_after=30.0)),
        renewal.Sent(now=40.0),
    )
    assert (failing.failures, failing.retry_at, failing.not_before) == (1, 40.0, 40.0)
    renewed = renewal.step(failing, renewal.Renewed(HOUR, jitter=0.0))
    assert (renewed.failures, renewed.retry_at, renewed.not_before) == (0, None, None)
    assert renewed.planned_at == 2400.0
    assert renewed.last_attempt == 40.0
    assert renewal.step(STATES[P.BACKING_OFF], renewal.LoggedIn(SHORT, jitter=0.0)).planned_at == 102.0


@pytest.mark.parametrize(
    ("failures_before", "jitter", "retry_after", "retry_at", "not_before"),
    [
        (0, 0.0, None, 11.0, None),  # first failure: 1 s
        (3, 1.0, None, 18.0, None),  # fourth: up to 8 s
        (0, 0.0, 30.0, 40.0, 40.0),  # Retry-After is a floor, and a not-before time
        (20, 1.0, None, 310.0, None),  # capped at 5 minutes
    ],
)
def test_a_failure_backs_off(
    failures_before: int, jitter: float, retry_after: float | None, retry_at: float, not_before: float | None
) -> None:
    """T5: a failure keeps the grant and sets the backoff timer (and Retry-After as a not-before time)."""
    state = renewal.State(phase=P.IN_FLIGHT, held=HOUR, failures=failures_before, last_attempt=10.0)
    after = renewal.step(state, renewal.Failed(now=10.0, jitter=jitter, retry_after=retry_after))
    assert after.held == HOUR
    assert after.failures == failures_before + 1
    assert after.retry_at == pytest.approx(retry_at)
    assert after.not_before == not_before


def test_an_ended_grant_keeps_nothing_but_the_last_attempt_and_closed() -> None:
    """Ended and Forgotten drop the token and every failure; a closed grant stays closed."""
    state = renewal.State(phase=P.IN_FLIGHT, held=HOUR, failures=3, last_attempt=9.0, closed=True)
    assert renewal.step(state, renewal.Ended()) == renewal.State(last_attempt=9.0, closed=True)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (STATES[P.NO_GRANT], None),
        (STATES[P.IDLE], 2400.0),
        (STATES[P.IN_FLIGHT], None),  # nothing to wake for: the renewal is out
        (STATES[P.BACKING_OFF], 11.0),
        (renewal.State(phase=P.IDLE, held=NO_REFRESH, planned_at=None), None),
        (renewal.State(phase=P.IDLE, held=HOUR, planned_at=2400.0, closed=True), None),  # stopping
    ],
)
def test_wakeup(state: renewal.State, expected: float | None) -> None:
    """The timer wakes at the planned point while idle, at the backoff timer after a failure, else never."""
    assert renewal.wakeup(state) == expected
    assert renewal.due(state, 5000.0) is (expected is not None)
    assert renewal.due(state, 0.0) is False


# ---- the machine: decisions ---------------------------------------------------------------------------


def idle(held: renewal.Held = HOUR, **kw: object) -> renewal.State:
    return renewal.State(phase=P.IDLE, held=held, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("label", "state", "now", "min_ttl", "asked_at", "refused", "action", "wait"),
    [
        ("no grant", renewal.State(), 5.0, 30, 5.0, False, A.NEEDS_LOGIN, 0.0),
        ("fresh", idle(), 100.0, 30, 100.0, False, A.SERVE, 0.0),
        ("fresh while a renewal is out", STATES[P.IN_FLIGHT], 100.0, 30, 100.0, False, A.SERVE, 0.0),
        ("due: renew, wait the join budget", idle(), 3500.0, 300, 3500.0, False, A.RENEW, 2.0),
        ("due: the wait never outlives the token", idle(), 3598.5, 30, 3598.5, False, A.RENEW, 0.5),
        ("due, in flight: join", STATES[P.IN_FLIGHT], 3500.0, 300, 3500.0, False, A.JOIN, 2.0),
        ("due, in flight, budget spent: serve", STATES[P.IN_FLIGHT], 3502.0, 300, 3500.0, False, A.SERVE, 0),
        (
            "due, backing off: serve (the timer retries)",
            STATES[P.BACKING_OFF],
            3500.0,
            300,
            3500.0,
            False,
            A.SERVE,
            0.0,
        ),
        ("expired: renew", idle(), 3700.0, 0, 3700.0, False, A.RENEW, 2.0),
        ("expired, in flight: join", STATES[P.IN_FLIGHT], 3700.0, 0, 3700.0, False, A.JOIN, 2.0),
        ("expired, in flight, budget spent", STATES[P.IN_FLIGHT], 3702.0, 0, 3700.0, False, A.UNREACHABLE, 0),
        ("refused by the resource: renew now", idle(), 100.0, 0, 100.0, True, A.RENEW, 2.0),
        ("expired, nothing to renew with", idle(NO_REFRESH), 3700.0, 0, 3700.0, False, A.NEEDS_LOGIN, 0.0),
        ("due, nothing to renew with: serve", idle(NO_REFRESH), 3500.0, 300, 3500.0, False, A.SERVE, 0.0),
        ("rule 9: a 3 s token is fresh until 2 s", idle(SHORT), 101.9, 30, 101.9, False, A.SERVE, 0.0),
        (
            "rule 9: and due after",
            idle(SHORT),
            102.1,
            30,
            102.1,
            False,
            A.RENEW,
            0.0,
        ),  # under a second left: renew, serve now
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_decisions(
    *,
    label: str,
    state: renewal.State,
    now: float,
    min_ttl: float,
    asked_at: float,
    refused: bool,
    action: renewal.Action,
    wait: float,
) -> None:
    """What a caller gets, by how the token fits and the phase (the DECISIONS table), within its budget."""
    decision = renewal.decide(state, now=now, min_ttl=min_ttl, asked_at=asked_at, refused=refused)
    assert decision.action is action, label
    assert decision.wait == wait, label


def test_the_decision_table_is_complete() -> None:
    """Every fit meets every phase that holds a token in the table."""
    held = (P.IDLE, P.IN_FLIGHT, P.BACKING_OFF)
    assert set(renewal.DECISIONS) == {(f, p) for f in renewal.Fit for p in held}


EXPIRED_AFTER_FAILURE = renewal.State(
    phase=P.BACKING_OFF, held=HOUR, failures=5, last_attempt=3700.0, retry_at=3900.0
)


@pytest.mark.parametrize(
    ("label", "state", "now", "asked_at", "action", "wait"),
    [
        ("a second after the last try: renew", EXPIRED_AFTER_FAILURE, 3701.0, 3701.0, A.RENEW, 2.0),
        ("sooner: pause until then", EXPIRED_AFTER_FAILURE, 3700.25, 3700.25, A.PAUSE, 0.75),
        ("waited already: renew within the budget", EXPIRED_AFTER_FAILURE, 3701.0, 3700.25, A.RENEW, 1.25),
        (
            "Retry-After beyond the budget: unreachable at once",
            renewal.State(
                phase=P.BACKING_OFF,
                held=HOUR,
                failures=1,
                last_attempt=3700.0,
                retry_at=3820.0,
                not_before=3820.0,
            ),
            3760.0,
            3760.0,
            A.UNREACHABLE,
            0.0,
        ),
        (
            "Retry-After within the budget: pause until it",
            renewal.State(
                phase=P.BACKING_OFF,
                held=HOUR,
                failures=1,
                last_attempt=3700.0,
                retry_at=3760.5,
                not_before=3760.5,
            ),
            3760.0,
            3760.0,
            A.PAUSE,
            0.5,
        ),
        (
            "stopping: no new renewal",
            renewal.State(phase=P.BACKING_OFF, held=HOUR, failures=1, last_attempt=3700.0, closed=True),
            3701.0,
            3701.0,
            A.STOPPING,
            0.0,
        ),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_on_demand_retry_of_an_expired_token(
    *, label: str, state: renewal.State, now: float, asked_at: float, action: renewal.Action, wait: float
) -> None:
    """Recover as soon as the server does: with an expired token, callers retry at most once per
    ON_DEMAND_RETRY (1 s), never before Retry-After, and never wait past JOIN_WAIT."""
    decision = renewal.decide(state, now=now, min_ttl=0, asked_at=asked_at)
    assert decision.action is action, label
    assert decision.wait == pytest.approx(wait), label


def test_closed_serves_what_it_holds_and_starts_nothing() -> None:
    """Rule 10: a stopping grant serves a valid token, joins the renewal in flight, starts no new one."""
    closed = idle(closed=True)
    assert renewal.decide(closed, now=3500.0, min_ttl=300, asked_at=3500.0).action is A.SERVE
    assert renewal.decide(closed, now=3700.0, min_ttl=0, asked_at=3700.0).action is A.STOPPING
    in_flight = renewal.step(STATES[P.IN_FLIGHT], renewal.Closed())
    assert renewal.decide(in_flight, now=3700.0, min_ttl=0, asked_at=3700.0).action is A.JOIN


def test_a_token_renewed_while_the_caller_waited_is_served_even_if_short() -> None:
    """A server that issues tokens shorter than asked gets one renewal per caller, not a loop."""
    state = idle(renewal.Held(obtained_at=50.0, expires_at=50.5, renewable=True))
    decision = renewal.decide(state, now=50.1, min_ttl=30, asked_at=49.0, renewed=True)
    assert decision.action is A.SERVE
    dead = idle(renewal.Held(obtained_at=50.0, expires_at=50.0, renewable=True))
    assert renewal.decide(dead, now=50.1, min_ttl=0, asked_at=49.0, renewed=True).action is A.UNREACHABLE


def test_short_tokens_renew_once_per_two_thirds_of_life_not_per_request() -> None:
    """Rule 9 end to end on plain numbers: a 3 s token asked for every 100 ms over 30 s is renewed by the
    timer every 2 s (14 times up to 29.9 s), and no request ever needs to renew it itself."""

    def renew(state: renewal.State, now: float) -> renewal.State:
        state = renewal.step(state, renewal.Sent(now))
        return renewal.step(state, renewal.Renewed(renewal.Held(now, now + 3.0, True), jitter=0.0))

    state = renewal.step(renewal.State(), renewal.LoggedIn(renewal.Held(0.0, 3.0, True), jitter=0.0))
    by_timer = []
    for tick in range(300):
        now = tick / 10
        if renewal.due(state, now):
            by_timer.append(now)
            state = renew(state, now)
        assert renewal.decide(state, now=now, min_ttl=30, asked_at=now).action is A.SERVE
    assert by_timer == pytest.approx([2.0 * k for k in range(1, 15)])


# ---- grants that need no person (E1, E2, E4) -----------------------------------------------------------

UNATTENDED = renewal.State(unattended=True)


def test_an_unattended_grant_gets_its_first_token_by_renewing() -> None:
    """With nothing held, an unattended grant renews from NO_GRANT; the answer makes it IDLE with a plan."""
    assert renewal.decide(UNATTENDED, now=5.0, min_ttl=30, asked_at=5.0) == renewal.Decision(A.RENEW, 2.0)
    out = renewal.step(UNATTENDED, renewal.Sent(5.0))
    assert (out.phase, out.held, out.last_attempt) == (P.IN_FLIGHT, None, 5.0)
    assert renewal.decide(out, now=5.5, min_ttl=30, asked_at=5.0) == renewal.Decision(A.JOIN, 1.5)
    done = renewal.step(out, renewal.Renewed(renewal.Held(6.0, 66.0, renewable=True), jitter=0.0))
    assert (done.phase, done.planned_at) == (P.IDLE, 46.0)
    assert renewal.decide(done, now=7.0, min_ttl=30, asked_at=7.0).action is A.SERVE


def test_a_grant_that_needs_a_person_cannot_be_renewed_from_nothing() -> None:
    """Sent from NO_GRANT is an actor bug unless the grant is unattended and not refused."""
    with pytest.raises(ValueError, match="cannot happen"):
        renewal.step(renewal.State(), renewal.Sent(1.0))
    with pytest.raises(ValueError, match="cannot happen"):
        renewal.step(renewal.State(unattended=True, refused=True), renewal.Sent(1.0))


def test_a_refusal_is_not_retried_until_the_credentials_change() -> None:
    """Ended marks an unattended grant refused: needs_login, no new request, until Retry (or becoming
    unattended again after it was not) clears it."""
    out = renewal.step(UNATTENDED, renewal.Sent(5.0))
    ended = renewal.step(out, renewal.Ended())
    assert (ended.phase, ended.unattended, ended.refused) == (P.NO_GRANT, True, True)
    assert renewal.decide(ended, now=60.0, min_ttl=0, asked_at=60.0).action is A.NEEDS_LOGIN
    assert renewal.step(ended, renewal.Unattended(True)).refused  # nothing changed
    back = renewal.step(renewal.step(ended, renewal.Unattended(False)), renewal.Unattended(True))
    assert not back.refused
    assert not renewal.step(ended, renewal.Retry()).refused
    assert renewal.decide(
        renewal.step(ended, renewal.Retry()), now=60.0, min_ttl=0, asked_at=60.0
    ).action is (A.RENEW)
    # A grant that needs a person is never "refused": a login is what it needs anyway.
    person = renewal.step(STATES[P.IN_FLIGHT], renewal.Ended())
    assert not person.refused


UNHELD_FAILED = renewal.State(
    phase=P.BACKING_OFF, unattended=True, failures=1, last_attempt=10.0, retry_at=11.0
)


@pytest.mark.parametrize(
    ("label", "state", "now", "asked_at", "action", "wait"),
    [
        ("needs a person", renewal.State(), 5.0, 5.0, A.NEEDS_LOGIN, 0.0),
        ("unattended: get one", UNATTENDED, 5.0, 5.0, A.RENEW, 2.0),
        ("refused", renewal.State(unattended=True, refused=True), 5.0, 5.0, A.NEEDS_LOGIN, 0.0),
        ("stopping", renewal.State(unattended=True, closed=True), 5.0, 5.0, A.STOPPING, 0.0),
        ("in flight: join", renewal.State(phase=P.IN_FLIGHT, unattended=True), 5.0, 5.0, A.JOIN, 2.0),
        (
            "in flight, budget spent",
            renewal.State(phase=P.IN_FLIGHT, unattended=True),
            7.0,
            5.0,
            A.UNREACHABLE,
            0,
        ),
        ("failed a second ago: again", UNHELD_FAILED, 11.0, 11.0, A.RENEW, 2.0),
        ("failed just now: pause", UNHELD_FAILED, 10.5, 10.5, A.PAUSE, 0.5),
        (
            "Retry-After beyond the budget",
            renewal.State(phase=P.BACKING_OFF, unattended=True, last_attempt=10.0, not_before=40.0),
            11.0,
            11.0,
            A.UNREACHABLE,
            0.0,
        ),
        (
            "tried for this caller already",
            renewal.State(unattended=True, last_attempt=5.5),
            5.6,
            5.0,
            A.NEEDS_LOGIN,
            0.0,
        ),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_decisions_with_nothing_held(
    *, label: str, state: renewal.State, now: float, asked_at: float, action: renewal.Action, wait: float
) -> None:
    """What a caller gets when no token is held: a login, or for an unattended grant a first token within
    the join budget, with the on-demand retry after a failure."""
    decision = renewal.decide(state, now=now, min_ttl=0, asked_at=asked_at)
    assert decision.action is action, label
    assert decision.wait == pytest.approx(wait), label


def test_an_unheld_failure_sets_no_timer() -> None:
    """Nobody waits for a first token that failed: the timer does not retry it, the next caller does."""
    assert renewal.wakeup(UNHELD_FAILED) is None


def test_a_grant_that_needs_no_person_is_renewable_without_a_refresh_token() -> None:
    """A client-credentials token has no refresh token, yet the timer renews it and a caller may too; it
    becomes renewable when the grant becomes unattended (an enterprise IdP login arrives), not before."""
    held = renewal.step(renewal.State(), renewal.LoggedIn(NO_REFRESH, jitter=0.0))
    assert renewal.wakeup(held) is None
    assert renewal.decide(held, now=3700.0, min_ttl=0, asked_at=3700.0).action is A.NEEDS_LOGIN
    able = renewal.step(held, renewal.Unattended(True))
    assert renewal.renewable(able)
    assert renewal.wakeup(able) == 2400.0
    assert renewal.decide(able, now=3500.0, min_ttl=300, asked_at=3500.0).action is A.RENEW
    assert renewal.decide(able, now=3700.0, min_ttl=0, asked_at=3700.0).action is A.RENEW

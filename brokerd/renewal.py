"""When to serve, renew, wait, back off or give up: one decision, as a pure state machine (DESIGN rule 13).

Everything that decides what happens to one grant's token lives here, as data and plain functions of
numbers: ``now`` and events come in, a new :class:`State` or a :class:`Decision` comes out. No trio, no
I/O, no clock, no randomness (``jitter`` is a float in [0, 1) drawn by the caller). The grant actor
(``brokerd.grant``) only carries decisions out: it sends the renewal, waits, sleeps, answers.

*Renewal* is whatever gets a new access token without a person: a refresh (``grant_type=refresh_token``),
or asking again with a grant that needs no person (client credentials, jwt-bearer). The machine does not
care which. A grant that needs no person at all (``unattended``: client credentials, a workload's token,
an enterprise IdP's grant that is held) gets its *first* token the same way: with nothing held, a caller's
request is a renewal from ``NO_GRANT`` (``Sent`` there leads to ``IN_FLIGHT``), and the answer is
``Renewed``. If the authorization server refuses its credentials (``Ended``), the grant is ``refused``: it
asks again only once they have changed (``Retry``: a reload, a new workload token, a person's ``login``),
so a wrong secret or a rejected assertion is never sent twice.

The phases of a grant (:class:`Phase`) and the events that move it (:data:`TRANSITIONS`)::

    NO_GRANT ──LoggedIn──▶ IDLE ──Sent──▶ IN_FLIGHT ──Renewed──▶ IDLE
        ▲                   ▲ │             │    │
        │        Forgotten  │ └─Forgotten─┐ │    └──Failed──▶ BACKING_OFF ──Sent──▶ IN_FLIGHT
        └───────────────────┼─────────────┘ │                      │
        ▲                   └──Settled──────┘                      └──LoggedIn──▶ IDLE
        └──────────────Ended────────────────┘

What a caller gets (:func:`decide`) depends on how the held token fits the caller (:class:`Fit`) and on
the phase (:data:`DECISIONS`)::

    fit \\ phase   IDLE        IN_FLIGHT   BACKING_OFF
    FRESH          serve       serve       serve
    DUE            renew       join        serve            (still valid; the backoff timer retries)
    EXPIRED        renew       join        renew on demand  (at most every ON_DEMAND_RETRY s, never
                                                             before the server's Retry-After)

With nothing held (:func:`decide_unheld`), a grant that needs a person answers ``needs_login``; an
unattended one renews from ``NO_GRANT``, joins the request in flight, and after a failure retries on
demand exactly as for an expired token; a refused one answers ``needs_login`` until ``Retry``.

The rules those tables follow:

* **Serve what is good enough** (DESIGN rule 9). A token *fits* a caller who needs it for ``min_ttl``
  more seconds when it has ``min_ttl`` + :data:`EXPIRY_SKEW` left — capped at a third of its issued
  lifetime, so a 3-second token is served until its renewal point at 2 s, not renewed per request.
* **Renew ahead of expiry.** The timer renews at two thirds of the issued lifetime plus up to a tenth of
  jitter, never later than a margin (at most a third of the lifetime) before expiry.
* **Single flight** (DESIGN rule 2, T4). At most one renewal is in flight; every caller that needs one
  while it is out *joins* it. A renewal in flight is never duplicated, even when it is slow: a second one
  could spend the same refresh token.
* **Never make a caller wait long** (T5). A caller waits at most :data:`JOIN_WAIT` seconds, and never so
  long that a still-valid token expires while it waits; then it gets the valid token, or
  ``as_unreachable`` once the token has expired.
* **Transient is not definitive** (DESIGN rule 4). A failed renewal keeps the grant and backs off
  exponentially from :data:`BACKOFF_MIN` to :data:`BACKOFF_MAX` with full jitter; a server's
  ``Retry-After`` is a floor. Only an ended grant (``Ended``: ``invalid_grant`` and friends) drops it.
* **Recover as soon as the server does.** While a caller waits and the token has expired, a renewal may be
  tried again ahead of the backoff timer, at most once per :data:`ON_DEMAND_RETRY` seconds and never before
  ``Retry-After``.
* **Stopping takes no new exchanges** (DESIGN rule 10). A closed grant (the daemon is stopping, or a reload
  retired it) serves what it holds and lets the renewal in flight finish; it starts none.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "DECISIONS",
    "DEFAULT_LIFETIME",
    "EXPIRY_SKEW",
    "JOIN_WAIT",
    "ON_DEMAND_RETRY",
    "TRANSITIONS",
    "UNATTENDED_ONLY",
    "Action",
    "Closed",
    "Decision",
    "Ended",
    "Event",
    "Failed",
    "Fit",
    "Forgotten",
    "Held",
    "LoggedIn",
    "Phase",
    "Renewed",
    "Retry",
    "Sent",
    "Settled",
    "State",
    "Unattended",
    "backoff_delay",
    "decide",
    "decide_unheld",
    "due",
    "effective_min_ttl",
    "fit",
    "is_usable",
    "refresh_at",
    "renewable",
    "step",
    "wakeup",
]

REFRESH_FRACTION = 2 / 3
JITTER_FRACTION = 0.1
DEFAULT_MARGIN = 60.0
EXPIRY_SKEW = 1.0
DEFAULT_LIFETIME = 3600.0  # a token response without expires_in is treated as living this long
BACKOFF_MIN = 1.0
BACKOFF_MAX = 300.0

JOIN_WAIT = 2.0
"""How long a caller waits for a renewal before it takes the still-valid token or ``as_unreachable`` (well
under the thin client's 5 s timeout, and under the time an unresponsive authorization server takes to time
out)."""

ON_DEMAND_RETRY = 1.0
"""With an expired token, how often callers may retry a failed renewal ahead of the backoff timer."""


# ---- the schedule, as functions of time ------------------------------------------------------------


def refresh_at(
    obtained_at: float, expires_at: float | None, *, jitter: float, margin: float = DEFAULT_MARGIN
) -> float | None:
    """When a token obtained at ``obtained_at`` that expires at ``expires_at`` should be renewed.

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
    proactive renewal point — so that requests never renew a token earlier than the schedule would.
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


# ---- state -----------------------------------------------------------------------------------------


class Phase(enum.Enum):
    """Where a grant's renewal stands."""

    NO_GRANT = "no_grant"  # nothing held: a login is needed
    IDLE = "idle"  # a token is held; no renewal is out, and the last one (if any) worked
    IN_FLIGHT = "in_flight"  # a renewal was sent and has not ended (it is never cancelled)
    BACKING_OFF = "backing_off"  # the last renewal failed without ending the grant; retry at retry_at


@dataclass(frozen=True, slots=True)
class Held:
    """What the machine needs to know of the token held: its times, and whether it can be renewed with
    what it carries (a refresh token). A grant that needs no person (:attr:`State.unattended`) can be
    renewed whatever it carries: see :func:`renewable`."""

    obtained_at: float
    expires_at: float | None
    renewable: bool


@dataclass(frozen=True, slots=True)
class State:
    """One grant's renewal state. Replaced, never changed: see :func:`step`.

    ``planned_at`` is the proactive renewal point of the held token (its jitter drawn when it arrived);
    ``retry_at`` the backoff timer after ``failures`` failures in a row; ``not_before`` the last failure's
    ``Retry-After`` as a time; ``last_attempt`` when the last renewal was sent. ``unattended``: the grant
    needs no person, so a first token is had by renewing from ``NO_GRANT``; ``refused``: the authorization
    server refused such a grant's credentials, and they have not changed since.
    """

    phase: Phase = Phase.NO_GRANT
    held: Held | None = None
    planned_at: float | None = None
    failures: int = 0
    last_attempt: float | None = None
    retry_at: float | None = None
    not_before: float | None = None
    closed: bool = False
    unattended: bool = False
    refused: bool = False


# ---- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """A login (or an import, or a grant that needs no person) produced a token."""

    held: Held
    jitter: float


@dataclass(frozen=True, slots=True)
class Sent:
    """A renewal was sent at ``now``."""

    now: float


@dataclass(frozen=True, slots=True)
class Renewed:
    """The renewal in flight produced a token, now persisted."""

    held: Held
    jitter: float


@dataclass(frozen=True, slots=True)
class Failed:
    """The renewal in flight failed without ending the grant (network, timeout, 5xx, another 4xx)."""

    now: float
    jitter: float
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Ended:
    """The authorization server ended the grant (``invalid_grant``, ``invalid_client``, …)."""


@dataclass(frozen=True, slots=True)
class Settled:
    """The renewal in flight ended, but for a token a login has replaced meanwhile: its result is not
    used."""


@dataclass(frozen=True, slots=True)
class Forgotten:
    """The tokens were dropped on purpose (logout, invalidate, the server moved: D7)."""


@dataclass(frozen=True, slots=True)
class Unattended:
    """Whether the daemon can get this grant's tokens without a person (client credentials, a workload's
    token, an enterprise IdP grant that is held), as the config and the IdP say now. Becoming able again
    clears a refusal: the inputs changed."""

    able: bool = True


@dataclass(frozen=True, slots=True)
class Retry:
    """An unattended grant's credentials changed since the authorization server refused them (a reload, a
    new workload token, a person's ``login``): it may ask again."""


@dataclass(frozen=True, slots=True)
class Closed:
    """Take no new exchanges: the daemon is stopping, or a reload retired this grant (``closed=False``
    reopens it, when a reload brings the server back)."""

    closed: bool = True


Event = LoggedIn | Sent | Renewed | Failed | Ended | Settled | Forgotten | Closed | Unattended | Retry

_ANY = (Phase.NO_GRANT, Phase.IDLE, Phase.IN_FLIGHT, Phase.BACKING_OFF)

#: The phase each event leads to, by the phase it arrives in. An event missing here is a bug in the
#: actor (for example a renewal sent while one is in flight) and :func:`step` raises for it.
TRANSITIONS: dict[Phase, dict[type[Event], Phase]] = {
    Phase.NO_GRANT: {LoggedIn: Phase.IDLE, Forgotten: Phase.NO_GRANT, Sent: Phase.IN_FLIGHT},
    Phase.IDLE: {LoggedIn: Phase.IDLE, Sent: Phase.IN_FLIGHT, Forgotten: Phase.NO_GRANT},
    Phase.IN_FLIGHT: {
        Renewed: Phase.IDLE,
        Failed: Phase.BACKING_OFF,
        Ended: Phase.NO_GRANT,
        Settled: Phase.IDLE,
        LoggedIn: Phase.IN_FLIGHT,  # the exchange is still out; its answer will be Settled
    },
    Phase.BACKING_OFF: {
        LoggedIn: Phase.IDLE,
        Sent: Phase.IN_FLIGHT,
        Forgotten: Phase.NO_GRANT,
    },
}
for _phase in _ANY:
    TRANSITIONS[_phase][Closed] = _phase
    TRANSITIONS[_phase][Unattended] = _phase
    TRANSITIONS[_phase][Retry] = _phase

#: Transitions only an unattended grant that is not refused may take: the first token, had by renewing.
UNATTENDED_ONLY: frozenset[tuple[Phase, type[Event]]] = frozenset({(Phase.NO_GRANT, Sent)})


def step(state: State, event: Event) -> State:
    """The state after ``event``.

    Raises:
        ValueError: ``event`` cannot happen in ``state.phase`` (a bug in whoever sent it).
    """
    phase = TRANSITIONS[state.phase].get(type(event))
    if phase is None or (
        (state.phase, type(event)) in UNATTENDED_ONLY and (not state.unattended or state.refused)
    ):
        raise ValueError(f"{type(event).__name__} cannot happen while {state.phase.value}")
    match event:
        case LoggedIn(held=held, jitter=jitter) | Renewed(held=held, jitter=jitter):
            return replace(
                state,
                phase=phase,
                held=held,
                planned_at=_planned(held, jitter),
                failures=0,
                retry_at=None,
                not_before=None,
            )
        case Sent(now=now):
            return replace(state, phase=phase, last_attempt=now)
        case Failed(now=now, jitter=jitter, retry_after=retry_after):
            failures = state.failures + 1
            delay = backoff_delay(failures, jitter=jitter, retry_after=retry_after)
            return replace(
                state,
                phase=phase,
                failures=failures,
                retry_at=now + delay,
                not_before=None if retry_after is None else now + retry_after,
            )
        case Settled():
            return replace(state, phase=phase if state.held is not None else Phase.NO_GRANT)
        case Ended():
            return State(
                last_attempt=state.last_attempt,
                closed=state.closed,
                unattended=state.unattended,
                refused=state.unattended,
            )
        case Forgotten():
            return State(last_attempt=state.last_attempt, closed=state.closed, unattended=state.unattended)
        case Closed(closed=closed):
            return replace(state, closed=closed)
        case Unattended(able=able):
            return replace(state, unattended=able, refused=state.refused and (state.unattended or not able))
        case Retry():
            return replace(state, refused=False)
    raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover


def _planned(held: Held, jitter: float) -> float | None:
    # Planned whether or not it can be renewed now: a grant may become unattended later (an enterprise
    # IdP login arrives); wakeup() and decide() ask renewable().
    return refresh_at(held.obtained_at, held.expires_at, jitter=jitter)


def renewable(state: State) -> bool:
    """Whether the held token can be renewed without a person: it has a refresh token, or the grant needs
    no person at all (it asks again)."""
    return state.held is not None and (state.held.renewable or state.unattended)


def wakeup(state: State) -> float | None:
    """When the timer should renew without being asked: the planned point while idle, the backoff timer
    after a failure; None when nothing is due (no grant, nothing renewable, in flight, closed)."""
    if state.closed or not renewable(state):
        return None
    if state.phase is Phase.IDLE:
        return state.planned_at
    if state.phase is Phase.BACKING_OFF:
        return state.retry_at
    return None


def due(state: State, now: float) -> bool:
    """Whether the timer should start a renewal at ``now``."""
    at = wakeup(state)
    return at is not None and now >= at


# ---- decisions for a caller ------------------------------------------------------------------------


class Fit(enum.Enum):
    """How the held token fits one caller at one moment."""

    FRESH = "fresh"  # it has the life the caller needs (capped: rule 9)
    DUE = "due"  # still valid, but not for as long as the caller needs: renew if possible
    EXPIRED = "expired"  # past its expiry, or refused by the resource (a 401 for this very token)


class Action(enum.Enum):
    """What the actor does for a caller."""

    SERVE = "serve"  # hand out the held token
    RENEW = "renew"  # send a renewal, then wait for it at most ``wait`` s and decide again
    JOIN = "join"  # wait at most ``wait`` s for the renewal in flight, then decide again
    PAUSE = "pause"  # sleep ``wait`` s (the on-demand retry's spacing), then decide again
    UNREACHABLE = "unreachable"  # the token has expired and cannot be renewed now: as_unreachable
    NEEDS_LOGIN = "needs_login"  # nothing held, or an expired token nothing can renew
    STOPPING = "stopping"  # the token has expired and this grant takes no new exchanges


@dataclass(frozen=True, slots=True)
class Decision:
    """An :class:`Action`, how long it may wait, and (for the refusals) why, in words for a person."""

    action: Action
    wait: float = 0.0
    why: str = ""


#: The action for each (fit, phase) before the caller's waiting budget and the special cases below are
#: applied; ``None`` marks the on-demand retry of an expired token after a failure.
DECISIONS: dict[tuple[Fit, Phase], Action | None] = {
    (Fit.FRESH, Phase.IDLE): Action.SERVE,
    (Fit.FRESH, Phase.IN_FLIGHT): Action.SERVE,
    (Fit.FRESH, Phase.BACKING_OFF): Action.SERVE,
    (Fit.DUE, Phase.IDLE): Action.RENEW,
    (Fit.DUE, Phase.IN_FLIGHT): Action.JOIN,
    (Fit.DUE, Phase.BACKING_OFF): Action.SERVE,
    (Fit.EXPIRED, Phase.IDLE): Action.RENEW,
    (Fit.EXPIRED, Phase.IN_FLIGHT): Action.JOIN,
    (Fit.EXPIRED, Phase.BACKING_OFF): None,
}


def fit(held: Held, *, now: float, min_ttl: float, refused: bool = False) -> Fit:
    """How ``held`` fits a caller who needs ``min_ttl`` more seconds; ``refused``: the resource answered
    401 to this very token, so it counts as expired whatever its expiry says."""
    if refused or (held.expires_at is not None and held.expires_at <= now):
        return Fit.EXPIRED
    if is_usable(now, held.obtained_at, held.expires_at, min_ttl):
        return Fit.FRESH
    return Fit.DUE


def decide(
    state: State,
    *,
    now: float,
    min_ttl: float,
    asked_at: float,
    refused: bool = False,
    renewed: bool = False,
) -> Decision:
    """What to do for a caller who asked at ``asked_at`` for a token with ``min_ttl`` seconds left.

    ``refused``: the caller reports that the resource answered 401 to the held token (``token_rejected``).
    ``renewed``: the held token is not the one held when this caller asked (a renewal or a login ended
    while it waited). The actor asks again after every wait; a caller never waits past
    ``asked_at + JOIN_WAIT``.
    """
    held = state.held
    if state.phase is Phase.NO_GRANT or held is None:
        return decide_unheld(state, now=now, asked_at=asked_at)
    how = fit(held, now=now, min_ttl=min_ttl, refused=refused)
    expired = how is Fit.EXPIRED
    if renewed and how is not Fit.FRESH:
        # Renewed while this caller waited and still not fit: this is as good as it gets. (A server that
        # issues tokens with no life left must not send us renewing in a loop.)
        if expired:
            return Decision(Action.UNREACHABLE, why="the authorization server issued an expired token")
        return Decision(Action.SERVE)
    action = DECISIONS[(how, state.phase)]
    deadline = asked_at + JOIN_WAIT
    if not expired and held.expires_at is not None:  # never wait a valid token away
        deadline = min(deadline, held.expires_at - EXPIRY_SKEW)
    budget = max(0.0, deadline - now)

    if action is None:  # expired, after a failure: the on-demand retry
        retry = _on_demand(state, now=now, asked_at=asked_at, why="the last refresh failed")
        if retry is not None:
            return retry
        action = Action.RENEW
    if action is Action.RENEW:
        if not renewable(state):
            if expired:
                return Decision(Action.NEEDS_LOGIN, why="the token has expired and there is no refresh token")
            return Decision(Action.SERVE)
        if state.closed:
            if expired:
                return Decision(Action.STOPPING, why="the token has expired and the daemon is stopping")
            return Decision(Action.SERVE)
        return Decision(Action.RENEW, wait=budget)
    if action is Action.JOIN:
        if budget > 0:
            return Decision(Action.JOIN, wait=budget)
        if expired:
            return Decision(
                Action.UNREACHABLE, why="the authorization server is slow to answer; the refresh goes on"
            )
    return Decision(Action.SERVE)


def _on_demand(state: State, *, now: float, asked_at: float, why: str) -> Decision | None:
    """After a failure, with nothing fit to serve: None to renew now, else a pause or ``unreachable``."""
    next_try = max(
        (state.last_attempt or 0.0) + ON_DEMAND_RETRY,
        state.not_before if state.not_before is not None else 0.0,
    )
    if state.closed or now >= next_try:
        return None
    if next_try < asked_at + JOIN_WAIT:
        return Decision(Action.PAUSE, wait=next_try - now)
    return Decision(Action.UNREACHABLE, why=why)


def decide_unheld(state: State, *, now: float, asked_at: float) -> Decision:
    """What to do for a caller when no token is held (see the module docstring): a login for a grant that
    needs a person, or a refused one; for an unattended grant the first token, had like a renewal."""
    budget = max(0.0, asked_at + JOIN_WAIT - now)
    if state.phase is Phase.IN_FLIGHT:
        if budget > 0:
            return Decision(Action.JOIN, wait=budget)
        return Decision(
            Action.UNREACHABLE, why="the authorization server is slow to answer; the request goes on"
        )
    if not state.unattended:
        return Decision(Action.NEEDS_LOGIN, why="not logged in")
    if state.refused:
        return Decision(Action.NEEDS_LOGIN, why="the authorization server refused this grant's credentials")
    if state.closed:
        return Decision(Action.STOPPING, why="there is no token yet and the daemon is stopping")
    if state.phase is Phase.BACKING_OFF:
        retry = _on_demand(state, now=now, asked_at=asked_at, why="the last request for a token failed")
        if retry is not None:
            return retry
    elif state.last_attempt is not None and state.last_attempt >= asked_at:
        return Decision(Action.NEEDS_LOGIN, why="no token could be had")  # tried once for this caller
    return Decision(Action.RENEW, wait=budget)

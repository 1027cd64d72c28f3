"""The OAuth actor on trio's MockClock: hours of refreshes at exact deadlines, backoff, single flight, a
full disk, logout racing a refresh, and invalidation.

The token endpoint is an httpx MockTransport and the store is in memory: both are edges; the thing under
test is the actor and its scheduler (T3, T4, T5; DESIGN.md rules 2, 4, 7, 9).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Literal

import httpx
import pytest
import trio
import trio.testing

from brokerd.callback import CallbackHub
from brokerd.config import OAuthSettings, Server
from brokerd.grant import OAuthActor, OAuthContext
from brokerd.oauth import Registration, TokenSet
from brokerd.renewal import JOIN_WAIT, ON_DEMAND_RETRY
from brokerd.secret import Secret
from brokerd.store import ServerRecord
from brokerd.wire import LogoutResult, WireError
from tests.fakes import MemoryStore

URL = "http://127.0.0.1:9/mcp"
ISSUER = "http://127.0.0.1:9"
TOKEN_ENDPOINT = f"{ISSUER}/token"


class TokenEndpoint:
    """A token endpoint that rotates refresh tokens and detects replay like oidc-provider, and a
    revocation endpoint (RFC 7009) that records what it was sent. ``gate``, when set, holds refreshes
    until it fires."""

    def __init__(self, lifetime: int) -> None:
        self.lifetime = lifetime
        self.current = "rt-0"
        self.refresh_times: list[float] = []
        self.replays = 0
        self.fail_next = 0
        self.revoked: list[str] = []
        self.gate: trio.Event | None = None
        self.retry_after: str | None = "7"

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        if request.url.path == "/revoke":
            self.revoked.append(form["token"])
            return httpx.Response(200)
        self.refresh_times.append(trio.current_time())
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            return httpx.Response(503, headers={"retry-after": self.retry_after} if self.retry_after else {})
        if form.get("refresh_token") != self.current:
            self.replays += 1
            return httpx.Response(400, json={"error": "invalid_grant"})
        n = len(self.refresh_times)
        self.current = f"rt-{n}"
        body = {"access_token": f"at-{n}", "token_type": "Bearer", "expires_in": self.lifetime}
        return httpx.Response(200, content=json.dumps({**body, "refresh_token": self.current}))


def seeded_store(lifetime: float) -> MemoryStore:
    store = MemoryStore()
    store.records[URL] = ServerRecord(
        server_url=URL,
        tokens=TokenSet(
            access_token=Secret("at-0"),
            refresh_token=Secret("rt-0"),
            expires_at=lifetime,
            obtained_at=0.0,
            token_endpoint=TOKEN_ENDPOINT,
            issuer=ISSUER,
            resource=URL,
            client_id="client-1",
            revocation_endpoint=f"{ISSUER}/revoke",
        ),
        registrations={ISSUER: Registration(issuer=ISSUER, client_id="client-1")},
    )
    return store


SERVER = Server(
    name="s",
    kind="oauth",
    url=URL,
    oauth=OAuthSettings(
        scopes=None, callback_port=None, client_id=None, client_secret=None, client_metadata_url=None
    ),
    allow_insecure_loopback=True,
)


@pytest.fixture
async def harness() -> AsyncIterator[Callable[[float], tuple[OAuthActor, TokenEndpoint, MemoryStore]]]:
    async with trio.open_nursery() as nursery:

        def make(lifetime: float) -> tuple[OAuthActor, TokenEndpoint, MemoryStore]:
            endpoint = TokenEndpoint(int(lifetime))
            http = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
            ctx = OAuthContext(
                http=http,
                hub=CallbackHub(nursery),
                nursery=nursery,
                clock=trio.current_time,
                jitter=lambda: 0.0,
            )
            nursery.start_soon(ctx.scheduler.run, nursery)
            store = seeded_store(lifetime)
            return OAuthActor(SERVER, store, ctx), endpoint, store

        yield make
        nursery.cancel_scope.cancel()


async def test_hours_of_proactive_refreshes_at_exact_deadlines(
    harness: Callable[[float], tuple[OAuthActor, TokenEndpoint, MemoryStore]],
    autojump_clock: trio.testing.MockClock,  # pytest-trio runs the test on it only if the test asks
) -> None:
    """An hour-long token is refreshed every 2400 s (two thirds of its life), with no request needed."""
    actor, endpoint, store = harness(3600)
    await actor.get_token(30)  # loads the grant and plans the first refresh
    await trio.sleep(5 * 3600)
    assert endpoint.refresh_times == [2400.0 * k for k in range(1, 8)]
    assert endpoint.replays == 0
    record = store.records[URL]
    assert record.tokens is not None
    assert record.tokens.refresh_token == Secret(endpoint.current)  # persisted after every rotation
    assert (await actor.get_token(30)).token == Secret("at-7")


async def test_short_token_is_refreshed_once_per_two_thirds_of_its_life(
    harness: Callable[[float], tuple[OAuthActor, TokenEndpoint, MemoryStore]],
    autojump_clock: trio.testing.MockClock,  # pytest-trio runs the test on it only if the test asks
) -> None:
    """A 3-second token with callers asking every 100 ms: one refresh per 2 s, never one per request."""
    actor, endpoint, _ = harness(3)
    for _ in range(300):  # 30 s of requests
        answer = await actor.get_token(30)
        assert answer.expires_at is not None
        assert answer.expires_at - trio.current_time() >= 1.0  # capped min_ttl (1 s) respected
        await trio.sleep(0.1)
    assert len(endpoint.refresh_times) == 15
    assert endpoint.replays == 0


async def test_concurrent_callers_share_one_refresh(
    harness: Callable[[float], tuple[OAuthActor, TokenEndpoint, MemoryStore]],
    autojump_clock: trio.testing.MockClock,  # pytest-trio runs the test on it only if the test asks
) -> None:
    """Fifty callers needing a fresh token at once cause exactly one refresh (T4: never two in flight)."""
    actor, endpoint, _ = harness(3600)
    await trio.sleep(3590)
    tokens: list[Secret] = []

    async def ask() -> None:
        tokens.append((await actor.get_token(30)).token)

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(ask)
    assert len(endpoint.refresh_times) == 1
    assert set(tokens) == {Secret("at-1")}


async def test_outage_keeps_grant_serves_valid_token_then_as_unreachable_then_recovers(
    harness: Callable[[float], tuple[OAuthActor, TokenEndpoint, MemoryStore]],
    autojump_clock: trio.testing.MockClock,  # pytest-trio runs the test on it only if the test asks
) -> None:
    """503s keep the grant (T5): the valid token is served, then as_unreachable at once, then recovery."""
    actor, endpoint, _ = harness(60)
    await actor.get_token(0)
    endpoint.fail_next = 10_000
    await trio.sleep(50)  # the refresh at 40 s failed; Retry-After 7 s is honoured
    assert endpoint.refresh_times[0] == 40.0
    assert endpoint.refresh_times[1] == pytest.approx(47.0)
    assert (await actor.get_token(0)).token == Secret("at-0")  # still valid: served
    assert actor.status().state == "as_unreachable"
    assert actor.status().last_error_class == "transient"
    await trio.sleep(20)  # now expired
    start = trio.current_time()
    with pytest.raises(WireError) as err:
        await actor.get_token(0)
    assert err.value.code == "as_unreachable"
    assert "next try at" in err.value.message
    assert trio.current_time() == start  # answered at once, no hang
    endpoint.fail_next = 0
    await trio.sleep(400)  # backoff caps at 5 minutes
    assert (await actor.get_token(0)).token.reveal().startswith("at-")
    assert actor.status().state == "valid"
    assert endpoint.replays == 0


async def test_full_disk_keeps_rotated_tokens_in_memory_reports_degraded_and_recovers(
    harness: Callable[[float], tuple[OAuthActor, TokenEndpoint, MemoryStore]],
    autojump_clock: trio.testing.MockClock,  # pytest-trio runs the test on it only if the test asks
) -> None:
    """Rule 3 / T4: when the rotated grant cannot be written, the new tokens stay in memory and are served,
    status says degraded with the reason, the next refresh spends the new refresh token (no replay), and
    the write is retried until it succeeds."""
    actor, endpoint, store = harness(60)
    await actor.get_token(0)
    store.full = True
    await trio.sleep(41)  # the proactive refresh at 40 s rotates rt-0 -> rt-1, and cannot save it
    assert endpoint.current == "rt-1"
    assert (await actor.get_token(0)).token == Secret("at-1")
    status = actor.status()
    assert status.state == "degraded"
    assert "No space left on device" in (status.last_error or "")
    assert status.last_error_class == "store_write"
    saved = store.records[URL].tokens
    assert saved is not None
    assert saved.refresh_token == Secret("rt-0")  # the disk still has the old one
    await trio.sleep(40)  # the next refresh spends rt-1 from memory
    assert endpoint.replays == 0
    store.full = False
    await actor.get_token(0)  # a request retries the write
    assert actor.status().state == "valid"
    saved = store.records[URL].tokens
    assert saved is not None
    assert saved.refresh_token == Secret(endpoint.current)


async def test_logout_racing_a_refresh_revokes_the_new_grant_and_nothing_comes_back(
    harness: Callable[[float], tuple[OAuthActor, TokenEndpoint, MemoryStore]],
    autojump_clock: trio.testing.MockClock,  # pytest-trio runs the test on it only if the test asks
) -> None:
    """T6 with a refresh in flight: logout waits for it, revokes the refresh token it produced (not the
    spent one), and no later request brings the grant back."""
    actor, endpoint, store = harness(3600)
    endpoint.gate = trio.Event()
    await actor.get_token(0)
    await trio.sleep(2401)  # the proactive refresh (at 2400 s) is held at the token endpoint
    assert endpoint.refresh_times == [2400.0]
    answers: list[Secret | str] = []

    async def ask() -> None:
        try:
            answers.append((await actor.get_token(1200)).token)  # 1199 s left: joins the refresh
        except WireError as exc:
            answers.append(exc.code)

    logout: list[LogoutResult] = []

    async def log_out() -> None:
        logout.append(await actor.logout())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.sleep(1)  # the refresh is waiting at the token endpoint
        nursery.start_soon(log_out)
        await trio.sleep(1)
        assert not logout  # logout waits for the refresh in flight
        endpoint.gate.set()
    assert endpoint.revoked[0] == "rt-1"  # refresh token first, and the new one
    assert logout[0].had_grant is True
    # The caller waited JOIN_WAIT, then took the still-valid token (or got the new one, or, had the
    # logout finished first, needs_login): never a spent or revoked one.
    assert answers in ([Secret("at-0")], [Secret("at-1")], ["needs_login"])
    with pytest.raises(WireError) as err:
        await actor.get_token(0)
    assert err.value.code == "needs_login"
    record = store.records[URL]
    assert record.tokens is None
    assert ISSUER in record.registrations  # the client is kept for the next login
    assert endpoint.replays == 0


@pytest.mark.parametrize(
    ("what", "tokens_left", "client_left"),
    [("tokens", False, True), ("client", True, False), ("all", False, False)],
)
async def test_invalidate_forgets_locally_without_revoking(
    harness: Callable[[float], tuple[OAuthActor, TokenEndpoint, MemoryStore]],
    what: Literal["tokens", "client", "all"],
    tokens_left: bool,
    client_left: bool,
) -> None:
    """NCP's invalidateCredentials: forget tokens, the client registration, or both; nothing is sent to
    the authorization server (compare logout)."""
    actor, endpoint, store = harness(3600)
    result = await actor.invalidate(what)
    assert sorted(result.forgot) == sorted(
        [k for k, left in (("tokens", tokens_left), ("client", client_left)) if not left]
    )
    record = store.records[URL]
    assert (record.tokens is not None) == tokens_left
    assert bool(record.registrations) == client_left
    assert endpoint.revoked == []
    assert endpoint.refresh_times == []
    if not tokens_left:
        with pytest.raises(WireError) as err:
            await actor.get_token(0)
        assert err.value.hint == "ncp-broker login s"


async def test_a_stalled_refresh_keeps_callers_waiting_no_longer_than_the_join_wait(
    harness: Callable[[float], tuple[OAuthActor, TokenEndpoint, MemoryStore]],
    autojump_clock: trio.testing.MockClock,  # pytest-trio runs the test on it only if the test asks
) -> None:
    """T5: an authorization server that takes its time does not hold requests past JOIN_WAIT: the
    still-valid token is served, and once it has expired, as_unreachable comes just as fast."""
    actor, endpoint, _ = harness(60)
    await actor.get_token(0)
    endpoint.gate = trio.Event()  # the token endpoint accepts and never answers
    await trio.sleep(45)  # the refresh at 40 s is stuck
    start = trio.current_time()
    assert (await actor.get_token(30)).token == Secret("at-0")  # 15 s left, less than asked: still served
    assert trio.current_time() - start == JOIN_WAIT
    await trio.sleep(20)  # expired now
    start = trio.current_time()
    with pytest.raises(WireError) as err:
        await actor.get_token(0)
    assert err.value.code == "as_unreachable"
    assert trio.current_time() - start == JOIN_WAIT
    endpoint.gate.set()  # the attempt in flight (a retry: the first one timed out) is answered
    await trio.sleep(0.1)
    assert (await actor.get_token(0)).token not in (Secret("at-0"), Secret("at-1"))
    assert endpoint.replays == 0


async def test_expired_token_retries_on_demand_ahead_of_a_long_backoff(
    harness: Callable[[float], tuple[OAuthActor, TokenEndpoint, MemoryStore]],
    autojump_clock: trio.testing.MockClock,  # pytest-trio runs the test on it only if the test asks
) -> None:
    """T5: after a long outage the backoff timer may be minutes away; a request for an expired token tries
    again itself (at most every ON_DEMAND_RETRY s), so a recovered server is used at once. A server that
    said Retry-After is left alone until then."""
    actor, endpoint, _ = harness(60)
    actor.ctx.jitter = lambda: 1.0  # backoff at the top of its range, to reach the 5-minute cap quickly
    await actor.get_token(0)
    endpoint.retry_after = None
    endpoint.fail_next = 10_000
    await trio.sleep(900)  # 15 minutes of failures: the backoff is at its 5-minute cap
    status = actor.status()
    assert status.retry_at is not None
    assert status.retry_at - trio.current_time() > 60
    attempts = len(endpoint.refresh_times)
    endpoint.fail_next = 0  # the server is back
    with contextlib.suppress(WireError):
        await actor.get_token(0)  # within ON_DEMAND_RETRY of the last attempt? then as_unreachable
    await trio.sleep(ON_DEMAND_RETRY)
    assert (await actor.get_token(0)).token.reveal().startswith("at-")
    assert len(endpoint.refresh_times) <= attempts + 2  # one or two tries, not one per request
    assert actor.status().state == "valid"


async def test_retry_after_is_honoured_even_for_an_expired_token(
    harness: Callable[[float], tuple[OAuthActor, TokenEndpoint, MemoryStore]],
    autojump_clock: trio.testing.MockClock,  # pytest-trio runs the test on it only if the test asks
) -> None:
    """T5: when the server said Retry-After, requests do not retry before it, whatever ON_DEMAND_RETRY."""
    actor, endpoint, _ = harness(10)
    await actor.get_token(0)
    endpoint.retry_after = "120"
    endpoint.fail_next = 1
    await trio.sleep(20)  # failed at ~6.7 s with Retry-After 120; the token expired at 10 s
    attempts = len(endpoint.refresh_times)
    for _ in range(5):
        with pytest.raises(WireError):
            await actor.get_token(0)
        await trio.sleep(ON_DEMAND_RETRY)
    assert len(endpoint.refresh_times) == attempts

"""Nothing loses a grant, on trio's MockClock: a stop or a reload during a refresh, two names for one
server, recovery as soon as the server answers again, and a refresh whose answer never came (DESIGN
rules 3, 4, 10, 11, 13).

The token endpoint is an httpx MockTransport that rotates refresh tokens and detects replay like
oidc-provider; the store is in memory. The things under test are the actor and the broker.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import pytest
import trio
import trio.testing

from brokerd import config, wire
from brokerd.broker import Broker
from brokerd.callback import CallbackHub
from brokerd.grant import OAuthActor, OAuthContext
from brokerd.renewal import ON_DEMAND_RETRY
from brokerd.secret import Secret
from brokerd.store import RefreshSent, ServerRecord
from tests.daemon.test_refresh_schedule import SERVER, URL, TokenEndpoint, seeded_store
from tests.fakes import MemoryStore

_R = TypeVar("_R")


async def ask(broker: Broker, request: wire.Request, kind: type[_R]) -> _R:
    """``broker.handle(request)``, checked to be the answer type ``kind``."""
    result = await broker.handle(request)
    assert isinstance(result, kind), result
    return result


class LosingEndpoint(TokenEndpoint):
    """A token endpoint that can also rotate a refresh token and then lose the answer (``lose_next``), as
    when the connection breaks after the server acted on the request."""

    def __init__(self, lifetime: int) -> None:
        super().__init__(lifetime)
        self.lose_next = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        response = await super().__call__(request)
        if self.lose_next and response.status_code == 200 and request.url.path == "/token":
            self.lose_next -= 1
            raise httpx.ReadError("the connection broke before the answer arrived")
        return response


def context(nursery: trio.Nursery, endpoint: TokenEndpoint) -> OAuthContext:
    http = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    ctx = OAuthContext(
        http=http, hub=CallbackHub(nursery), nursery=nursery, clock=trio.current_time, jitter=lambda: 0.0
    )
    nursery.start_soon(ctx.scheduler.run, nursery)
    return ctx


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


async def test_a_stop_during_a_refresh_waits_for_its_answer_and_keeps_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Rule 10: cancelling the work nursery (what a stop does) while a refresh is at the server does not
    cancel it: the answer is received and persisted, so the next daemon refreshes with the new token."""
    endpoint = LosingEndpoint(60)
    endpoint.gate = trio.Event()
    store = seeded_store(60)
    async with trio.open_nursery() as outer:
        work_done = trio.Event()

        async def work() -> None:
            async with trio.open_nursery() as work_nursery:
                actor = OAuthActor(SERVER, store, context(work_nursery, endpoint))
                await actor.get_token(0)
                await trio.sleep(41)  # the proactive refresh at 40 s is at the server, held by the gate
                assert endpoint.refresh_times == [40.0]
                actor.close()  # the stop: no new exchanges
                work_nursery.cancel_scope.cancel()  # and everything else goes
            work_done.set()

        outer.start_soon(work)
        await trio.sleep(45)
        assert not work_done.is_set()  # the stop waits for the refresh in flight
        endpoint.gate.set()  # the server answers, late
        await work_done.wait()
    saved = store.records[URL].tokens
    assert saved is not None
    assert saved.refresh_token == Secret("rt-1")  # the rotated token made it to the store
    assert store.records[URL].refresh_sent is None  # answered: no "unanswered" mark left behind


async def test_a_caller_hanging_up_does_not_cancel_the_refresh(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A client that gives up mid-refresh cancels its own wait, not the refresh (single flight, rule 10)."""
    endpoint = TokenEndpoint(60)
    store = seeded_store(60)
    actor = OAuthActor(SERVER, store, context(nursery, endpoint))
    await trio.sleep(65)  # expired: the next caller must refresh
    endpoint.gate = trio.Event()
    with trio.move_on_after(0.5):
        await actor.get_token(0)  # the caller hangs up while the refresh is out
    endpoint.gate.set()
    await trio.sleep(1)
    assert (await actor.get_token(0)).token == Secret("at-1")
    assert endpoint.replays == 0


def broker_config(tmp_path: Path, servers: dict[str, Any]) -> config.Config:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return config.load(path)


def oauth_entry(url: str = URL, **oauth21: Any) -> dict[str, Any]:
    return {"url": url, "auth": {"type": "oauth", "oauth21": oauth21, "allowInsecureLoopback": True}}


async def test_a_reload_during_a_refresh_keeps_one_writer(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A reload that changes a server's settings while its refresh is out keeps the same actor: the
    refresh's answer lands in the grant the next refresh uses (before: two actors, a replay)."""
    endpoint = TokenEndpoint(60)
    endpoint.gate = trio.Event()
    store = seeded_store(60)
    cfg = broker_config(tmp_path, {"s": oauth_entry()})
    broker = Broker(cfg, store, oauth=context(nursery, endpoint), socket_path=tmp_path / "s.sock")
    actor = broker.actors["s"]
    await broker.handle(wire.GetToken(server="s", min_ttl=0))
    await trio.sleep(41)  # the refresh at 40 s is out
    assert cfg.path is not None
    cfg.path.write_text(json.dumps({"mcpServers": {"s": oauth_entry(scopes=["mcp:read", "mcp:write"])}}))
    assert broker.reload().changed == ["s"]
    assert broker.actors["s"] is actor
    endpoint.gate.set()  # answered at 41 s: the new token is planned for 41 + 40 s
    await trio.sleep(45)  # the next proactive refresh spends rt-1
    assert endpoint.refresh_times == [40.0, pytest.approx(81.0)]
    assert endpoint.replays == 0


async def test_a_server_removed_and_added_again_gets_its_old_actor_back(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A removed server's actor is closed (it refreshes no more) and kept aside: when a reload brings the
    server back, that actor — the grant's one writer — takes it up again."""
    endpoint = TokenEndpoint(60)
    store = seeded_store(60)
    cfg = broker_config(tmp_path, {"s": oauth_entry()})
    broker = Broker(cfg, store, oauth=context(nursery, endpoint), socket_path=tmp_path / "s.sock")
    actor = broker.actors["s"]
    await broker.handle(wire.GetToken(server="s", min_ttl=0))
    assert cfg.path is not None
    cfg.path.write_text(json.dumps({"mcpServers": {}}))
    broker.reload()
    await trio.sleep(100)
    assert endpoint.refresh_times == []  # closed: no refresh for a server nobody configures
    cfg.path.write_text(json.dumps({"mcpServers": {"t": oauth_entry(URL + "/")}}))
    broker.reload()
    assert broker.actors["t"] is actor
    assert (await ask(broker, wire.GetToken(server="t", min_ttl=0), wire.TokenResult)).token == Secret("at-1")
    assert endpoint.replays == 0


async def test_two_names_for_one_server_share_one_actor_and_one_chain(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Rule 11: entries that name one server (here with and without a trailing slash, another host case)
    reach one actor; concurrent callers of both names over many expiries cause one refresh per refresh
    point and no replay."""
    endpoint = TokenEndpoint(30)
    store = seeded_store(30)
    servers = {"a": oauth_entry(), "b": oauth_entry(URL.replace("http://", "HTTP://") + "/")}
    broker = Broker(
        broker_config(tmp_path, servers),
        store,
        oauth=context(nursery, endpoint),
        socket_path=tmp_path / "s.sock",
    )
    assert broker.actors["a"] is broker.actors["b"]
    seen: list[Secret] = []

    async def caller(name: str, every: float) -> None:
        for _ in range(int(600 / every)):
            seen.append((await ask(broker, wire.GetToken(server=name, min_ttl=5), wire.TokenResult)).token)
            await trio.sleep(every)

    async with trio.open_nursery() as callers:
        for i in range(4):
            callers.start_soon(caller, "a", 0.7 + i / 10)
            callers.start_soon(caller, "b", 0.9 + i / 10)
    assert endpoint.replays == 0
    assert len(endpoint.refresh_times) == 30  # 600 s of 30 s tokens, refreshed at 20 s: one per point
    status = await ask(broker, wire.Status(), wire.StatusResult)
    assert {s.name: s.aliases for s in status.servers} == {"a": ["b"], "b": ["a"]}


async def test_aliases_that_disagree_are_both_refused_and_the_others_work(tmp_path: Path) -> None:
    """Two entries for one server with different client ids or scopes: neither is used, both messages name
    both entries and the keys; a third server is unaffected."""
    servers = {
        "a": oauth_entry(clientId="one", scopes=["x"]),
        "b": oauth_entry(URL + "/", clientId="two", scopes=["x"]),
        "c": {"url": "https://other.example/mcp", "auth": {"type": "bearer", "token": "key-c"}},
    }
    store = MemoryStore()
    broker = Broker(broker_config(tmp_path, servers), store, socket_path=tmp_path / "s.sock")
    for name in ("a", "b"):
        with pytest.raises(wire.WireError) as err:
            await broker.handle(wire.GetToken(server=name))
        assert err.value.code == "config_conflict"
        assert "a and b" in err.value.message
        assert "auth.oauth21.clientId" in err.value.message
        assert "auth.oauth21.scopes" not in err.value.message
        assert "ncp-broker reload" in err.value.hint
    assert (await ask(broker, wire.GetToken(server="c"), wire.TokenResult)).token == Secret("key-c")
    status = await ask(broker, wire.Status(server="a"), wire.StatusResult)
    assert status.servers[0].state == "config_conflict"


async def test_a_secret_that_differs_is_named_never_shown(tmp_path: Path) -> None:
    """A differing client secret is named by its key; its value is in no message."""
    servers = {
        "a": oauth_entry(clientId="one", clientSecret="secret-value-a"),
        "b": oauth_entry(URL + "/", clientId="one", clientSecret="secret-value-b"),
    }
    broker = Broker(broker_config(tmp_path, servers), MemoryStore(), socket_path=tmp_path / "s.sock")
    with pytest.raises(wire.WireError) as err:
        await broker.handle(wire.GetToken(server="a"))
    assert "auth.oauth21.clientSecret" in err.value.message
    assert "secret-value" not in err.value.message + err.value.hint


async def test_recovery_within_a_second_of_the_server_answering_again(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Recover as soon as the server does: after a long outage (the backoff timer minutes away), callers
    with an expired token get one within ON_DEMAND_RETRY (+ their own polling) of the server's return."""
    endpoint = TokenEndpoint(60)
    endpoint.retry_after = None
    actor = OAuthActor(SERVER, seeded_store(60), context(nursery, endpoint))
    actor.ctx.jitter = lambda: 1.0  # backoff at the top of its range
    await actor.get_token(0)
    endpoint.fail_next = 10_000
    await trio.sleep(600)  # ten minutes of failures
    back_at = trio.current_time()
    endpoint.fail_next = 0
    attempts_before = len(endpoint.refresh_times)
    refusals: set[str] = set()
    while True:
        try:
            await actor.get_token(0)
            break
        except wire.WireError as exc:
            refusals.add(exc.code)
            await trio.sleep(0.1)  # a client retrying every 100 ms
    assert refusals <= {"as_unreachable"}
    assert trio.current_time() - back_at <= ON_DEMAND_RETRY + 0.1
    assert len(endpoint.refresh_times) - attempts_before == 1  # one attempt brought it back


async def test_a_refresh_that_got_no_answer_explains_the_ended_grant(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The server rotated the refresh token and the answer was lost: the retry presents the spent token,
    the server ends the grant, and needs_login says why (instead of only 'invalid_grant')."""
    endpoint = LosingEndpoint(60)
    endpoint.lose_next = 1
    store = seeded_store(60)
    actor = OAuthActor(SERVER, store, context(nursery, endpoint))
    await actor.get_token(0)
    await trio.sleep(41)  # the refresh at 40 s rotated rt-0 and its answer was lost
    mark = store.records[URL].refresh_sent
    assert mark is not None  # durably recorded before it was sent, and not cleared (no answer)
    await trio.sleep(30)  # the retry presents rt-0 again: a replay; the grant ends
    assert endpoint.replays == 1
    with pytest.raises(wire.WireError) as err:
        await actor.get_token(0)
    assert err.value.code == "needs_login"
    assert "got no answer" in err.value.message
    assert err.value.hint == "ncp-broker login s"
    assert "got no answer" in (actor.status().last_error or "")


async def test_a_previous_daemon_stopped_mid_refresh_is_named(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Item 4: a record that says a refresh of the current token was sent (by a daemon killed before the
    answer came) is presented once; when the server refuses it, the message says the daemon was stopped
    during a refresh after the server had rotated the token, and what to run."""
    endpoint = TokenEndpoint(60)
    endpoint.current = "rt-rotated-by-the-lost-refresh"  # the killed daemon's refresh was processed
    store = seeded_store(60)
    digest = hashlib.sha256(b"rt-0").hexdigest()[:16]
    store.records[URL].refresh_sent = RefreshSent(token_digest=digest, sent_at=35.0)
    actor = OAuthActor(SERVER, store, context(nursery, endpoint))
    await actor.start()
    assert "stopped during a refresh" in (actor.status().unanswered_refresh or "")
    await trio.sleep(41)
    assert len(endpoint.refresh_times) == 1  # presented once
    with pytest.raises(wire.WireError) as err:
        await actor.get_token(0)
    assert err.value.code == "needs_login"
    assert "the daemon was stopped during a refresh" in err.value.message
    assert err.value.hint == "ncp-broker login s"


async def test_a_stopping_grant_serves_what_it_holds_and_refuses_new_exchanges(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """While stopping: a valid token is served; an expired one gets `stopping`; so do login and logout."""
    endpoint = TokenEndpoint(60)
    broker = Broker(
        broker_config(tmp_path, {"s": oauth_entry()}),
        seeded_store(60),
        oauth=context(nursery, endpoint),
        socket_path=tmp_path / "s.sock",
    )
    await broker.handle(wire.GetToken(server="s", min_ttl=0))
    broker.begin_stop()
    assert (await ask(broker, wire.GetToken(server="s", min_ttl=0), wire.TokenResult)).token == Secret("at-0")
    await trio.sleep(70)
    assert endpoint.refresh_times == []  # the timer starts nothing
    for request in (wire.GetToken(server="s", min_ttl=0), wire.Login(server="s"), wire.Logout(server="s")):
        with pytest.raises(wire.WireError) as err:
            await broker.handle(request)
        assert err.value.code == "stopping", request
        assert "ncp-broker start" in err.value.hint
    assert (await ask(broker, wire.Hello(), wire.HelloResult)).stopping is True


@pytest.mark.parametrize("names", [("a",), ("a", "b")])
async def test_logout_through_an_alias_says_which_names_share_the_grant(
    tmp_path: Path, nursery: trio.Nursery, names: tuple[str, ...]
) -> None:
    """logout and invalidate act on the one grant and answer with its other names."""
    endpoint = TokenEndpoint(3600)
    servers = {name: oauth_entry(URL + "/" * i) for i, name in enumerate(names)}
    broker = Broker(
        broker_config(tmp_path, servers),
        seeded_store(3600),
        oauth=context(nursery, endpoint),
        socket_path=tmp_path / "s.sock",
    )
    answer = await ask(broker, wire.Logout(server=names[-1]), wire.LogoutResult)
    assert answer.aliases == list(names[:-1])
    assert answer.had_grant is True
    with pytest.raises(wire.WireError) as err:
        await broker.handle(wire.GetToken(server=names[0]))
    assert err.value.code == "needs_login"


async def test_a_grant_is_refreshed_on_schedule_before_its_first_request(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The broker loads every grant at start, so the timer renews it even if no client ever asks."""
    endpoint = TokenEndpoint(60)
    store = seeded_store(60)
    Broker(
        broker_config(tmp_path, {"s": oauth_entry()}),
        store,
        oauth=context(nursery, endpoint),
        socket_path=tmp_path / "s.sock",
    )
    await trio.sleep(100)
    assert endpoint.refresh_times == [40.0, pytest.approx(80.0)]
    saved = store.records[URL].tokens
    assert saved is not None
    assert saved.refresh_token == Secret("rt-2")


async def test_answer_now_is_what_handle_would_answer(
    tmp_path: Path, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The socket server's answer-at-once hook never answers differently from the handler: at every
    moment of a grant's life (fresh, due, refreshing, expired, failing, stopping) an answer from
    ``answer_now`` equals ``handle``'s, and it answers nothing that would need waiting."""
    endpoint = TokenEndpoint(60)
    servers = {
        "s": oauth_entry(),
        "k": {"url": "https://k.example/mcp", "auth": {"type": "bearer", "token": "key-k"}},
    }
    broker = Broker(
        broker_config(tmp_path, servers),
        seeded_store(60),
        oauth=context(nursery, endpoint),
        socket_path=tmp_path / "s.sock",
    )
    requests: list[wire.Request] = [
        wire.GetToken(server="s", min_ttl=0),
        wire.GetToken(server="s", min_ttl=30),
        wire.GetToken(server="k"),
        wire.GetToken(server="s", method="POST", url=URL),
        wire.GetToken(server="k", method="POST", url="https://k.example/mcp"),
        wire.Hello(),
        wire.ListServers(),
        wire.Status(server="s"),
    ]
    answered_now = 0

    async def compare() -> None:
        nonlocal answered_now
        for request in requests:
            now = broker.answer_now(request)
            if now is not None:
                answered_now += 1
                assert now == await broker.handle(request), request

    await trio.sleep(1)  # loaded at start
    await compare()  # fresh
    await trio.sleep(35)
    await compare()  # near the refresh point
    endpoint.fail_next = 10_000
    await trio.sleep(40)
    await compare()  # the refresh failed, the token expired: nothing for "s" at once
    assert broker.answer_now(wire.GetToken(server="s", min_ttl=0)) is None
    endpoint.fail_next = 0
    endpoint.gate = trio.Event()
    await trio.sleep(400)
    await compare()  # a refresh in flight
    endpoint.gate.set()
    await trio.sleep(1)
    broker.begin_stop()
    await compare()  # stopping
    assert answered_now >= 15


class SlowStore(MemoryStore):
    """A store whose saves take time in the event loop, as the real ones do (a worker thread, fsync):
    ``delay(record)`` says how long each one takes."""

    def __init__(self, delay: Callable[[ServerRecord], float]) -> None:
        super().__init__()
        self.delay = delay

    async def save(self, record: ServerRecord) -> None:
        await trio.sleep(self.delay(record))
        await super().save(record)


async def test_overlapping_saves_land_in_order(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Rule 3: two saves of one grant at once (a retried write and a renewal's, say) are written one after
    the other, each with the state at its turn — an older token set never lands last."""
    seeded = seeded_store(60)
    slow = SlowStore(lambda r: 2.0 if r.tokens and r.tokens.access_token == Secret("at-old") else 0.1)
    slow.records = seeded.records
    actor = OAuthActor(SERVER, slow, context(nursery, TokenEndpoint(60)))
    await actor.grant.load()
    held = actor.grant.tokens
    assert held is not None
    old = msgspec.structs.replace(held, access_token=Secret("at-old"))
    new = msgspec.structs.replace(held, access_token=Secret("at-new"))
    async with trio.open_nursery() as saves:
        saves.start_soon(actor.grant.save, old)
        await trio.sleep(0.5)
        saves.start_soon(actor.grant.save, new)
    stored = slow.records[URL].tokens
    assert stored is not None
    assert stored.access_token == Secret("at-new")


async def test_a_renewal_may_start_while_the_last_one_still_saves(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A failed refresh ends when the machine says so (backing off), even while its task still saves; a
    caller's on-demand retry a second later starts the next one (it used to find the old one registered
    and fail with `internal`), and it succeeds once the server answers."""
    endpoint = TokenEndpoint(60)
    endpoint.retry_after = None
    seeded = seeded_store(60)

    def delay(record: ServerRecord) -> float:  # the save after the 503 (at-0 held, the mark cleared) is slow
        tokens = record.tokens
        failing = record.refresh_sent is None and tokens is not None and tokens.access_token == Secret("at-0")
        return 1.5 if failing else 0.0

    slow = SlowStore(delay)
    slow.records = seeded.records
    actor = OAuthActor(SERVER, slow, context(nursery, endpoint))
    await actor.grant.load()
    endpoint.fail_next = 1
    # The resource refused at-0 (a 401): it counts as expired. The refresh is refused with a 503 and its
    # failure takes 1.5 s to save; the caller's on-demand retry a second later starts the next refresh
    # meanwhile (its first save waits for the last one), which the server answers.
    assert (await actor.token_rejected(Secret("at-0"))).token == Secret("at-2")
    assert len(endpoint.refresh_times) == 2
    assert endpoint.replays == 0

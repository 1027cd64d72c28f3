"""One refresh chain per server (issue 4), against the real oidc-provider with 3-second access tokens.

The authorization server rotates refresh tokens strictly: a consumed refresh token presented again is a
replay, and it revokes the whole grant (docs/testing-servers.md). So every test here asks the server
itself, through its admin counters, whether it saw a replay or a revoked grant, how many refreshes and
authorizations it served; the thin clients only report what they were answered.

- stress: threads calling ``ncp_client.get_token`` and ``ncp-token`` processes in loops, across many
  expiries: every request answered, one chain (T3, T4);
- ``kill -9`` of the daemon between refreshes and in the middle of one: the grant survives (T4, rule 5);
- an outage of the authorization server (503, stall, process gone): a valid token is still served, an
  expired one is ``as_unreachable`` at once, and the grant survives the outage (T5, rule 4); a caller
  waiting on a stalled refresh never gets a token that expired meanwhile;
- ``invalid_grant``: ``needs_login`` with the command, then one authorization for many waiting callers (T5).

Not here: a token response without ``expires_in`` — oidc-provider always sends it and the test server has
no switch to drop it; the pure core's tests cover that case (schedule.DEFAULT_LIFETIME).
"""

from __future__ import annotations

import os
import pty
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest

import ncp_client
from tests.harness import (
    LOGIN_TIMEOUT,
    NAME,
    Env,
    Stack,
    StackFactory,
    digest,
    jwt_claims,
    sleep_past,
    tool_names,
    wait_until,
)
from tests.servers.helpers import McpError, McpSession

if TYPE_CHECKING:
    from tests.servers.fixtures import McpServer, OidcServer

pytestmark = pytest.mark.integration

TTL = 3  # access-token lifetime at the authorization server, seconds
# DESIGN.md rule 9 and brokerd/renewal.py: a token is refreshed at two thirds of its issued lifetime. The
# jitter (up to a tenth) is capped by the margin of a third of the lifetime, and a request refreshes at the
# same point (it needs min(min_ttl + 1 s, lifetime / 3) left), so for a 3-second token every refresh
# starts exactly 2 s after the previous token arrived — never earlier.
REFRESH_INTERVAL = TTL * 2 / 3
NO_HANG = 5.0  # a generous bound for "answered at once, not after a timeout"


@pytest.fixture
def broker(stack: StackFactory) -> Stack:
    """A daemon serving ``srv`` (3-second tokens, strict rotation, MCP answers as JSON), logged in."""
    return stack(ttl=TTL, json_response=True)


# ---- load -----------------------------------------------------------------------------------------------


@dataclass
class Call:
    """One request for a token: monotonic start/end (comparable across processes on Linux), wall start."""

    who: str
    start: float
    end: float
    wall: float
    token: str | None = field(default=None, repr=False)
    error: str | None = None  # exception class or ncp-token exit status when there is no token


@dataclass
class Sample:
    """A token used at once against the MCP server: accepted, or refused with the HTTP status."""

    token: str = field(repr=False)
    used_at: float  # wall clock just after the MCP server answered
    status: int | None = None  # None: accepted


@dataclass
class Load:
    """Threads calling ``ncp_client.get_token``, threads each running ``ncp-token srv`` processes one after
    another, and a sampler that uses a token at the MCP server every few hundred milliseconds; until
    ``stop()``, and never longer than ``limit`` seconds."""

    env: Env
    mcp_url: str
    threads: int = 8
    processes: int = 3
    limit: float = 60.0
    calls: list[Call] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.limit

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def _get_token(self, who: str) -> Call:
        start, wall = time.monotonic(), time.time()
        try:
            token = ncp_client.get_token(NAME, socket_path=self.env.socket, timeout=10)
        except ncp_client.BrokerError as exc:
            return Call(who, start, time.monotonic(), wall, error=f"{type(exc).__name__}({exc.code})")
        return Call(who, start, time.monotonic(), wall, token=token)

    def _thread(self, who: str) -> None:
        rng = random.Random(who)  # noqa: S311 - pacing, not a secret
        while self._running():
            self._record(self._get_token(who))
            time.sleep(rng.uniform(0.005, 0.03))

    def _process(self, who: str) -> None:
        while self._running():
            start, wall = time.monotonic(), time.time()
            done = subprocess.run(
                [sys.executable, "-m", "ncp_client._cli", NAME],
                env=self.env.vars,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            end = time.monotonic()
            if done.returncode == 0:
                self._record(Call(who, start, end, wall, token=done.stdout.strip()))
            else:
                self._record(Call(who, start, end, wall, error=f"exit {done.returncode}"))

    def _sampler(self) -> None:
        with httpx.Client(timeout=10, trust_env=False) as http:
            session: McpSession | None = None
            while self._running():
                call = self._get_token("sampler")
                self._record(call)
                if call.token is not None:
                    try:
                        if session is None:
                            session = McpSession(http, self.mcp_url, call.token)
                            session.initialize()
                        session.token = call.token
                        session.request("tools/list")
                        sample = Sample(call.token, time.time())
                    except McpError as exc:
                        sample = Sample(call.token, time.time(), exc.status)
                        session = None
                    with self._lock:
                        self.samples.append(sample)
                self._stop.wait(0.3)

    def start(self) -> None:
        targets = [(self._thread, f"thread-{i}") for i in range(self.threads)]
        targets += [(self._process, f"ncp-token-{i}") for i in range(self.processes)]
        self._workers = [threading.Thread(target=fn, args=(who,), daemon=True) for fn, who in targets]
        self._workers.append(threading.Thread(target=self._sampler, daemon=True))
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(60)
            assert not worker.is_alive(), "a load worker did not stop"


# ---- checks ---------------------------------------------------------------------------------------------


def check_tokens(calls: list[Call], oidc: OidcServer, mcp: McpServer) -> list[str]:
    """Every token handed out is a JWT from this issuer for this server, not expired when asked for (T2,
    T3), and no request started after a newer token was handed out got an older one: each caller gets the
    current token of the one chain (T4). Returns the distinct tokens, oldest first."""
    answered = [(call, call.token) for call in calls if call.token is not None]
    issued: dict[str, tuple[int, float]] = {}  # token -> (iat, first handed out)
    for call, token in answered:
        c = jwt_claims(token)
        assert c["iss"] == oidc.issuer
        assert c["aud"] == mcp.url
        # iat is rounded down to a whole second at the server, so its exp can be up to a second before
        # the expiry the daemon computed from expires_in; the daemon hands out a token with at least a
        # second left by its own count.
        assert c["exp"] > call.wall - 1, f"token {digest(token)} had expired when it was asked for"
        first = issued.get(token)
        issued[token] = (int(c["iat"]), min(call.end, first[1]) if first else call.end)
    order = sorted(issued, key=lambda t: issued[t])
    generation = {token: n for n, token in enumerate(order)}
    by_end = sorted(((call.end, generation[token]) for call, token in answered), key=lambda e: e[0])
    newest_done, i = -1, 0
    for call, token in sorted(answered, key=lambda a: a[0].start):
        while i < len(by_end) and by_end[i][0] < call.start:
            newest_done = max(newest_done, by_end[i][1])
            i += 1
        got = generation[token]
        assert got >= newest_done, (
            f"{call.who} started at {call.start:.3f} after token #{newest_done} had been handed out, "
            f"and got the older #{got}"
        )
    return order


def check_samples(samples: list[Sample]) -> None:
    """The MCP server accepted every sampled token, except one whose own ``exp`` had passed by the time
    it was used: with 3-second tokens, one handed out just before its refresh point has 0-1 s left by the
    server's whole-second clock (schedule.py), which is what BrokerAuth's retry on 401 is for."""
    assert samples, "the sampler never got to use a token"
    for sample in samples:
        if sample.status is not None:
            exp = jwt_claims(sample.token)["exp"]
            assert sample.status == 401, sample
            assert sample.used_at >= exp, f"the MCP server refused an unexpired token {digest(sample.token)}"
    assert any(s.status is None for s in samples), "the MCP server accepted no sampled token"


def check_one_chain(stats: dict[str, Any], *, logged_in_at: float, read_at: float) -> int:
    """No replay, no revoked grant, one login; every refresh request the server processed rotated the
    token; returns the number of refreshes, after checking it against the schedule's upper bound.

    Bound: refresh k starts no earlier than 2/3·TTL after token k-1 arrived (see REFRESH_INTERVAL), and
    the login's token arrived after ``logged_in_at``; the server counts a refresh when it arrives. So by
    ``read_at`` at most ``(read_at - logged_in_at) / (2/3·TTL)`` refreshes can have been counted: more
    means refreshes outside the one chain (duplicates, or refreshes before the refresh point).
    """
    assert stats["replay_detected"] == 0, stats
    assert stats["grants_revoked"] == 0, stats
    assert stats["token_requests"].get("authorization_code") == 1, stats
    assert stats["token_errors"] == {}, stats
    refreshes: int = stats["token_success"].get("refresh_token", 0)
    assert stats["refresh_tokens_consumed"] == refreshes, stats
    bound = int((read_at - logged_in_at) / REFRESH_INTERVAL)
    assert refreshes <= bound, f"{refreshes} refreshes in {read_at - logged_in_at:.1f} s (at most {bound})"
    return refreshes


# ---- a. stress ------------------------------------------------------------------------------------------

STRESS_SECONDS = 15.0


def test_t3_t4_many_clients_share_one_refresh_chain(env: Env, broker: Stack) -> None:
    """T3/T4 under load: 8 threads (`ncp_client.get_token`) and 3 loops of `ncp-token` processes across
    ~7 expiries of a 3-second token: every request is answered with the current token of one chain, the
    server sees no replay, and the refresh count follows the 2/3-lifetime schedule."""
    oidc, mcp = broker.oidc, broker.mcp
    load = Load(env, mcp.url, limit=STRESS_SECONDS + 30)
    started = time.monotonic()
    load.start()
    try:
        time.sleep(STRESS_SECONDS)
    finally:
        load.stop()
    ran = time.monotonic() - started
    stats = oidc.stats()
    read_at = time.time()  # after the counters were read: a refresh counted there started before this

    errors = [f"{c.who}: {c.error}" for c in load.calls if c.error is not None]
    assert not errors, errors[:10]
    assert len(load.calls) > 100, len(load.calls)
    assert any(c.who.startswith("ncp-token") for c in load.calls)
    tokens = check_tokens(load.calls, oidc, mcp)
    check_samples(load.samples)
    refreshes = check_one_chain(stats, logged_in_at=broker.logged_in_at, read_at=read_at)
    # Every token handed out came from the login or a refresh; and since none is handed out past its
    # expiry (checked above), the run needed a new one at least every TTL seconds.
    assert refreshes >= len(tokens) - 1
    assert len(tokens) >= int(ran / TTL), (len(tokens), ran)
    assert stats["token_requests"]["refresh_token"] == refreshes  # nothing refused, stalled or repeated
    assert broker.status()["state"] in ("valid", "refreshing")
    log = broker.daemon.log_text()
    leaked = [digest(token) for token in tokens if token in log]
    assert not leaked, "tokens in the daemon's log"


# ---- b. kill -9 -----------------------------------------------------------------------------------------

KILLS = 3
SAFE_MARGIN = 1.0  # seconds before a due refresh in which no random kill is made (see below)
OUTAGE_ERRORS = ("BrokerNotRunning", "ProtocolError", "exit 3", "exit 7")


def kill_between_refreshes(broker: Stack) -> tuple[float, float]:
    """SIGKILL the daemon while no refresh is in flight or due within SAFE_MARGIN, and start a new one;
    returns the outage (monotonic start, end).

    Why not any moment: from the instant the server rotates the refresh token until the daemon has
    fsynced the new one (a few milliseconds), a kill loses the only valid refresh token, and the next
    daemon can present only the consumed one. A rotation-strict server calls that a replay and ends the
    grant, whatever the client does. A kill while the request is still unprocessed is survivable, and
    kill_during_refresh makes one deterministically.
    """
    broker.wait_for_status(
        f"no refresh in flight or due within {SAFE_MARGIN} s",
        lambda s: (
            s["state"] == "valid"
            and s.get("next_refresh") is not None
            and s["next_refresh"] - time.time() > SAFE_MARGIN
        ),
        10,
    )
    start = time.monotonic()
    broker.kill()
    broker.restart()
    return start, time.monotonic()


def kill_during_refresh(broker: Stack) -> tuple[float, float]:
    """SIGKILL the daemon while its refresh request is held, unprocessed, at the token endpoint; then the
    server drops that request (the refresh token stays unspent) and a new daemon starts."""
    oidc = broker.oidc
    oidc.set_token_endpoint("stall", seconds=30, grant_types=["refresh_token"], count=1)
    wait_for_stalled_refresh(oidc, TTL + NO_HANG)
    assert broker.quick_status()["state"] == "refreshing"
    start = time.monotonic()
    broker.kill()
    oidc.set_token_endpoint("ok")  # releases the held request: dropped without being processed
    broker.restart()
    return start, time.monotonic()


def test_t4_grant_survives_kill_9_between_and_during_refreshes(env: Env, broker: Stack) -> None:
    """T4, rule 5: `kill -9` of the daemon at random moments of a run with a refresh every 2 s, and once
    with its refresh request in flight; each time a new daemon continues the chain from the store: no
    login, no replay at the server, and outside the outages every request gets the current token."""
    oidc, mcp = broker.oidc, broker.mcp
    rng = random.Random()  # noqa: S311 - when to kill, not a secret
    load = Load(env, mcp.url, threads=4, processes=2, limit=90)
    outages: list[tuple[float, float]] = []
    load.start()
    try:
        for _ in range(KILLS):
            time.sleep(REFRESH_INTERVAL + rng.uniform(0, REFRESH_INTERVAL))  # a refresh between kills
            outages.append(kill_between_refreshes(broker))
        outages.append(kill_during_refresh(broker))
        time.sleep(2 * REFRESH_INTERVAL)  # the last daemon refreshes on its own, twice
    finally:
        load.stop()
    stats = oidc.stats()
    read_at = time.time()

    def in_outage(call: Call) -> bool:
        return any(call.start <= end and call.end >= start for start, end in outages)

    unexpected = [
        f"{c.who}: {c.error}"
        for c in load.calls
        if c.error is not None and not (in_outage(c) and c.error.startswith(OUTAGE_ERRORS))
    ]
    assert not unexpected, unexpected[:10]
    last = outages[-1][1]
    assert sum(c.token is not None and c.start > last for c in load.calls) > 10
    tokens = check_tokens(load.calls, oidc, mcp)
    check_samples(load.samples)
    refreshes = check_one_chain(stats, logged_in_at=broker.logged_in_at, read_at=read_at)
    assert refreshes >= len(tokens) - 1
    assert stats["token_stalled"] == 1
    # The held request was counted on arrival but never processed; every other one was.
    assert stats["token_requests"]["refresh_token"] == refreshes + 1
    assert stats["registrations"] == 1
    assert broker.status()["state"] in ("valid", "refreshing")


# ---- c. outage of the authorization server --------------------------------------------------------------

OUTAGE_TTL = 6  # room to see a valid token served after a failed refresh (at 4 s) and before expiry


def timed_get_token(env: Env) -> tuple[str | ncp_client.BrokerError, float]:
    """``get_token`` with the client's default timeout: the token or the error, and how long it took."""
    start = time.monotonic()
    try:
        token: str | ncp_client.BrokerError = ncp_client.get_token(NAME, socket_path=env.socket)
    except ncp_client.BrokerError as exc:
        token = exc
    return token, time.monotonic() - start


def expect_unreachable(env: Env) -> None:
    """A caller with an expired token is told `as_unreachable` at once, not after a timeout."""
    answer, took = timed_get_token(env)
    assert isinstance(answer, ncp_client.AuthServerUnreachable), answer
    assert answer.code == "as_unreachable"
    assert f"ncp-broker status {NAME}" in answer.hint
    assert took < NO_HANG, f"as_unreachable took {took:.1f} s"


def wait_for_stalled_refresh(oidc: OidcServer, timeout: float) -> None:
    """Wait until a refresh request is held at the token endpoint by the ``stall`` switch."""
    wait_until(
        lambda: oidc.stats()["token_stalled"] >= 1,
        timeout,
        message=lambda: f"a refresh held at the token endpoint (server stats: {oidc.stats()})",
    )


def test_t5_rule4_outage_keeps_the_grant_and_answers_at_once(env: Env, stack: StackFactory) -> None:
    """T5, rule 4: while the token endpoint answers 503, and while the server process is gone, the grant
    is kept; the still-valid token is served; past its expiry callers get `as_unreachable` (ncp-token exit
    6) at once, with the status command in the hint; status shows the state, the last error and the retry
    time; when the server is back, a fresh token comes by that retry time, without a login."""
    broker = stack(ttl=OUTAGE_TTL, json_response=True)
    oidc, mcp = broker.oidc, broker.mcp
    first = ncp_client.get_token(NAME, socket_path=env.socket)
    oidc.set_token_endpoint("503", grant_types=["refresh_token"])

    # 503: the proactive refresh at 4 s fails; the grant is kept and the valid token served.
    broker.wait_for_status("a failed refresh", lambda s: s.get("last_error_class") == "transient", OUTAGE_TTL)
    answer, took = timed_get_token(env)
    same = answer == first
    assert same, "not the valid token"
    assert took < NO_HANG
    served = env.run("ncp-token", NAME)
    assert served.returncode == 0, served.stderr
    same = served.stdout.strip() == first
    assert same, "ncp-token printed another token"
    status = broker.status()
    assert status["state"] == "as_unreachable", status
    assert status["retry_at"] > time.time() - NO_HANG
    assert "503" in status["last_error"], status["last_error"]

    # Past expiry: as_unreachable at once, from the library and from ncp-token.
    sleep_past(status["expires_at"], 0.2)
    expect_unreachable(env)
    refused = env.run("ncp-token", NAME)
    assert refused.returncode == 6, refused.stderr
    assert f"ncp-broker status {NAME}" in refused.stderr
    status = broker.status()
    assert status["state"] in ("as_unreachable", "refreshing"), status
    assert status["last_error_class"] == "transient"
    assert "retry_at" in status

    # The server process is gone: connections refused.
    oidc.stop()
    for _ in range(3):
        expect_unreachable(env)
        time.sleep(0.3)
    gone = env.run("ncp-token", NAME)
    assert gone.returncode == 6, gone.stderr
    assert broker.status()["state"] in ("as_unreachable", "refreshing")

    # Back (same issuer, grants persisted): a fresh token by the announced retry time, no login.
    oidc.start()
    retry_at = broker.quick_status().get("retry_at") or time.time()

    def fresh_token() -> str | None:
        got, took = timed_get_token(env)
        assert took < NO_HANG
        if isinstance(got, str):
            return got
        assert isinstance(got, ncp_client.AuthServerUnreachable), got
        return None

    back = wait_until(
        fresh_token,
        max(0.0, retry_at - time.time()) + NO_HANG,
        interval=0.2,
        message=lambda: f"a token by the retry time (status: {broker.quick_status()})",
    )
    fresh = back != first
    assert fresh, "the expired token again"
    stats = oidc.stats()  # the counters restarted with the process
    assert stats["token_success"].get("refresh_token") == 1
    assert stats["replay_detected"] == 0
    assert "authorization_code" not in stats["token_requests"]
    assert tool_names(mcp.url, back)
    status = broker.status()
    assert status["state"] == "valid", status
    assert status.get("last_error") is None  # left out when nothing went wrong
    assert status.get("retry_at") is None


def test_rule4_stalled_token_endpoint_does_not_hold_callers(env: Env, stack: StackFactory) -> None:
    """Rule 4, T5: while a refresh request hangs at the token endpoint, a caller is served the still-valid
    token at once (and never one that has expired meanwhile), and after its expiry is told
    `as_unreachable` at once."""
    oidc = stack(ttl=OUTAGE_TTL, json_response=True).oidc
    first = ncp_client.get_token(NAME, socket_path=env.socket)
    oidc.set_token_endpoint("stall", seconds=60, grant_types=["refresh_token"])
    wait_for_stalled_refresh(oidc, OUTAGE_TTL + NO_HANG)  # the proactive refresh at 4 s is held
    start = time.monotonic()
    answer = ncp_client.call({"op": "get_token", "server": NAME}, socket_path=env.socket)
    took = time.monotonic() - start
    same = answer["token"] == first
    assert same, "not the valid token"
    assert took < NO_HANG
    sleep_past(jwt_claims(first)["exp"], 1)
    expect_unreachable(env)
    assert answer["expires_in"] > 0, "the token came back expired"


# ---- d. invalid_grant -----------------------------------------------------------------------------------


def test_t5_invalid_grant_needs_login_then_one_authorization_for_every_waiting_caller(
    env: Env, broker: Stack
) -> None:
    """T5: a grant the server revoked ends at the next refresh: `needs_login` naming the command (exit 5
    from ncp-token), status `needs_login`; then two `ncp-broker login`, an `ncp-token` on a terminal and a
    library `login` waiting at once share one authorization, and all get a token."""
    oidc, mcp = broker.oidc, broker.mcp
    first = ncp_client.get_token(NAME, socket_path=env.socket)
    revoked_at = time.time()
    assert oidc.revoke_all() == 1
    sleep_past(jwt_claims(first)["exp"], 0.5)

    with pytest.raises(ncp_client.NeedsLogin) as ended:
        ncp_client.get_token(NAME, socket_path=env.socket)
    assert ended.value.code == "needs_login"
    assert ended.value.hint == f"ncp-broker login {NAME}"
    refused = env.run("ncp-token", NAME)
    assert refused.returncode == 5
    assert f"ncp-broker login {NAME}" in refused.stderr
    status = broker.status()
    assert status["state"] == "needs_login", status
    assert status["last_error_class"] == "grant_ended"
    assert status["hint"] == f"ncp-broker login {NAME}"
    before = oidc.stats()
    assert before["replay_detected"] == 0

    browser = dict(broker.browser_env())
    results: list[str | BaseException] = []

    def library_login() -> None:
        try:
            results.append(ncp_client.login(NAME, open_browser=False, socket_path=env.socket, timeout=90))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            results.append(exc)

    waiter = threading.Thread(target=library_login, daemon=True)
    waiter.start()
    broker.wait_for_status("the library's login", lambda s: s["state"] == "login_pending", NO_HANG * 2)
    master, slave = pty.openpty()
    procs = [
        env.spawn(*command, extra_env=browser, stdin=stdin)
        for command, stdin in (
            (["ncp-broker", "login", NAME], subprocess.DEVNULL),
            (["ncp-broker", "login", NAME], subprocess.DEVNULL),
            (["ncp-token", NAME], slave),
        )
    ]
    os.close(slave)
    try:
        outputs = [p.communicate(timeout=LOGIN_TIMEOUT) for p in procs]
    finally:
        os.close(master)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    waiter.join(LOGIN_TIMEOUT)
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outputs]
    assert len(results) == 1
    assert isinstance(results[0], str), results[0]
    new = ncp_client.get_token(NAME, socket_path=env.socket)
    for token in (outputs[2][0].strip(), results[0], new):
        issued_at = jwt_claims(token)["iat"]
        assert issued_at >= int(revoked_at), "a token of the revoked grant"
    after = oidc.stats()
    assert after["token_requests"]["authorization_code"] - before["token_requests"]["authorization_code"] == 1
    assert after["replay_detected"] == 0
    assert tool_names(mcp.url, new)
